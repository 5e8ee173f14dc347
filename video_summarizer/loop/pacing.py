"""How long a caption takes here, learned from the first captions, and what that allows a live source.

A live source captions the newest frame whenever a caption slot is free, so a caption model
slower than --interval captions fewer frames than asked: the run says once what it gets
("captions take ~8 s here: one frame in 8 s is captioned"), and /metrics shows the estimate.
"""
from __future__ import annotations

import logging
import statistics
import threading
from typing import Any

log = logging.getLogger("video_summarizer.pipeline")

FIRST_CAPTIONS = 3  # the estimate is said once these have been timed (the first may include warm-up)
_SMOOTHING = 0.2  # later captions move the estimate this much each (an exponential mean)


class CaptionPace:
    """The seconds a caption takes on this source: the median of the first captions, then a moving mean."""

    def __init__(self, label: str, *, live: bool, interval: float | None, slots: int,
                 first: int = FIRST_CAPTIONS) -> None:
        self.label = label
        self.live = live
        self.interval = interval  # --interval: the frames asked for
        self.slots = max(1, slots)  # captions in flight at once
        self.first = first
        self.estimate: float | None = None  # seconds a caption takes; None until the first are timed
        self._timed: list[float] = []
        self._lock = threading.Lock()

    def observe(self, caption: Any) -> None:
        """A frame's caption outcome (results.CaptionOutcome): a successful one is timed."""
        if not caption.result.success:
            return  # a failure's time (a refused connection, a timeout) says nothing of the model's pace
        seconds = max(0.0, caption.end - caption.start)
        with self._lock:
            if self.estimate is not None:
                self.estimate += _SMOOTHING * (seconds - self.estimate)
                return
            self._timed.append(seconds)
            if len(self._timed) < self.first:
                return
            self.estimate = statistics.median(self._timed)
        if self.live:
            log.info("%s: %s", self.label, self.sentence())

    def sentence(self) -> str:
        """What the estimate allows, in words: 'captions take ~8 s here: one frame in 8 s is captioned'."""
        seconds = self.estimate or 0.0
        period = seconds / self.slots  # a new caption starts this often when every slot stays busy
        head = f"captions take ~{_seconds(seconds)} here" + (f" ({self.slots} at a time)" if self.slots > 1 else "")
        if self.interval is not None and period <= self.interval:
            return f"{head}: one frame every {_seconds(self.interval)} (--interval) is captioned"
        asked = f" (--interval asks for one in {_seconds(self.interval)})" if self.interval else ""
        return f"{head}: one frame in {_seconds(period)} is captioned{asked}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 5 else f"{value:.1f} s"
