"""The one video-time format: what summaries show and cite is what the citation check parses."""
from __future__ import annotations


def format_video_time(seconds: float) -> str:
    """mm:ss for a video time in seconds; minutes keep counting past 59 (1 h 2 min 3 s is 62:03)."""
    total = max(0, int(seconds))
    return f"{total // 60:02d}:{total % 60:02d}"
