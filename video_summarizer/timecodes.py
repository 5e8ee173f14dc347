"""The one video-time format: what summaries show and cite is what the citation check parses."""
from __future__ import annotations


def format_video_time(seconds: float) -> str:
    """mm:ss for a video time in seconds; minutes keep counting past 59 (1 h 2 min 3 s is 62:03)."""
    total = max(0, int(seconds))
    return f"{total // 60:02d}:{total % 60:02d}"


def parse_video_time(stamp: str) -> int:
    """Seconds of an mm:ss video time as format_video_time writes it (minutes may pass 59).

    Raises ValueError for anything else: seconds past 59, h:mm:ss, a sign or a fraction.
    """
    minutes, sep, seconds = stamp.strip().partition(":")
    if not (sep and minutes.isdigit() and minutes.isascii() and len(seconds) == 2
            and seconds.isdigit() and seconds.isascii() and int(seconds) < 60):
        raise ValueError(f"not an mm:ss video time: {stamp!r}")
    return int(minutes) * 60 + int(seconds)
