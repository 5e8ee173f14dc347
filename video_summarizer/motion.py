"""Motion detection on every read frame: which parts of the picture move, cheaply.

``MotionDetector.update(image, t)`` shrinks the frame to a small grey copy (``WIDTH`` pixels
wide) and compares it with a background model: a running mean and a running variance per
pixel, so a pixel counts as moving only where it differs from the background by ``_K`` times
what that pixel usually does. Sensor noise and codec shimmer set the variance (edges that
shimmer get a larger one), so neither reads as motion.

Why not OpenCV's MOG2 or KNN subtractor: their model cannot be moved with the camera (the API
gives no way to warp it), so a slowly panning camera makes every edge "move". Here the model is
two float images: when something differs, the camera's shift between the model and this frame
is measured (``cv2.phaseCorrelate`` on half-size copies; kept only where it explains the frame
clearly better than no shift, so a subject's own movement is not taken for the camera's) and
the model is shifted with it; the strip that comes into view is learnt afresh, not reported.
Measured against the model, a pan too slow to see between two frames adds up until followed.
A global light change is divided out first (the gain between the frame's mean and the
model's), and a change over most of the frame (a cut, a camera swung round, a light switched)
starts the model over instead of reporting motion: that is a change of scene, which the
selector's change measure sees.

A moving region is a blob of foreground pixels (after a 3x3 opening, which removes the odd
pixel noise gets past the threshold) of at least ``min_area`` of the frame. Hysteresis: motion
starts when such a blob is seen in two read frames in a row of a scene that was still, and ends
after ``still_s`` seconds (at least two read frames) without one, or with the scene. Motion
already there when a scene begins (a performer on stage, the first 0.25 s after a cut) is no
start: it is under way, and only a still spell makes the next motion a start.

Measured (tests/test_motion.py, bench/bench_motion.py): a figure of 1-1.5 % of the frame walking
into a still noisy room or onto a bright snowfield under a camera panning 0.5-8 px a frame
starts motion before it is all in view (2-4 read frames after its first pixels); sensor noise (sigma 10), codec
shimmer (mp4v, 160x120 and 640x360), flicker (+-35 %, 3 Hz) and pans of 0.5-3 px a frame alone
start none. ``min_area`` 0.002 (a tenth of a 2 % figure) keeps the figure's first frames; the
real clips change by less than a frame between 0.002 and 0.004. ``_K`` 4.5: at 4 a pan of 0.8
px a frame was on the threshold. Cost at 640x360: 0.27 ms a read frame (bench row 13).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from video_summarizer import defaults as D
from video_summarizer.results import MotionReading

if TYPE_CHECKING:
    import numpy as np

WIDTH = 160  # the small grey copy's width: a figure of 1 % of a 640x360 frame is ~140 of its pixels
_K = 4.5  # a pixel moves when it is this many of its own standard deviations off the background
_NOISE_FLOOR = 3.0  # grey levels: the smallest standard deviation a pixel is given
_NOISE_CAP = 20.0  # grey levels: the largest standard deviation a pixel is given
_NOISE_START = 6.0  # grey levels: a new model's standard deviation, until it has learnt the real one
_ALPHA = 0.05  # how fast the background follows a still pixel (per read frame: ~20 frames)
_ALPHA_MOVING = 0.005  # a moving pixel: a subject that stops becomes background after ~200 frames
_SCENE_CHANGE = 0.4  # more of the frame than this changed at once: a new scene, not a subject
_SHIFT_MIN = 0.3  # pixels of the small copy: smaller global shifts are left to the variance
_SHIFT_GAIN = 0.8  # a global shift must leave at most this much of the unshifted difference
_WARM_UP_S = 0.25  # motion seen this soon after the first frame was already going on: not a start
_START_FRAMES = 2  # read frames in a row with a moving blob before motion starts


class MotionDetector:
    """Finds moving regions in each read frame; hysteresis turns them into start and end."""

    def __init__(self, min_area: float = D.MOTION_MIN_AREA, still_s: float = D.MOTION_STILL_S) -> None:
        if not 0 < min_area < 1:
            raise ValueError(f"min_area must be between 0 and 1 (a share of the frame), got {min_area}")
        if not still_s >= 0:
            raise ValueError(f"still_s must be >= 0 seconds, got {still_s}")
        self.min_area = float(min_area)
        self.still_s = float(still_s)
        self.moving = False
        self.scene_changes = 0  # frames where most of the picture changed (the model was reset)
        self._mean: np.ndarray | None = None
        self._var: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self._seen = 0  # read frames in a row with a moving blob
        self._still = 0  # read frames in a row without one
        self._last_motion_t = -math.inf
        self._last_t: float | None = None
        self._model_t = 0.0  # when the model was (re)started
        self._under_way = False  # motion seen since then, but no start: it was there when the scene began
        self._camera_still = False  # the last look for a camera shift found none

    def reset(self) -> None:
        """Forget the background (a new clip, time going backwards)."""
        self._mean = self._var = None
        self.moving, self._under_way, self._seen, self._still = False, False, 0, 0
        self._last_motion_t, self._last_t = -math.inf, None

    def update(self, image: np.ndarray, t: float) -> MotionReading:
        """The motion in this frame (BGR or grey) at video time t, against what came before."""
        if self._last_t is not None and t < self._last_t:
            self.reset()
        self._last_t = t
        small = small_grey(image)
        if self._mean is None or self._mean.shape != small.shape:
            self._learn_first(small, t)
            return MotionReading(False, False, False, 0.0, None, t)
        diff = self._difference(small)
        # The camera's shift is looked for only where something differs (a still camera on a
        # still scene, the common case, costs no phase correlation), and after a look that found
        # the camera still, every other frame: a pan that begins is followed a frame later.
        look, self._camera_still = diff[2] >= self.min_area and not self._camera_still, False
        if look:
            if self._follow_camera(small):
                diff = self._difference(small)
            else:
                self._camera_still = True  # the next frame need not look again
        moving = self.moving
        area, box = self._moving_blobs(small, diff, t)
        if self._model_t == t:  # a new scene: what moved in the old one has ended with it
            return MotionReading(False, False, moving, 0.0, None, t)
        return self._hysteresis(t, area, None if box is None else _scaled(box, image.shape[1] / small.shape[1],
                                                                          image.shape))

    # -- the model ------------------------------------------------------------------------

    def _learn_first(self, small: np.ndarray, t: float) -> None:
        import cv2

        self._start_model(small, t)
        self._window = cv2.createHanningWindow((small.shape[1] // 2, small.shape[0] // 2), cv2.CV_32F)

    def _start_model(self, small: np.ndarray, t: float) -> None:
        """A model of this frame alone; what moves from here on was there when the scene began."""
        import numpy as np

        self._mean = small.copy()
        self._var = np.full_like(small, _NOISE_START ** 2)  # kept within _NOISE_FLOOR..._NOISE_CAP squared
        self._model_t = t
        self.moving, self._under_way, self._seen = False, False, 0

    def _follow_camera(self, small: np.ndarray) -> bool:
        """Shift the model with the camera (True if it moved): the global shift between the model
        and this frame.

        Measured against the model, not the last frame, so a pan too slow to see between two
        frames (a fraction of a pixel) adds up until it is seen and followed."""
        import cv2
        import numpy as np

        half = (small.shape[1] // 2, small.shape[0] // 2)
        a = cv2.resize(self._mean, half, interpolation=cv2.INTER_AREA)
        b = cv2.resize(small, half, interpolation=cv2.INTER_AREA)
        # phaseCorrelate applies the window to a and b in place: the check below sees them so too.
        (dx, dy), _response = cv2.phaseCorrelate(a, b, self._window)
        if math.hypot(dx, dy) * 2 < _SHIFT_MIN or max(abs(dx), abs(dy)) * 2 > small.shape[1] / 8:
            return False
        # The peak may be a subject's own movement, not the camera's: a shift counts only where
        # it explains the frame clearly better than no shift (a subject is too small for that).
        moved = cv2.warpAffine(a, np.float32([[1, 0, dx], [0, 1, dy]]), half, borderMode=cv2.BORDER_REPLICATE)
        m = max(1, math.ceil(max(abs(dx), abs(dy))))
        inner = (slice(m, -m), slice(m, -m))
        if cv2.norm(b[inner], moved[inner], cv2.NORM_L1) > _SHIFT_GAIN * cv2.norm(b[inner], a[inner], cv2.NORM_L1):
            return False
        dx, dy = 2 * dx, 2 * dy
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        size = (small.shape[1], small.shape[0])
        self._mean = cv2.warpAffine(self._mean, shift, size, borderMode=cv2.BORDER_REPLICATE)
        self._var = cv2.warpAffine(self._var, shift, size, borderMode=cv2.BORDER_REPLICATE)
        # What comes into view is learnt afresh from this frame, never reported as motion.
        x, y = math.ceil(abs(dx)) + 1, math.ceil(abs(dy)) + 1
        for strip in ((slice(None), slice(0, x) if dx > 0 else slice(-x, None)),
                      (slice(0, y) if dy > 0 else slice(-y, None), slice(None))):
            self._mean[strip] = small[strip]
            self._var[strip] = _NOISE_START ** 2
        return True

    def _difference(self, small: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(foreground mask, squared difference, its share of the frame, the light's gain) against the model."""
        import cv2

        gain = min(2.0, max(0.5, (cv2.mean(small)[0] + 1) / (cv2.mean(self._mean)[0] + 1)))  # light, not motion
        diff = cv2.addWeighted(small, 1.0, self._mean, -gain, 0.0)
        sq = cv2.multiply(diff, diff)
        fg = cv2.compare(sq, self._var * (_K * _K), cv2.CMP_GT)  # 255 where a pixel moves
        return fg, sq, cv2.countNonZero(fg) / fg.size, gain

    def _moving_blobs(self, small: np.ndarray, difference: tuple, t: float) -> tuple[float, tuple | None]:
        """(the moving blobs' share of the frame, their bounding box in the small copy); learns."""
        import cv2
        import numpy as np

        mean, var = self._mean, self._var
        fg, sq, changed, gain = difference
        if changed > _SCENE_CHANGE:  # a new scene: start the model over from this frame
            self.scene_changes += 1
            self._start_model(small, t)
            return 0.0, None
        still = cv2.bitwise_not(fg)
        level = small * np.float32(1.0 / gain)
        cv2.accumulateWeighted(level, mean, _ALPHA, mask=still)
        cv2.accumulateWeighted(level, mean, _ALPHA_MOVING, mask=fg)  # a subject that stays is learnt, slowly
        # The variance learns from still pixels only (a subject passing must not blind them),
        # and never beyond _NOISE_CAP: a pixel that shimmered once still sees a subject later.
        cv2.accumulateWeighted(sq, var, _ALPHA, mask=still)
        np.clip(var, _NOISE_FLOOR ** 2, _NOISE_CAP ** 2, out=var)
        if changed < self.min_area:
            return 0.0, None  # too few pixels for any blob: no need to look
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        if cv2.countNonZero(fg) < self.min_area * fg.size:
            return 0.0, None
        return _blobs(fg, self.min_area)

    def _hysteresis(self, t: float, area: float, box: tuple[int, int, int, int] | None) -> MotionReading:
        started = ended = False
        if box is not None:
            self._seen, self._still = self._seen + 1, 0
            self._last_motion_t = t
            if not (self.moving or self._under_way) and self._seen >= _START_FRAMES:
                # Motion found this soon after the scene began was in its first frame: no start
                # (a performer already moving); it is under way until the scene is still again.
                self._under_way = t - self._model_t < _WARM_UP_S
                self.moving = started = not self._under_way
        else:
            self._seen, self._still = 0, self._still + 1
            if (self.moving or self._under_way) and self._still >= 2 and t - self._last_motion_t >= self.still_s:
                ended, self.moving, self._under_way = self.moving, False, False
        return MotionReading(self.moving, started, ended, area, box, t)


def _blobs(fg: np.ndarray, min_area: float) -> tuple[float, tuple[int, int, int, int] | None]:
    """(share of the frame, bounding box) of the blobs of at least min_area of the mask.

    Labelled on a half-size copy (each cell the mean of 2x2 pixels): a quarter of the cost of
    labelling every pixel, which was the detector's largest part on busy footage."""
    import cv2
    import numpy as np

    cells = cv2.resize(fg, (fg.shape[1] // 2, fg.shape[0] // 2), interpolation=cv2.INTER_AREA)
    # 16-bit labels (a half-size copy has far fewer than 65536 blobs): half the time of 32-bit ones.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8, ltype=cv2.CV_16U)
    # A blob's cells bound its pixels (4 each): blobs too small even so are not counted (most are).
    if not (stats[1:, cv2.CC_STAT_AREA] * 4 >= min_area * fg.size).any():
        return 0.0, None
    pixels = np.bincount(labels.ravel(), weights=cells.ravel(), minlength=count) * (4 / 255)
    keep = np.flatnonzero(pixels[1:] >= min_area * fg.size) + 1
    if not len(keep):
        return 0.0, None
    big = stats[keep]
    x0, y0 = big[:, 0].min(), big[:, 1].min()
    x1, y1 = (big[:, 0] + big[:, 2]).max(), (big[:, 1] + big[:, 3]).max()
    return float(pixels[keep].sum()) / fg.size, (2 * int(x0), 2 * int(y0), 2 * int(x1 - x0), 2 * int(y1 - y0))


def small_grey(image: np.ndarray) -> np.ndarray:
    """The frame as a float32 grey copy WIDTH pixels wide (cheap linear steps where it is large)."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    # INTER_LINEAR shrinking by 4 (or 2) averages the 2x2 pixels at the middle of each 4x4 (2x2)
    # block, which halves the noise. Measured on freshly decoded 640x360 frames (CPU time, with the
    # grey step): 0.10 ms; INTER_AREA 0.37, two pyrDown 0.37, grey first 0.13. INTER_NEAREST (0.06)
    # keeps the full noise: it took an extra frame of clip_01_tears_of_steel.mp4 as a motion start.
    for factor in (4, 2):
        while width >= factor * WIDTH:
            width, height = width // factor, height // factor
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    size = (WIDTH, max(1, round(height * WIDTH / width)))
    if size != (width, height):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image.astype(np.float32)


def _scaled(box: tuple[int, int, int, int], scale: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A box of the small copy in the frame's pixels, kept inside the frame."""
    x, y, w, h = (round(v * scale) for v in box)
    x, y = min(x, shape[1] - 1), min(y, shape[0] - 1)
    return x, y, max(1, min(w, shape[1] - x)), max(1, min(h, shape[0] - y))
