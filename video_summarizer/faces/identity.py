"""Identities carried between close frames, and names smoothed over k of n frames.

A face that is still in the same place and still looks the same a frame later is the same
face: ``IdentityTracker`` lets it keep the encoding it had (``IdentityReuse`` says when), so
the recognizer encodes only the faces that are new. With ``smoothing=(k, n)`` a name is
reported only once it held in k of the last n frames. Times are the frames' own timestamps.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from video_summarizer.errors import SummarizerError
from video_summarizer.faces.match import UNKNOWN, Box, FaceMatch

# Identity reuse compares faces as tiny grey thumbnails (see IdentityReuse).
_THUMB_SIZE = 8


@dataclass(frozen=True)
class IdentityReuse:
    """When a face may keep the encoding it had in the previous recognized frame.

    dlib's encoder (dlib-bin, no BLAS) costs ~77-79 ms a face at any detection scale,
    against ~21 ms for detecting at scale 0.5 in a 640x360 frame: on the Hamilton clip,
    every frame, encoding was two thirds of the time (135 faces in 275 frames; mean 60-63
    ms a frame, 0.42-0.46x of full frame). A face that is still in the same place and
    still looks the same a frame later is the same face: its encoding is carried over and
    matched again against the current library. There this encoded 38 of the 135 faces:
    mean 0.21-0.28x of full frame by the wall clock on a shared machine (CPU time
    0.24-0.26x), recall of the full-frame matches 0.974 (0.962 encoding every face;
    bench/bench_faces.py).

    Times are the frames' own timestamps (video time for files), never the wall clock:
    frames recognized back to back may be seconds apart in the video.
    """

    # Re-encode after this many reuses in a row, or once the encoding's frame is this
    # many seconds older than the current one: both bound drift. Over 4-8 frames of one
    # Hamilton face the distance to the nearest known face moved by up to 0.13 (p95 0.09).
    max_reuses: int = 8
    max_age_s: float = 0.5
    # Reuse only from a frame at most this far away in time, before or after (workers may
    # finish slightly out of order): about 3 frames at 30 fps. Frames the loop selects
    # seconds apart are always encoded afresh.
    max_gap_s: float = 0.1
    # Same place: box overlap with the previous face. Detection at 0.5 jitters between
    # HOG window sizes (86 and 104 px faces), so one face gave IoU 0.61-1.0 frame to frame.
    min_iou: float = 0.5
    # Still looks the same: 8x8 grey thumbnails of the old face and of the same region in
    # this frame, as mean absolute difference (0-255) and again with brightness and
    # contrast taken out (z-scores), which catches cuts between dark shots. On our clips a
    # face against itself one frame later passed both in 94% of pairs; a face against any
    # face of another clip passed in none of 2,416 pairs (lowest z difference 0.64); at
    # Hamilton's real cuts the places where its faces appear differed by z 0.63-1.38
    # (grey 21 at 0.63).
    max_grey_diff: float = 20.0
    max_shape_diff: float = 0.5
    # An unknown face is kept only while its distance sits above the tolerance by this
    # much per second since it was encoded (0.03 a frame at 30 fps). A near miss is often
    # a known person at a poor angle: Lin's distance hovers at 0.50-0.55 for seconds on
    # the Hamilton clip and moved by 0.016 (median) / 0.043 (p90) a frame, so a near miss
    # is looked at again before drift could carry it under the tolerance (kept like
    # matches instead, unknowns lost 22 of the 78 full-frame matches: recall 0.69). A match
    # is kept as it is: at tolerance 0.5 our clips gave no false matches, and each Hamilton
    # frame where a carried match outlived the full-frame verdict (16 frames, full-frame
    # distances 0.50-0.57) has Lin on screen (README: matches at tolerance 0.6).
    unknown_margin_per_s: float = 0.9

    def __post_init__(self) -> None:
        if self.max_reuses < 0 or min(self.max_age_s, self.max_gap_s, self.max_grey_diff,
                                      self.max_shape_diff, self.unknown_margin_per_s) < 0:
            raise SummarizerError(f"identity reuse settings must not be negative: {self}")
        if not 0.0 < self.min_iou <= 1.0:
            raise SummarizerError(f"identity reuse min_iou must be in (0, 1], not {self.min_iou}")


DEFAULT_REUSE = IdentityReuse()


@dataclass(frozen=True)
class Track:
    """One face of the last recognized frame, as identity reuse needs it."""

    box: Box
    thumb: np.ndarray  # _THUMB_SIZE^2 grey pixels of the face, float32
    encoding: np.ndarray | None  # None when nothing was encoded (empty library)
    reuses: int  # reuses in a row since the encoding was computed
    encoded_at: float | None  # timestamp of the frame that computed it (None: not given)


@dataclass(frozen=True)
class _LastFrame:
    at: float  # the frame's timestamp
    shape: tuple[int, ...]
    tracks: tuple[Track, ...]


_NO_THUMB = np.zeros((0, 0), np.float32)  # identity reuse off: no thumbnails kept


class IdentityTracker:
    """Identities carried between close frames (IdentityReuse) and names smoothed over k of n frames.

    Thread-safe: frames are recognized on several workers, slightly out of order.
    """

    def __init__(self, reuse: IdentityReuse | None, smoothing: tuple[int, int] | None, *,
                 tolerance: float) -> None:
        self.reuse = reuse  # None: encode every face in every frame
        self.smoothing = smoothing
        self.tolerance = tolerance  # the recognizer's: a near miss of it is looked at again
        self.suppressed = 0  # names held back by smoothing
        self._lock = threading.Lock()
        self._recent: deque[frozenset[str]] = deque(maxlen=smoothing[1] if smoothing else 1)
        self._last: _LastFrame | None = None

    def keeps(self, timestamp: float | None) -> bool:
        """Whether this frame's faces are remembered for the next (reuse on and a timestamp given)."""
        return self.reuse is not None and timestamp is not None

    def carried_over(self, rgb: np.ndarray, boxes: list[Box], timestamp: float | None,
                     references: np.ndarray) -> list[Track | None]:
        """For each box, the previous frame's face whose encoding it may keep, or None."""
        carried: list[Track | None] = [None] * len(boxes)
        policy = self.reuse
        if policy is None or timestamp is None or not boxes or not len(references):
            return carried
        with self._lock:
            last = self._last
        if (last is None or last.shape != rgb.shape
                or abs(timestamp - last.at) > policy.max_gap_s):
            return carried
        # Each box is judged against the one previous face it overlaps most (best pairs
        # first), so two faces side by side never swap identities.
        pairs = sorted(((_iou(box, t.box), i, j) for i, box in enumerate(boxes)
                        for j, t in enumerate(last.tracks)), reverse=True)
        judged: set[int] = set()
        taken: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < policy.min_iou:
                break
            if i in judged or j in taken:
                continue
            judged.add(i)
            taken.add(j)
            if self._may_reuse(last.tracks[j], rgb, boxes[i], timestamp, references):
                carried[i] = last.tracks[j]
        return carried

    def tracks(self, rgb: np.ndarray, boxes: list[Box], carried: list[Track | None],
               encodings: list[np.ndarray | None], timestamp: float | None) -> list[Track]:
        """This frame's faces: the carried ones one reuse older, the others with their fresh encodings."""
        keep = self.keeps(timestamp)
        tracks, found = [], iter(encodings)
        for box, old in zip(boxes, carried):
            if old is None:
                tracks.append(Track(box, _thumb(rgb, box) if keep else _NO_THUMB, next(found), 0, timestamp))
            else:
                tracks.append(Track(box, _thumb(rgb, box), old.encoding, old.reuses + 1, old.encoded_at))
        return tracks

    def remember(self, shape: tuple[int, ...], tracks: list[Track], timestamp: float | None) -> None:
        """Keep this frame's faces for the next frame, unless it is older than the one kept."""
        if not self.keeps(timestamp):
            return
        with self._lock:
            last = self._last
            if last is None or timestamp >= last.at or abs(timestamp - last.at) > self.reuse.max_gap_s:
                # Keep the newest frame: an older one finishing late must not replace it
                # (a jump, such as the next file starting at 0 s, starts a new timeline).
                self._last = _LastFrame(timestamp, shape, tuple(tracks))

    def smooth(self, matches: list[FaceMatch]) -> list[FaceMatch]:
        """Report a name only once it held in k of the last n processed frames (no smoothing: as they are)."""
        if self.smoothing is None:
            return matches
        k, _ = self.smoothing
        with self._lock:
            self._recent.append(frozenset(m.name for m in matches if m.known))
            held = Counter(name for names in self._recent for name in names)
            out = []
            for m in matches:
                if m.known and held[m.name] < k:
                    self.suppressed += 1
                    m = FaceMatch(UNKNOWN, m.distance, m.box, m.reused)
                out.append(m)
        return out

    def _may_reuse(self, track: Track, rgb: np.ndarray, box: Box, timestamp: float,
                   references: np.ndarray) -> bool:
        policy = self.reuse
        if track.encoding is None or track.reuses >= policy.max_reuses:
            return False
        age = abs(timestamp - track.encoded_at)  # abs: frames may come slightly out of order
        if age > policy.max_age_s:
            return False
        distance = float(np.min(np.linalg.norm(references - track.encoding, axis=1)))
        margin = policy.unknown_margin_per_s * age
        if self.tolerance < distance < self.tolerance + margin:
            return False  # a near miss: look again, it may be someone we know
        return self._looks_same(track, rgb, box)

    def _looks_same(self, track: Track, rgb: np.ndarray, box: Box) -> bool:
        """Whether the old face still looks the same here (no cut, no big change)."""
        # Where the face was, and the old face's size where the detector sees it now: the
        # first misses a face that moved a few pixels, the second a box that jittered to
        # another HOG window size. One face one frame later passed 94% of the time with
        # either, 88% and 84% with one alone.
        top, right, bottom, left = track.box
        height, width = bottom - top, right - left
        centre_y, centre_x = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        top = min(max(0, centre_y - height // 2), rgb.shape[0] - height)
        left = min(max(0, centre_x - width // 2), rgb.shape[1] - width)
        policy = self.reuse
        for region in (track.box, (top, left + width, top + height, left)):
            here = _thumb(rgb, region)
            if np.mean(np.abs(here - track.thumb)) <= policy.max_grey_diff and (
                    np.mean(np.abs(_zscore(here) - _zscore(track.thumb))) <= policy.max_shape_diff):
                return True
        return False


def _thumb(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The face as _THUMB_SIZE^2 grey pixels (float32)."""
    import cv2  # noqa: PLC0415 - loaded already by the recognizer's load(); keeps `--help` fast

    top, right, bottom, left = box
    small = cv2.resize(rgb[top:bottom, left:right], (_THUMB_SIZE, _THUMB_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _iou(a: Box, b: Box) -> float:
    """Intersection over union of two (top, right, bottom, left) boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    return inter / ((a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter)


def _zscore(pixels: np.ndarray) -> np.ndarray:
    """Pixels with brightness and contrast taken out."""
    return (pixels - pixels.mean()) / (pixels.std() + 1e-6)
