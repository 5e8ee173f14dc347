"""Clips, not stills: the frames since the last caption that one caption request covers.

The loop feeds every read frame to a ``ClipCollector`` (``add``) and, when the selector takes
a frame, asks it for the clip that ends there (``take``). Up to ``frames - 1`` earlier frames
are chosen from those read since the last caption, by motion (the detector's moving share,
where the loop passes it) and by how much each differs from the candidate before it, one from
each equal stretch of the span so the clip covers it; the key frame (the one the selector
took) always comes last. Only the first frame of each bucket of read frames has its pixels
read (a file's frame is decoded only then), and another frame of the bucket only when it moves
more, so the collector costs a fraction of decoding.

Memory is bounded: the collector keeps at most ``keep`` candidates, each a copy downscaled to
the size it will be sent at (``frame_pixels``), each the most changed frame of a bucket of read
frames. When the buffer fills, neighbouring buckets merge (the frame that changed more stays)
and buckets grow twice as long, so the span stays evenly covered and the moments of change
stay in. At the defaults (6 frames, 32 candidates of ~220 000 pixels) that is at most
about 21 MB a source, whatever the frame rate or --max-gap.

Sizing (``frame_budget``): each frame of a request gets ``max_pixels / N`` pixels, so N frames
cost about the visual tokens of one still at ``max_pixels`` (Qwen-VL counts one token per
32 x 32 pixels; measured figures in docs/models.md, "Clips").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from video_summarizer import defaults as D
from video_summarizer.results import Clip, ClipFrame

KEEP = D.CLIP_CANDIDATES  # candidates kept between two captions, whatever the frame rate
_GREY_WIDTH = 32  # the tiny grey copy a candidate's change is measured on


def frame_label(position: int, seconds: float) -> str:
    """What precedes a clip frame in a request: "Frame 2 at 00:03.2:"."""
    from video_summarizer.timecodes import format_video_time

    return f"Frame {position} at {format_video_time(seconds, 1)}:"


def frame_budget(max_pixels: int, frames: int, max_side: int = D.VLM_IMAGE_MAX_SIDE) -> int:
    """Pixels each frame of a clip of ``frames`` frames may have within a request's ``max_pixels``."""
    return max(1, min(max_pixels // max(1, frames), max_side * max_side))


def fit_pixels(image: np.ndarray, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """The image shrunk (never enlarged) to at most max_pixels pixels and max_side on its longest side."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, math.sqrt(max_pixels / float(h * w)))
    if max_side is not None:
        scale = min(scale, max_side / float(max(h, w)))
    if scale >= 1.0:
        return image
    size = (max(1, int(w * scale)), max(1, int(h * scale)))  # floor: never past the budget
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass(eq=False)  # compared by identity: they hold arrays
class _Candidate:
    index: int
    video_time: float
    image: np.ndarray  # downscaled copy
    score: float  # motion area plus the change from the candidate looked at before it
    motion: float = 0.0  # the moving share the motion detector gave it (0: none given)


class ClipCollector:
    """Keeps small copies of the frames read since the last caption and picks a clip from them."""

    def __init__(self, frames: int = D.CLIP_FRAMES_SERVER, *, max_pixels: int = D.CLIP_MAX_PIXELS_SERVER,
                 max_side: int = D.VLM_IMAGE_MAX_SIDE, keep: int = KEEP) -> None:
        if frames < 1:
            raise ValueError(f"a clip has at least one frame, not {frames}")
        self.frames = frames
        self.frame_pixels = frame_budget(max_pixels, frames, max_side)  # each copy as it will be sent
        self.max_side = max_side
        self.keep = max(keep, 2 * frames)  # room for a choice among the stretches
        self._candidates: list[_Candidate] = []  # one a bucket of `_stride` read frames, in time order
        self._stride = 1
        self._fill = 0  # frames in the newest bucket
        self._seen = 0  # frames read since the last caption: the next span's first bucket size
        self._last_thumb: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._candidates)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held now (bounded by keep x frame_pixels x 3)."""
        return sum(c.image.nbytes for c in self._candidates)

    def add(self, frame: Any, motion_area: float | None = None) -> None:
        """One read frame (``index``, ``timestamp``, ``image``); motion_area: its moving share, 0..1.

        Only the first frame of each bucket has its pixels looked at (a file's frames are decoded
        only when their pixels are read), and a later one of the bucket only when it moves more."""
        if self.frames == 1:
            return  # stills: nothing to keep
        self._seen += 1
        moving = float(motion_area or 0.0)
        opens = not self._candidates or self._fill >= self._stride
        self._fill = 1 if opens else self._fill + 1
        if not opens and moving <= self._candidates[-1].motion:
            return  # its bucket keeps the frame it has
        image = frame.image
        thumb = _grey(image)
        change = 0.0 if self._last_thumb is None else _difference(self._last_thumb, thumb)
        self._last_thumb = thumb
        if not opens:
            self._candidates.pop()  # this one moves more
        small = fit_pixels(image, self.frame_pixels, self.max_side)
        if small is image:
            small = image.copy()  # the source may reuse its buffer
        self._candidates.append(_Candidate(int(frame.index), float(frame.timestamp), small, change + moving, moving))
        if len(self._candidates) > self.keep:
            self._thin()

    def take(self, key_frame: Any) -> Clip:
        """The clip ending at key_frame (the frame the selector took); the next starts after it."""
        index, image = int(key_frame.index), key_frame.image
        earlier = [c for c in self._candidates if c.index < index]
        # the next span likely as long as this one: buckets sized so they about fill the candidates
        self._stride, self._seen = max(1, self._seen // self.keep), 0
        self._candidates, self._fill = [], 0
        chosen = pick(earlier, self.frames - 1)
        if chosen:  # the key frame gets the same share of the request's pixels as the others
            image = fit_pixels(image, self.frame_pixels, self.max_side)
        frames = tuple(ClipFrame(c.index, c.video_time, c.image) for c in chosen)
        return Clip(frames + (ClipFrame(index, float(key_frame.timestamp), image),), len(frames))

    def _thin(self) -> None:
        """Halve the candidates: neighbouring buckets merge, keeping the frame that changed more, so
        each candidate stands for the same stretch of read frames (twice as long as before)."""
        pairs = zip(self._candidates[0::2], self._candidates[1::2])
        kept = [b if b.score > a.score else a for a, b in pairs]
        if len(self._candidates) % 2:
            kept.append(self._candidates[-1])
        self._candidates = kept
        self._stride *= 2
        self._fill = self._stride  # the newest bucket is closed: the next frame opens one


def _grey(image: np.ndarray) -> np.ndarray:
    """A tiny grey copy (about 32 pixels wide) made from every few pixels: cheap on any frame size."""
    import cv2

    step = max(1, image.shape[1] // (4 * _GREY_WIDTH))
    sampled = np.ascontiguousarray(image[::step, ::step])
    h, w = sampled.shape[:2]
    small = cv2.resize(sampled, (_GREY_WIDTH, max(1, round(h * _GREY_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """How different two tiny grey copies are, 0..1: their mean absolute difference, scaled.

    Why not selection.change_between: measured at 640x360 (CPU time), it costs 0.6 ms a pair
    and its thumbnail 0.25 ms, more than decoding the frame (0.74 ms, MJPEG); this costs ~0.03 ms,
    and only ranks the frames of one span against each other."""
    import cv2

    if a.shape != b.shape:
        return 1.0
    return min(1.0, 4.0 * float(cv2.absdiff(a, b).mean()) / 255.0)


def pick(candidates: list[_Candidate], n: int) -> list[_Candidate]:
    """Up to n candidates in time order: the most changed one of each of n equal stretches of time."""
    if n <= 0 or not candidates:
        return []
    if len(candidates) <= n:
        return list(candidates)
    t0, t1 = candidates[0].video_time, candidates[-1].video_time
    width = (t1 - t0) / n
    chosen: list[_Candidate] = []
    for k in range(n):
        lo, hi = t0 + k * width, t0 + (k + 1) * width
        stretch = [c for c in candidates if lo <= c.video_time < hi or (k == n - 1 and c.video_time == hi)]
        if stretch:
            # ties (a still scene): the latest of the stretch, nearest the key frame
            chosen.append(max(reversed(stretch), key=lambda c: c.score))
    if len(chosen) < n:  # empty stretches (a gap in the frames): fill with the most changed others
        taken = {id(c) for c in chosen}
        rest = sorted((c for c in candidates if id(c) not in taken), key=lambda c: -c.score)
        chosen = sorted(chosen + rest[:n - len(chosen)], key=lambda c: c.index)
    return chosen
