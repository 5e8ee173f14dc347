"""Frame selection: motion starts a caption at once; otherwise one frame per interval, skipping
frames that barely changed.

Motion (motion.py, on every read frame): a motion start is taken at once, due or not (a live
source takes the next read frame when no caption slot is free); while the motion lasts the due
frames run from its start, and a due frame is taken when the moving region has moved on (its
centre by more than half its size since the last frame taken) and the picture changed by half
of min_change; a subject moving in place, or a still scene, falls to the change measure and the
max gap below. When the motion ends the fixed grid comes back. Measured at ``interval=0.5``
against one frame every interval (bench row 13): Hamilton 10 of 19 calls, Tears of Steel 10 of
20, every cut and face appearance kept; the generated figure is taken at every due frame of its
walk. With motion on, every read frame is decoded (the detector needs its pixels).

The interval check reads only ``frame.timestamp``, so with motion off frames skipped on time
are never decoded. Change gating compares a 64-pixel-wide grey thumbnail of the candidate with the
thumbnail of the last *processed* frame, so slow drift adds up until it counts.

How the defaults were chosen (measured with this module at ``interval=0.5``, where gating off
captions 19 frames of short_hamilton_clip.mp4 and 20 of clip_01_tears_of_steel.mp4, and on the
generated clips of tests/clips.py; tests/test_frame_selection.py pins the outcome):

* Brightness first: the reference thumbnail is matched to the candidate's brightness (gain
  0.5-2, offset within +-40 grey levels, both medians over the pixels) before anything is
  compared, so a light that flickers (+-20 % in the generated flicker clip) is no change:
  it scores at most 0.05, where the histogram distance alone gave it 0.15-0.64.
* The change is the largest of three global terms and one local term (0 same .. 1):
  - histogram / layout: total-variation distance of 16-bin grey histograms, and the mean
    absolute difference of 8x8 block means. A cut changes palette and layout.
  - decorrelation: (1 - correlation of the 8x8 block means) / 2, scaled so 0.33 scores
    0.12. Blind to brightness by construction, it keeps Hamilton's cut at frame 211 (0.14),
    which after brightness matching the histogram and layout terms see at 0.095 only.
  - local: the most-changed window of 1/64 of the frame (mean absolute change over the
    window), divided by the frame's typical window change (the median, at least 1 grey
    level), scaled so a window 30 times above the typical change scores 0.12. In a still
    scene the typical change is the sensor noise and codec shimmer (about 1 level), so a
    figure of 2-3 % of the frame walking across it scores 0.19-0.41 (0.11-0.15 with heavy
    noise, sigma 10 at 160x120); noise and mp4v shimmer alone stay under 0.02 in all terms.
    Where much of the picture moves (a camera that pans, a crowd, a performer filling the
    shot) the typical change is high and only a change far above it counts; the max gap
    keeps captions coming there.
    Hamilton's performer scores 0.04-0.10 between due frames 0.5 s apart (once 0.14):
    his gestures are local changes as large as the figure's, told apart only by how much
    the rest of his shot moves. A plain local measure (largest block change, or the share
    of pixels changed beyond the noise) saw them as large as the figure and took 15-19 of
    Hamilton's 19 frames.
* ``DEFAULT_MIN_CHANGE = 0.12``: Hamilton 10 of 19 calls (47 % fewer), Tears of Steel 10 of
  20, every hard cut of both and every face appearance that gating off captions on Hamilton
  kept; the figure taken at every due frame in view (6 of its 7 with heavy noise); a still
  noisy scene takes only the max-gap frames. The margin is narrow, and said here so nobody
  is surprised: only 0.12-0.14 keep everything on Hamilton. At 0.06-0.10 the performer's
  gestures take extra frames (up to 16 of 19), which moves the max-gap frames off frame
  210, the only frame gating off captions in the face appearance of frames 197-210; from
  0.16 the cut at frame 211 (0.14) is missed and so is the noisy figure.
* ``max_gap`` (default ``max(1 s, 2 x interval)``) bounds how long a scene goes without a
  caption: 2 x interval means at most one due frame in a row is skipped, so at the default
  5 s interval nothing waits longer than 10 s (4 x interval, 20 s, let a person crossing an
  18 s clip go uncaptioned). The 1 s floor matters only below 0.5 s: there 2 x interval
  would force several frames a second and leave gating almost nothing to skip (at 0.1 s
  it could skip at most half); one caption a second of an unchanging scene is enough.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from video_summarizer import defaults as D
from video_summarizer.motion import MotionDetector
from video_summarizer.results import MotionReading

if TYPE_CHECKING:
    import numpy as np

DEFAULT_INTERVAL_S = D.INTERVAL_S
DEFAULT_MIN_CHANGE = D.MIN_CHANGE
DEFAULT_MAX_GAP_S = D.MAX_GAP_FLOOR_S  # the floor: matters below interval 0.5 s
DEFAULT_MAX_GAP_INTERVALS = D.MAX_GAP_INTERVALS
DEFAULT_MOTION_MIN_AREA = D.MOTION_MIN_AREA
THUMB_WIDTH = 64
_HIST_BINS = 16
_LAYOUT_GRID = 8  # blocks of the layout terms; the local window is 1/8 x 1/8 of the frame
_GAIN_RANGE = (0.5, 2.0)  # brightness matching: what a flickering light or auto-exposure does
_OFFSET_MAX = 40.0  # grey levels; beyond that it is not the same picture (black to white is a cut)
_DECOR_SCALE = 0.12 / 0.33  # decorrelation 0.33 scores 0.12
_NOISE_FLOOR = 1.0  # grey levels: the typical window change of a clean still picture
_SALIENCE_SCALE = 0.12 / 30  # a window 30 x above the typical change scores 0.12
_MOVED_ON = 0.5  # moved_on(): a region whose centre moved by more than this of its size is somewhere new
_MOTION_CHANGE_SHARE = 0.5  # while a subject moves on, half of min_change is change enough
_EPS = 1e-6  # seconds: container timestamps are rounded (29.97 fps, millisecond webm)


class _FrameLike(Protocol):
    timestamp: float

    @property
    def image(self) -> np.ndarray: ...


def default_max_gap(interval: float) -> float:
    """The max gap used when none is given: max(1 s, 2 x interval)."""
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
    """How different two thumbnails are, 0 (same) to 1: the largest of change_parts()."""
    return max(change_parts(a, b).values())


def change_parts(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The terms of change_between(a, b): histogram, layout, decorrelation, local (0..1 each)."""
    import cv2
    import numpy as np

    if np.array_equal(a, b):  # exactly 0, not the rounding left in a correlation of 1
        return {"histogram": 0.0, "layout": 0.0, "decorrelation": 0.0, "local": 0.0}
    ref, cand = a.astype(np.float32), b.astype(np.float32)
    # Match the reference's brightness to the candidate's: flicker and auto-exposure are no change.
    gain = float(np.clip(np.median((cand + 1) / (ref + 1)), *_GAIN_RANGE))
    offset = float(np.clip(np.median(cand - gain * ref), -_OFFSET_MAX, _OFFSET_MAX))
    ref = np.clip(gain * ref + offset, 0, 255)

    hist_a = np.bincount(ref.astype(np.uint8).ravel() >> 4, minlength=_HIST_BINS) / ref.size
    hist_b = np.bincount(b.ravel() >> 4, minlength=_HIST_BINS) / b.size
    grid = (_LAYOUT_GRID, _LAYOUT_GRID)
    blocks_a = cv2.resize(ref, grid, interpolation=cv2.INTER_AREA).ravel()
    blocks_b = cv2.resize(cand, grid, interpolation=cv2.INTER_AREA).ravel()
    decorrelation = 0.0
    if min(blocks_a.std(), blocks_b.std()) > 1.0:  # a flat picture has no layout to correlate
        decorrelation = (1.0 - float(np.corrcoef(blocks_a, blocks_b)[0, 1])) / 2 * _DECOR_SCALE

    height, width = ref.shape
    window = (max(1, width // _LAYOUT_GRID), max(1, height // _LAYOUT_GRID))
    # Mean absolute change around every pixel: the worst window wherever the subject stands.
    windows = cv2.blur(np.abs(cand - ref), window, borderType=cv2.BORDER_REFLECT)
    typical = max(_NOISE_FLOOR, float(np.median(windows)))
    return {
        "histogram": 0.5 * float(np.abs(hist_a - hist_b).sum()),
        "layout": float(np.abs(blocks_a - blocks_b).mean()) / 255.0,
        "decorrelation": min(1.0, decorrelation),
        "local": min(1.0, float(windows.max()) / typical * _SALIENCE_SCALE),
    }


def next_due(t: float, interval: float, origin: float = 0.0) -> float:
    """The first point after t of the interval grid through origin (t itself for interval 0)."""
    return origin + (math.floor((t - origin) / interval + 1e-9) + 1) * interval if interval else t


def moved_on(box: tuple[int, int, int, int] | None, before: tuple[int, int, int, int] | None) -> bool:
    """Whether a moving region is somewhere new: its centre moved by more than half the region's size
    (either way) since the last caption's, or there was none. A subject moving in place is not news."""
    if box is None or before is None:
        return box is not None
    dx = abs(box[0] + box[2] / 2 - before[0] - before[2] / 2)
    dy = abs(box[1] + box[3] / 2 - before[1] - before[3] / 2)
    return dx > _MOVED_ON * max(box[2], before[2]) or dy > _MOVED_ON * max(box[3], before[3])


class FrameSelector:
    """Decides which frames get processed: a motion start at once, else one per interval when a subject
    moved on or the picture changed (or the max gap is up)."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_S,
        min_change: float = DEFAULT_MIN_CHANGE,
        max_gap: float | None = None,
        motion_min_area: float = DEFAULT_MOTION_MIN_AREA,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        if not 0 <= min_change <= 1:
            raise ValueError(f"min_change must be between 0 and 1, got {min_change}")
        if max_gap is not None and not max_gap >= 0:
            raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap}")
        if not 0 <= motion_min_area < 1:
            raise ValueError(f"motion_min_area must be between 0 and 1, got {motion_min_area}")
        self.interval = float(interval)
        self.min_change = float(min_change)
        self.max_gap = default_max_gap(self.interval) if max_gap is None else float(max_gap)
        self.selected = 0
        self.skipped_interval = 0
        self.skipped_unchanged = 0
        self.last_change: float | None = None  # change of the last frame compared, None if none was
        # why the last frame was taken or skipped: first / motion_start / motion / changed / max_gap /
        # gating_off / interval / unchanged
        self.last_reason = ""
        self._next_due: float | None = None
        self._last_time: float | None = None
        self._ref_thumb: np.ndarray | None = None
        self._ref_time = 0.0
        # Motion: every read frame goes through the detector (gating off takes one frame an
        # interval and nothing else, so it reads no pixels at all).
        self.detector = MotionDetector(motion_min_area) if motion_min_area > 0 and self.gating else None
        self.motion: MotionReading | None = None  # the reading of the last frame looked at
        self.motion_starts = 0
        self._start_pending = False  # a motion start not taken yet (live: no slot was free)
        self._ref_box: tuple[int, int, int, int] | None = None  # the moving region at the last frame taken
        self._looked_at: object | None = None
        self._thumb: tuple[object, np.ndarray] | None = None  # (frame, its thumbnail): made once a frame
        self._grid_origin = 0.0  # a motion start's time: the grid of the due frames while the motion lasts

    @property
    def gating(self) -> bool:
        """Whether change gating is on (min_change > 0)."""
        return self.min_change > 0

    def due(self, t: float) -> bool:
        """Whether a frame at time t would pass the interval check; changes nothing."""
        if self._next_due is None or (self._last_time is not None and t < self._last_time):
            return True
        return t >= self._next_due - _EPS

    def wants(self, frame: _FrameLike) -> bool:
        """Whether select() may take this frame (a motion start, or due); looks at its motion."""
        self.look(frame)
        return self._start_pending or self.due(frame.timestamp)

    def look(self, frame: _FrameLike) -> MotionReading | None:
        """Run the motion detector on this read frame (once per frame); None when motion is off."""
        if self.detector is None:
            return None
        if frame is not self._looked_at:
            self._looked_at, self._thumb = frame, None
            self.motion = self.detector.update(frame.image, frame.timestamp)
            if self.motion.started:
                self._start_pending = True
            elif not self.motion.moving:
                self._start_pending = False  # it ended before a slot came free: nothing to start
        return self.motion

    def select(self, frame: _FrameLike) -> bool:
        """True if this frame should be processed; decodes the frame only when it is a candidate."""
        t = frame.timestamp
        if self._last_time is not None and t < self._last_time:
            self._next_due, self._grid_origin = None, 0.0  # time went backwards: start over
        self._last_time = t
        self.look(frame)
        if self._start_pending:  # at once, due or not: within a read frame of the subject entering
            return self._take_motion_start(frame, t)
        if self._next_due is not None and t < self._next_due - _EPS:
            return self._skip("interval")
        # Due times sit on a fixed grid, so rounding in timestamps never drifts the cadence.
        moving = self.motion is not None and self.motion.moving
        self._next_due = next_due(t, self.interval, self._grid_origin if moving else 0.0)
        if not self.gating:
            self.last_change = None
            return self._take("gating_off", None, t)
        if self._ref_thumb is None:
            self.last_change = None
            return self._take("first", self._thumbnail(frame), t)
        change = self._change(frame)
        if self._motion_goes_on() and change >= self.min_change * _MOTION_CHANGE_SHARE:
            return self._take("motion", self._thumbnail(frame), t)
        if change >= self.min_change:
            return self._take("changed", self._thumbnail(frame), t)
        if t - self._ref_time >= self.max_gap - _EPS:
            return self._take("max_gap", self._thumbnail(frame), t)
        return self._skip("unchanged")

    def _motion_goes_on(self) -> bool:
        """Motion going on, somewhere new since the last frame taken (a subject moving in place is
        not news)."""
        m = self.motion
        return m is not None and m.moving and moved_on(m.box, self._ref_box)

    def _thumbnail(self, frame: _FrameLike) -> np.ndarray:
        if self._thumb is None or self._thumb[0] is not frame:
            self._thumb = (frame, thumbnail(frame.image))
        return self._thumb[1]

    def _change(self, frame: _FrameLike) -> float:
        """The change since the last frame taken (stored in last_change); 1 when none was taken."""
        ref = self._ref_thumb
        self.last_change = None if ref is None else change_between(self._thumbnail(frame), ref)
        return 1.0 if self.last_change is None else self.last_change

    def _take_motion_start(self, frame: _FrameLike, t: float) -> bool:
        self._start_pending = False
        self.motion_starts += 1
        self._change(frame)  # last_change, as for any frame taken
        # The motion that goes on is captioned an interval from here: the grid starts again at t.
        self._grid_origin = t
        self._next_due = next_due(t, self.interval, t)
        return self._take("motion_start", self._thumbnail(frame), t)

    def _take(self, reason: str, thumb: np.ndarray | None, t: float) -> bool:
        self.selected += 1
        self.last_reason = reason
        self._ref_thumb = thumb
        self._ref_time = t
        self._ref_box = self.motion.box if self.motion is not None and self.motion.moving else None
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
