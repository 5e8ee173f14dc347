"""An outage said in a few log lines: when it starts, every interval while it lasts, when it ends.

A camera runs for weeks, so a failing dependency (the VLM, the summary model, Langfuse) must
neither print a line per frame or batch nor go unsaid until exit. Callers report every
outcome; an ``OutageMonitor`` logs

- one WARNING at the first failure (``failing``),
- one WARNING at the first failure past ``report_every_s`` since the last line (``still``),
- one INFO at the first success after a failure that was said (``back``).

A flapping dependency prints at most one failing line per interval, and one "back" line per
failing line. The templates are ``str.format`` strings with ``{reason}`` (the last failure's),
``{every}`` (the interval), ``{since}`` (how long it has failed), ``{failures}`` (failures in
this outage) and ``{progress}`` (the ``progress()`` callable's text, or "").
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from video_summarizer import defaults as D

DEFAULT_REPORT_EVERY_S = D.OUTAGE_REPORT_EVERY_S
MAX_REASON_CHARS = 160


def duration(seconds: float) -> str:
    """"45 s", "12 min 10 s", "3 h 5 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Whitespace collapsed, cut to ``limit`` characters with "..."."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class OutageMonitor:
    """``failed(reason)`` / ``succeeded()`` in, a bounded number of log lines out."""

    def __init__(self, logger: logging.Logger, *, failing: str, still: str, back: str,
                 progress: Callable[[], str] | None = None,
                 report_every_s: float = DEFAULT_REPORT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not report_every_s > 0:
            raise ValueError(f"report_every_s must be positive, got {report_every_s}")
        self.log = logger
        self.templates = {"failing": failing, "still": still, "back": back}
        self.report_every_s = float(report_every_s)
        self._progress = progress
        self._clock = clock
        self._lock = threading.Lock()
        self.failing_since: float | None = None  # the clock's time of this outage's first failure
        self.last_reason: str | None = None
        self.failures = 0  # all failures reported
        self.outages = 0
        self.lines = 0
        self._outage_failures = 0
        self._reported = False  # a failing line was logged during this outage
        self._next_line_at = -float("inf")

    @property
    def failing(self) -> bool:
        """True from a failure until the next success."""
        return self.failing_since is not None

    def failed(self, reason: str) -> None:
        """One failure (a call, a batch, a try) for ``reason``."""
        reason = one_line(reason)
        now = self._clock()
        with self._lock:
            self.failures += 1
            self._outage_failures += 1
            self.last_reason = reason
            if self.failing_since is None:
                self.failing_since = now
                self.outages += 1
            if now < self._next_line_at:
                return
            self._next_line_at = now + self.report_every_s
            kind = "still" if self._reported else "failing"
            self._reported = True
            fields = self._fields(now, reason)
            self.lines += 1
        if kind == "still" and self._progress is not None:
            fields["progress"] = self._progress()  # outside the lock: it may take others
        self.log.warning(self.templates[kind].format(**fields))

    def succeeded(self) -> None:
        """One success: ends an outage, saying so if it was said."""
        if self.failing_since is None:  # the common case, without the lock
            return
        now = self._clock()
        with self._lock:
            if self.failing_since is None:
                return
            fields = self._fields(now, self.last_reason)
            reported = self._reported
            self.failing_since, self._reported, self._outage_failures = None, False, 0
            if reported:
                self.lines += 1
        if reported:
            self.log.info(self.templates["back"].format(**fields))

    def _fields(self, now: float, reason: str | None) -> dict:
        return {"reason": reason, "every": duration(self.report_every_s),
                "since": duration(now - self.failing_since), "failures": self._outage_failures,
                "progress": ""}
