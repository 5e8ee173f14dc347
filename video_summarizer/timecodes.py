"""The one video-time format: what summaries show and cite is what the citation check parses.

Whole seconds (``mm:ss``) where they tell the captions apart; where two captions fall in one
second (``--interval 0.5``) the stamps carry as many decimals of the second as it takes
(``00:05.5``), cut like the seconds are (never rounded up into the next stamp).
"""
from __future__ import annotations

import re
from typing import Iterable

MAX_DECIMALS = 3  # milliseconds: the finest a container's timestamps go
_EPS = 1e-6  # 0.3 * 10 is 2.9999999999999996: a time a hair below a boundary belongs to it
_STAMP = re.compile(r"(\d+):(\d{2})(?:\.(\d{1,3}))?")


def _units(seconds: float, decimals: int) -> int:
    return int(max(0.0, seconds) * 10 ** decimals + _EPS)


def format_video_time(seconds: float, decimals: int = 0) -> str:
    """mm:ss (or mm:ss.f with `decimals` digits) for a video time in seconds; minutes keep
    counting past 59 (1 h 2 min 3 s is 62:03)."""
    units = _units(seconds, decimals)
    whole, part = divmod(units, 10 ** decimals)
    text = f"{whole // 60:02d}:{whole % 60:02d}"
    return f"{text}.{part:0{decimals}d}" if decimals else text


def stamp_decimals(times: Iterable[float]) -> int:
    """The fewest decimals (0 to 3) at which these times get stamps of their own."""
    times = sorted(set(times))
    for decimals in range(MAX_DECIMALS):
        stamps = [_units(t, decimals) for t in times]
        if len(set(stamps)) == len(stamps):
            return decimals
    return MAX_DECIMALS


def parse_video_time(stamp: str) -> float:
    """Seconds of an mm:ss (or mm:ss.f) video time as format_video_time writes it.

    Raises ValueError for anything else: seconds past 59, h:mm:ss, a sign or a comma.
    """
    match = _STAMP.fullmatch(stamp.strip())
    if not match or not stamp.strip().isascii() or int(match.group(2)) >= 60:
        raise ValueError(f"not an mm:ss video time: {stamp!r}")
    minutes, secs, part = match.groups()
    return int(minutes) * 60 + int(secs) + (int(part) / 10 ** len(part) if part else 0)


def stamp_span_ms(stamp: str) -> tuple[int, int]:
    """The first and last millisecond a stamp stands for: 00:05 is 5000-5999, 00:05.5 is 5500-5599."""
    parse_video_time(stamp)  # refuses anything else
    minutes, secs, part = _STAMP.fullmatch(stamp.strip()).groups()
    step = 10 ** (MAX_DECIMALS - len(part or ""))
    start = (int(minutes) * 60 + int(secs)) * 1000 + int(part or 0) * step
    return start, start + step - 1


def time_ms(seconds: float) -> int:
    """A video time in whole milliseconds, cut like the stamps are."""
    return _units(seconds, MAX_DECIMALS)


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
