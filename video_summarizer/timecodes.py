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


# Longer than any recording (11 years): a bound that keeps absurd values (400 digits) out of queries.
MAX_VIDEO_SECONDS = 1e5 * 3600


def parse_time_option(text: str) -> float:
    """Seconds of a video time a user typed: 90, 01:30, 1:02:03 (a fraction on the last field).

    The first field may be any size (90 s, 62:03); every later one must be under 60. Raises
    ValueError for anything else, saying what is wrong: 99:99, nan, a sign, 400 digits.
    """
    if len(text) > 64:
        raise ValueError(f"{len(text)} characters long")
    fields = text.strip().split(":")
    if not 1 <= len(fields) <= 3:
        raise ValueError("not a video time")
    seconds = 0.0
    for n, field in enumerate(fields):
        whole, _, fraction = field.partition(".")
        if not ((whole or fraction) and _digits(whole) and _digits(fraction)):
            raise ValueError("not a video time")
        if fraction and n < len(fields) - 1:
            raise ValueError("only the last field may have a fraction")
        value = float(field)
        if n > 0 and value >= 60:
            raise ValueError(f"{'minutes' if n < len(fields) - 1 else 'seconds'} must be under 60 ({field})")
        seconds = seconds * 60 + value
    if seconds > MAX_VIDEO_SECONDS:
        raise ValueError(f"longer than any video ({seconds:.3g} s)")
    return seconds


def _digits(text: str) -> bool:
    """Whether text is empty or ASCII digits only (str.isdigit also takes '²' and other scripts' digits)."""
    return text == "" or text.isdigit() and text.isascii()
