"""Frame selection: one frame per interval of video time, skipping frames that barely changed.

The interval check reads only ``frame.timestamp``, so frames skipped on time are never
decoded. Change gating compares a 64-pixel-wide grey thumbnail of the candidate with the
thumbnail of the last *processed* frame, so slow drift adds up until it counts.

How the defaults were chosen (measured with this module on the shared clips at
``interval=0.5``, where gating off captions 19 frames of short_hamilton_clip.mp4 and 20 of
clip_01_tears_of_steel.mp4; tests/test_frame_selection.py pins the outcome):

* The change measure is ``max(histogram distance, layout distance)`` of the thumbnails:
  - histogram distance: total-variation distance of 16-bin grey histograms (0..1). A cut
    changes lighting and palette; motion inside a shot mostly moves the same tones.
  - layout distance: mean absolute difference of 8x8 block means (0..1): someone entering
    a scene of similar tones (the face entering ff-region-face-motion.avi scores 0.30).
  Against the last processed frame, the first candidate after each hard cut scores
  0.19-0.32 on Hamilton and 0.17-0.22 on Tears of Steel. A plain pixel difference gave
  Hamilton's cuts 0.11 against up to 0.09 for motion in a shot: no margin.
* ``DEFAULT_MIN_CHANGE = 0.12``: with the default max gap, every threshold from 0.05 to
  0.18 kept every hard cut on both clips and every face appearance that gating off
  captions on Hamilton, while cutting 47-68 % of Hamilton's calls; 0.12 is the middle
  (8 of 19 calls, 58 % fewer; 8 of 20 on Tears of Steel). Above 0.18 cuts get missed,
  below 0.05 almost nothing is skipped.
* ``max_gap`` (default ``max(2 s, 4 x interval)``) bounds how long a scene that changes
  only gradually goes without a caption. Hamilton's long shot (frames 82-211) has motion
  but no cut: at 0.12 nothing in it passes the threshold after frame 150, and a 2 s gap
  captions frame 210, the only frame gating off captions in the face appearance of
  frames 197-210 (1.5 s and 2.5 s both miss it). Scaling with the interval keeps gating
  useful at the default 5 s interval, where a fixed 2 s gap would force every candidate.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

DEFAULT_INTERVAL_S = 5.0
DEFAULT_MIN_CHANGE = 0.12
DEFAULT_MAX_GAP_S = 2.0
DEFAULT_MAX_GAP_INTERVALS = 4
THUMB_WIDTH = 64
_HIST_BINS = 16
_LAYOUT_GRID = 8
_EPS = 1e-6  # seconds: container timestamps are rounded (29.97 fps, millisecond webm)


class _FrameLike(Protocol):
    timestamp: float

    @property
    def image(self) -> np.ndarray: ...


def default_max_gap(interval: float) -> float:
    """The max gap used when none is given: max(2 s, 4 x interval)."""
    return max(DEFAULT_MAX_GAP_S, DEFAULT_MAX_GAP_INTERVALS * interval)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A small grey copy of a BGR (or grey) frame, the input of change_between()."""
    import cv2

    height, width = image.shape[:2]
    thumb_h = max(1, round(height * THUMB_WIDTH / width))
    # Area-average while the image is small in both axes: resize first, then go grey.
    small = cv2.resize(image, (THUMB_WIDTH, thumb_h), interpolation=cv2.INTER_AREA)
    return small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


def change_between(a: np.ndarray, b: np.ndarray) -> float:
    """How different two thumbnails are, 0 (same) to 1: max of histogram and layout distance."""
    import cv2
    import numpy as np

    hist_a = np.bincount(a.ravel() >> 4, minlength=_HIST_BINS) / a.size
    hist_b = np.bincount(b.ravel() >> 4, minlength=_HIST_BINS) / b.size
    histogram = 0.5 * float(np.abs(hist_a - hist_b).sum())
    grid = (_LAYOUT_GRID, _LAYOUT_GRID)
    blocks_a = cv2.resize(a, grid, interpolation=cv2.INTER_AREA).astype(np.float32)
    blocks_b = cv2.resize(b, grid, interpolation=cv2.INTER_AREA).astype(np.float32)
    layout = float(np.abs(blocks_a - blocks_b).mean()) / 255.0
    return max(histogram, layout)


class FrameSelector:
    """Decides which frames get processed: one per interval, and only if the picture changed."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_S,
        min_change: float = DEFAULT_MIN_CHANGE,
        max_gap: float | None = None,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        if not 0 <= min_change <= 1:
            raise ValueError(f"min_change must be between 0 and 1, got {min_change}")
        if max_gap is not None and not max_gap >= 0:
            raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap}")
        self.interval = float(interval)
        self.min_change = float(min_change)
        self.max_gap = default_max_gap(self.interval) if max_gap is None else float(max_gap)
        self.selected = 0
        self.skipped_interval = 0
        self.skipped_unchanged = 0
        self.last_change: float | None = None  # change of the last frame compared, None if none was
        # why the last frame was taken or skipped: first / changed / max_gap / gating_off / interval / unchanged
        self.last_reason = ""
        self._next_due: float | None = None
        self._last_time: float | None = None
        self._ref_thumb: np.ndarray | None = None
        self._ref_time = 0.0

    @property
    def gating(self) -> bool:
        """Whether change gating is on (min_change > 0)."""
        return self.min_change > 0

    def due(self, t: float) -> bool:
        """Whether a frame at time t would pass the interval check; changes nothing."""
        if self._next_due is None or (self._last_time is not None and t < self._last_time):
            return True
        return t >= self._next_due - _EPS

    def select(self, frame: _FrameLike) -> bool:
        """True if this frame should be processed; decodes the frame only when it is a candidate."""
        t = frame.timestamp
        if self._last_time is not None and t < self._last_time:
            self._next_due = None  # time went backwards (a new clip, a restarted stream): start over
        self._last_time = t
        if self._next_due is not None and t < self._next_due - _EPS:
            return self._skip("interval")
        # Due times sit on a fixed grid, so rounding in timestamps never drifts the cadence.
        self._next_due = (math.floor(t / self.interval + 1e-9) + 1) * self.interval if self.interval else t

        if not self.gating:
            self.last_change = None
            return self._take("gating_off", None, t)
        thumb = thumbnail(frame.image)
        if self._ref_thumb is None:
            self.last_change = None
            return self._take("first", thumb, t)
        self.last_change = change_between(thumb, self._ref_thumb)
        if self.last_change >= self.min_change:
            return self._take("changed", thumb, t)
        if t - self._ref_time >= self.max_gap - _EPS:
            return self._take("max_gap", thumb, t)
        return self._skip("unchanged")

    def _take(self, reason: str, thumb: np.ndarray | None, t: float) -> bool:
        self.selected += 1
        self.last_reason = reason
        self._ref_thumb = thumb
        self._ref_time = t
        return True

    def _skip(self, reason: str) -> bool:
        if reason == "interval":
            self.skipped_interval += 1
        else:
            self.skipped_unchanged += 1
        self.last_reason = reason
        return False

    def counts(self) -> dict[str, int]:
        """The counters as a plain dict, for the run statistics."""
        return {
            "selected": self.selected,
            "skipped_interval": self.skipped_interval,
            "skipped_unchanged": self.skipped_unchanged,
        }
