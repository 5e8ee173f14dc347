"""Small generated test clips with their ground truth, so tests run without ``../shared``.

Use the session fixture ``clips`` (tests/conftest.py), or a ``ClipSet`` of your own::

    def test_something(clips):
        clip = clips.figure_crossing()               # written once per session, then cached
        clip.path, clip.fps, clip.frame_count, clip.size
        clip.figure                                  # (first, last) frame with the figure fully in view
        clip.time_of(clip.figure[0])                 # its video time in seconds
        clip = clips.hard_cuts(cut_times=(1.0, 2.5)) # other options: another file

    clips = ClipSet(Path("/tmp/somewhere"))          # outside pytest (bench/benchmark.py does this)

Every generator is also a plain function ``name(directory, **options) -> Clip``. All are
deterministic (seeded; the same options give the same pixels), a few seconds long and small
(160x120 by default). Frame ``i`` is at ``i / fps`` seconds. ``Clip`` fields that do not apply
to a clip are empty (``()`` / ``None``).

| generator | what it shows | ground truth on the Clip |
| --- | --- | --- |
| ``still_noisy`` | a still textured scene with sensor noise (mp4v: compression shimmer too) | nothing happens |
| ``figure_crossing`` | the same scene; a small figure (~3 % of the frame) walks across it | ``figure``, ``figure_share`` |
| ``hard_cuts`` | textured scenes of different palettes, hard cuts between them | ``cuts`` (first frame of each new scene) |
| ``flicker`` | the still noisy scene under a light whose brightness swings (±20 %) | ``gains`` (brightness factor per frame) |
| ``pan`` | a slow camera pan across a wide textured scene | ``pan_px_per_s`` |
| ``figure_walk`` | a small figure (~1.5 %) walks across a still noisy room or a bright low-texture snowfield, the camera still or panning | ``figure``, ``figure_share``, ``figure_boxes``, ``pan_px_per_s`` |
| ``long_static`` | a long still noisy scene (60 s at 5 fps) | nothing happens |
| ``numbered`` | frame ``i`` shows ``i`` as big black/white cells (``read_number``), its number and a colour (``colour_of``) | every frame differs |
| ``pipe_stream`` | ``numbered`` frames in a container FFmpeg reads from a pipe (``cat x.ts \\| ... --source -``) | as ``numbered`` |
| ``with_long_audio`` | ``numbered`` frames (MJPEG) in Matroska with a silent PCM track that outlasts them | as ``numbered`` |

About ``pipe_stream``: ``container="ts"`` is MPEG-TS with MPEG-4 part 2 video (VideoWriter's
``mp4v`` into a ``.ts`` name: FFmpeg muxes it, and a pipe reads every frame); ``"mkv"`` and
``"avi"`` are MJPEG. An ordinary ``.mp4`` from VideoWriter keeps its index at the end and
yields no frames from a pipe (shared/notes/stack.md), which is why it is not offered here.
(MJPEG into ``.ts`` is refused by the muxer: the file cannot be read back.)

About ``with_long_audio``: VideoWriter writes no audio, and the suite needs neither an ``ffmpeg``
binary nor PyAV, so the Matroska file is written here element by element (EBML header, Info
with the duration, two tracks, one cluster a second). FFmpeg states its length as the longest
stream's, the audio's, as it does for a camera recording whose audio runs on after the video.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

SIZE = (160, 120)  # (width, height)
NOISE_SIGMA = 4.0  # grey levels: a cheap camera in a lit room
_BITS_COLS, _BITS_ROWS = 5, 2  # read_number's cells: 10 bits, frames 0..1023


@dataclass(frozen=True)
class Clip:
    """A generated clip and what is known about it."""

    path: Path
    fps: float
    frame_count: int
    size: tuple[int, int]  # (width, height)
    cuts: tuple[int, ...] = ()  # first frame of each new scene after the first
    figure: tuple[int, int] | None = None  # first and last frame with the figure fully in view
    figure_share: float = 0.0  # the figure's area / the frame's area
    gains: tuple[float, ...] = ()  # flicker: each frame's brightness factor
    pan_px_per_s: float = 0.0
    figure_boxes: tuple[tuple[int, int, int, int] | None, ...] = ()  # figure_walk: (x, y, w, h) in view, per frame

    @property
    def duration(self) -> float:
        """Seconds of video (frame_count / fps)."""
        return self.frame_count / self.fps

    def time_of(self, index: int) -> float:
        """Video time of frame ``index`` in seconds."""
        return index / self.fps

    def figure_in_view(self, index: int) -> bool:
        """Whether the figure is fully in view in frame ``index``."""
        return self.figure is not None and self.figure[0] <= index <= self.figure[1]


# -- building blocks ----------------------------------------------------------------------------

def textured_scene(seed: int, size: tuple[int, int] = SIZE, tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   level: float = 128.0) -> np.ndarray:
    """A still textured BGR scene: blurred noise at two scales and a few shapes, kept off 0 and 255."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = cv2.resize(rng.normal(0, 1, (max(2, h // 20), max(2, w // 20))), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 1.5)
    grey = level + 35 * coarse + 18 * fine / max(1e-6, fine.std())
    img = np.dstack([grey * t for t in tint])
    for _ in range(6):  # furniture: edges and flat areas, as in a room
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = [float(v) for v in rng.uniform(level - 60, level + 60, 3)]
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, w // 3)), y + int(rng.integers(6, h // 3))), colour, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(4, h // 5)), colour, -1)
    return np.clip(img, 25, 230).astype(np.float32)


def add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """The scene as a sensor sees it: independent Gaussian noise per pixel and channel, as uint8."""
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def figure_mask(size: tuple[int, int], share: float) -> tuple[np.ndarray, np.ndarray]:
    """A standing figure (body and head) covering about ``share`` of a frame: (mask, BGR colours)."""
    w, h = size
    fig_h = max(8, round((share * w * h * 2.2) ** 0.5))  # a figure is about 2.2 times as tall as wide
    fig_w = max(4, round(share * w * h / fig_h / 0.85))  # the head and shoulders fill ~85 % of the box
    mask = np.zeros((fig_h, fig_w), np.uint8)
    head = max(2, fig_w // 3)
    cv2.circle(mask, (fig_w // 2, head), head, 1, -1)
    cv2.rectangle(mask, (0, 2 * head), (fig_w - 1, fig_h - 1), 1, -1)
    colours = np.zeros((fig_h, fig_w, 3), np.float32)
    colours[:] = (70, 45, 40)  # a dark blue coat
    colours[: 2 * head] = (120, 150, 200)  # skin
    return mask.astype(bool), colours


def colour_of(index: int) -> tuple[int, int, int]:
    """The BGR colour of the top band of ``numbered`` frame ``index`` (a hue wheel, 12 steps)."""
    hsv = np.uint8([[[(index * 15) % 180, 200, 220]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def numbered_frame(index: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Frame ``index`` of ``numbered``: a colour band with the number, bit cells below."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    band = h // 3
    img[:band] = colour_of(index)
    cv2.putText(img, str(index), (4, band - 6), cv2.FONT_HERSHEY_SIMPLEX, band / 40, (0, 0, 0), 2)
    cell_w, cell_h = w // _BITS_COLS, (h - band) // _BITS_ROWS
    for bit in range(_BITS_COLS * _BITS_ROWS):
        if index >> bit & 1:
            x, y = (bit % _BITS_COLS) * cell_w, band + (bit // _BITS_COLS) * cell_h
            img[y:y + cell_h, x:x + cell_w] = 255
    return img


def read_number(image: np.ndarray) -> int:
    """The frame number a ``numbered`` frame shows, read from its cells; survives JPEG and resizing."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    band = h // 3
    cell_w, cell_h = w / _BITS_COLS, (h - band) / _BITS_ROWS
    number = 0
    for bit in range(_BITS_COLS * _BITS_ROWS):
        x0, y0 = (bit % _BITS_COLS) * cell_w, band + (bit // _BITS_COLS) * cell_h
        centre = grey[int(y0 + cell_h * 0.3):int(y0 + cell_h * 0.7), int(x0 + cell_w * 0.3):int(x0 + cell_w * 0.7)]
        number |= int(centre.mean() > 127) << bit
    return number


def write_clip(path: Path, frames, fps: float, size: tuple[int, int], fourcc: str) -> int:
    """Write BGR uint8 frames with cv2.VideoWriter; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)  # the suffix tells FFmpeg the container
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {fourcc} into {path.suffix}")
    count = 0
    try:
        for frame in frames:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    os.replace(tmp, path)  # a half-written clip is never mistaken for a cached one
    return count


def small_clip(path: Path, fourcc: str, count: int = 100, fps: float = 30.0, frame=None) -> Path:
    """A 160x120 clip of ``count`` frames: ``frame(i)`` each, or greys getting lighter."""
    def grey(i: int) -> np.ndarray:
        return np.full((120, 160, 3), (i * 2) % 256, np.uint8)

    write_clip(path, ((frame or grey)(i) for i in range(count)), fps, (160, 120), fourcc)
    return path


def cut_file(path: Path, share: float, name: str) -> Path:
    """The first ``share`` of ``path``'s bytes as ``name`` beside it: a half-copied upload."""
    data = path.read_bytes()
    out = path.with_name(name)
    out.write_bytes(data[: int(len(data) * share)])
    return out


def _fourcc(path: Path, codec: str | None) -> str:
    return codec or ("MJPG" if path.suffix in (".avi", ".mkv") else "mp4v")


# -- the generators -------------------------------------------------------------------------------

def still_noisy(directory: Path, *, seconds: float = 4.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
                noise: float = NOISE_SIGMA, seed: int = 1, ext: str = "mp4") -> Clip:
    """A still textured scene; only sensor noise (and the codec's shimmer) changes."""
    path = Path(directory) / f"still_noisy-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    scene, rng = textured_scene(seed, size), np.random.default_rng(seed + 1000)
    write_clip(path, (add_noise(scene, rng, noise) for _ in range(n)), fps, size, _fourcc(path, None))
    return Clip(path, fps, n, size)


def figure_crossing(directory: Path, *, seconds: float = 6.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
                    share: float = 0.03, enter_s: float = 1.0, exit_s: float = 5.0, noise: float = NOISE_SIGMA,
                    seed: int = 1, ext: str = "mp4") -> Clip:
    """The still noisy scene; a figure of ``share`` of the frame walks in from the left at
    ``enter_s`` and is gone past the right edge at ``exit_s``, at constant speed."""
    path = Path(directory) / f"figure_crossing-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    w, h = size
    scene, rng = textured_scene(seed, size), np.random.default_rng(seed + 1000)
    mask, colours = figure_mask(size, share)
    fig_h, fig_w = mask.shape
    top = h - fig_h - max(1, h // 12)  # standing on the floor, a little above the bottom edge
    speed = (w + fig_w) / (exit_s - enter_s)
    lefts = [round(-fig_w + speed * (i / fps - enter_s)) for i in range(n)]

    def frames():
        for left in lefts:
            img = scene.copy()
            x0, x1 = max(0, left), min(w, left + fig_w)
            if x0 < x1:
                part = mask[:, x0 - left:x1 - left]
                region = img[top:top + fig_h, x0:x1]
                region[part] = colours[:, x0 - left:x1 - left][part]
            yield add_noise(img, rng, noise)

    write_clip(path, frames(), fps, size, _fourcc(path, None))
    inside = [i for i, left in enumerate(lefts) if left >= 0 and left + fig_w <= w]
    return Clip(path, fps, n, size, figure=(inside[0], inside[-1]), figure_share=float(mask.sum()) / (w * h))


def hard_cuts(directory: Path, *, cut_times: tuple[float, ...] = (1.5, 3.0, 4.5), seconds: float = 6.0,
              fps: float = 10.0, size: tuple[int, int] = SIZE, noise: float = NOISE_SIGMA, seed: int = 1,
              ext: str = "mp4") -> Clip:
    """Still noisy scenes of different textures and palettes, cut at ``cut_times`` seconds."""
    path = Path(directory) / f"hard_cuts-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    cuts = tuple(round(t * fps) for t in cut_times)
    tints = [(1.0, 1.0, 1.0), (0.7, 0.9, 1.25), (1.2, 1.0, 0.7), (0.9, 1.15, 0.9)]
    levels = [128.0, 95.0, 150.0, 115.0]
    scenes = [textured_scene(seed + 10 * k, size, tints[k % 4], levels[k % 4]) for k in range(len(cuts) + 1)]
    rng = np.random.default_rng(seed + 1000)

    def frames():
        for i in range(n):
            yield add_noise(scenes[sum(i >= c for c in cuts)], rng, noise)

    write_clip(path, frames(), fps, size, _fourcc(path, None))
    return Clip(path, fps, n, size, cuts=cuts)


def flicker(directory: Path, *, seconds: float = 4.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
            depth: float = 0.2, hz: float = 1.3, noise: float = NOISE_SIGMA, seed: int = 1, ext: str = "mp4") -> Clip:
    """The still noisy scene lit by a light whose brightness swings by ±``depth`` at ``hz``."""
    path = Path(directory) / f"flicker-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    scene, rng = textured_scene(seed, size), np.random.default_rng(seed + 1000)
    gains = tuple(1.0 + depth * float(np.sin(2 * np.pi * hz * i / fps)) for i in range(n))
    write_clip(path, (add_noise(scene * g, rng, noise) for g in gains), fps, size, _fourcc(path, None))
    return Clip(path, fps, n, size, gains=gains)


def pan(directory: Path, *, seconds: float = 4.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
        px_per_s: float = 8.0, noise: float = NOISE_SIGMA, seed: int = 1, ext: str = "mp4") -> Clip:
    """A camera panning right at ``px_per_s`` across a scene twice as wide as the frame."""
    path = Path(directory) / f"pan-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    w, h = size
    wide, rng = textured_scene(seed, (2 * w, h)), np.random.default_rng(seed + 1000)

    def frames():
        for i in range(n):
            shift = np.float32([[1, 0, -px_per_s * i / fps], [0, 1, 0]])  # sub-pixel: a smooth pan
            view = cv2.warpAffine(wide, shift, (2 * w, h), flags=cv2.INTER_LINEAR)[:, :w]
            yield add_noise(view, rng, noise)

    write_clip(path, frames(), fps, size, _fourcc(path, None))
    return Clip(path, fps, n, size, pan_px_per_s=px_per_s)


def snowfield(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A bright, nearly flat BGR scene: snow with faint drifts and a slightly darker band of hills."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = cv2.resize(rng.normal(0, 1, (max(2, h // 30), max(2, w // 30))), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 1.0)
    grey = 212 + 6 * coarse + 3 * fine / max(1e-6, fine.std())
    grey[: h // 4] -= 14  # the hills on the horizon
    return np.clip(np.dstack([grey * 0.97, grey, grey * 1.02]), 25, 240).astype(np.float32)


def figure_walk(directory: Path, *, seconds: float = 10.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
                share: float = 0.015, enter_s: float = 1.0, exit_s: float = 9.0, scene: str = "room",
                pan_px_per_s: float = 0.0, noise: float = NOISE_SIGMA, seed: int = 1, ext: str = "mp4") -> Clip:
    """A figure of ``share`` of the frame walks in from the left at ``enter_s`` and is gone past the right
    edge at ``exit_s`` (constant speed on screen); the scene is the still noisy room (``"room"``) or a
    bright low-texture snowfield (``"snow"``), the camera still or panning right at ``pan_px_per_s``."""
    path = Path(directory) / f"figure_walk-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    w, h = size
    wide_size = (w + int(math.ceil(pan_px_per_s * seconds)) + 2, h)
    wide = snowfield(seed, wide_size) if scene == "snow" else textured_scene(seed, wide_size)
    rng = np.random.default_rng(seed + 1000)
    mask, colours = figure_mask(size, share)
    fig_h, fig_w = mask.shape
    top = h - fig_h - max(1, h // 12)
    speed = (w + fig_w) / (exit_s - enter_s)
    lefts = [round(-fig_w + speed * (i / fps - enter_s)) for i in range(n)]

    def frames():
        for i, left in enumerate(lefts):
            shift = np.float32([[1, 0, -pan_px_per_s * i / fps], [0, 1, 0]])
            img = cv2.warpAffine(wide, shift, wide_size, flags=cv2.INTER_LINEAR)[:, :w].copy()
            x0, x1 = max(0, left), min(w, left + fig_w)
            if x0 < x1:
                part = mask[:, x0 - left:x1 - left]
                img[top:top + fig_h, x0:x1][part] = colours[:, x0 - left:x1 - left][part]
            yield add_noise(img, rng, noise)

    write_clip(path, frames(), fps, size, _fourcc(path, None))
    boxes = tuple((max(0, left), top, min(w, left + fig_w) - max(0, left), fig_h)
                  if max(0, left) < min(w, left + fig_w) else None for left in lefts)
    inside = [i for i, left in enumerate(lefts) if left >= 0 and left + fig_w <= w]
    return Clip(path, fps, n, size, figure=(inside[0], inside[-1]) if inside else None,
                figure_share=float(mask.sum()) / (w * h), pan_px_per_s=pan_px_per_s, figure_boxes=boxes)


def long_static(directory: Path, *, seconds: float = 60.0, fps: float = 5.0, size: tuple[int, int] = SIZE,
                noise: float = NOISE_SIGMA, seed: int = 2, ext: str = "mp4") -> Clip:
    """A long still noisy scene (a parked camera): for gating, max gap and long-run tests."""
    path = Path(directory) / f"long_static-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    scene, rng = textured_scene(seed, size), np.random.default_rng(seed + 1000)
    write_clip(path, (add_noise(scene, rng, noise) for _ in range(n)), fps, size, _fourcc(path, None))
    return Clip(path, fps, n, size)


def numbered(directory: Path, *, seconds: float = 3.0, fps: float = 10.0, size: tuple[int, int] = SIZE,
             ext: str = "avi", codec: str | None = None) -> Clip:
    """Frame ``i`` shows ``i`` (read it back with ``read_number``) and ``colour_of(i)``."""
    path = Path(directory) / f"numbered-{_key(locals())}.{ext}"
    n = round(seconds * fps)
    if n > 2 ** (_BITS_COLS * _BITS_ROWS):
        raise ValueError(f"numbered clips hold at most {2 ** (_BITS_COLS * _BITS_ROWS)} frames, asked for {n}")
    write_clip(path, (numbered_frame(i, size) for i in range(n)), fps, size, _fourcc(path, codec))
    return Clip(path, fps, n, size)


def pipe_stream(directory: Path, *, container: str = "ts", seconds: float = 3.0, fps: float = 10.0,
                size: tuple[int, int] = SIZE) -> Clip:
    """``numbered`` frames for stdin: MPEG-TS (mp4v), or MJPEG in MKV or AVI; all read from a pipe."""
    if container not in ("ts", "mkv", "avi"):
        raise ValueError(f"container must be ts, mkv or avi, got {container!r}")
    return numbered(directory, seconds=seconds, fps=fps, size=size, ext=container,
                    codec="mp4v" if container == "ts" else "MJPG")


def _ebml(element_id: str, payload: bytes | int | float | str | list) -> bytes:
    """One EBML element: its id (hex), an 8-byte size, the payload (a list: child elements)."""
    if isinstance(payload, int):
        payload = payload.to_bytes(max(1, (payload.bit_length() + 7) // 8), "big")
    elif isinstance(payload, float):
        payload = struct.pack(">d", payload)
    elif isinstance(payload, str):
        payload = payload.encode()
    elif isinstance(payload, list):
        payload = b"".join(payload)
    return bytes.fromhex(element_id) + b"\x01" + len(payload).to_bytes(7, "big") + payload


def with_long_audio(directory: Path, *, seconds: float = 5.0, fps: float = 10.0, audio_seconds: float = 5.6,
                    size: tuple[int, int] = SIZE) -> Clip:
    """``numbered`` frames as MJPEG in Matroska beside a silent 8 kHz PCM track of ``audio_seconds``."""
    path = Path(directory) / f"long-audio-{_key(locals())}.mkv"
    n, rate, total_ms = round(seconds * fps), 8000, int(max(seconds, audio_seconds) * 1000)
    header = _ebml("1A45DFA3", [_ebml("4286", 1), _ebml("42F7", 1), _ebml("42F2", 4), _ebml("42F3", 8),
                                _ebml("4282", "matroska"), _ebml("4287", 4), _ebml("4285", 2)])
    info = _ebml("1549A966", [_ebml("2AD7B1", 1_000_000), _ebml("4489", float(total_ms)),  # ms
                              _ebml("4D80", "tests/clips.py"), _ebml("5741", "tests/clips.py")])
    video = _ebml("AE", [_ebml("D7", 1), _ebml("73C5", 1), _ebml("83", 1), _ebml("86", "V_MJPEG"),
                         _ebml("23E383", int(1e9 / fps)), _ebml("E0", [_ebml("B0", size[0]), _ebml("BA", size[1])])])
    audio = _ebml("AE", [_ebml("D7", 2), _ebml("73C5", 2), _ebml("83", 2), _ebml("86", "A_PCM/INT/LIT"),
                         _ebml("E1", [_ebml("B5", float(rate)), _ebml("9F", 1), _ebml("6264", 16)])])
    clusters = []
    for start in range(0, total_ms, 1000):  # block times are 16-bit ms from their cluster's
        blocks = [_ebml("E7", start)]
        for i in range(n):
            if start <= int(i * 1000 / fps) < start + 1000:
                jpeg = cv2.imencode(".jpg", numbered_frame(i, size))[1].tobytes()
                blocks.append(_ebml("A3", b"\x81" + struct.pack(">h", int(i * 1000 / fps) - start) + b"\x80" + jpeg))
        for t in range(start, min(start + 1000, int(audio_seconds * 1000)), 100):
            blocks.append(_ebml("A3", b"\x82" + struct.pack(">h", t - start) + b"\x80" + bytes(2 * rate // 10)))
        clusters.append(_ebml("1F43B675", blocks))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + _ebml("18538067", [info, _ebml("1654AE6B", [video, audio]), *clusters]))
    return Clip(path, fps, n, size)


def _key(options: dict) -> str:
    """A short stable name for one set of options (the directory itself left out)."""
    text = json.dumps({k: v for k, v in sorted(options.items()) if k != "directory"}, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


GENERATORS: dict[str, Callable[..., Clip]] = {
    f.__name__: f for f in (still_noisy, figure_crossing, hard_cuts, flicker, pan, long_static, numbered, pipe_stream,
                            with_long_audio, figure_walk)
}


class ClipSet:
    """The generators above writing into one folder, each clip made once per set of options."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._made: dict[str, Clip] = {}

    def get(self, name: str, **options) -> Clip:
        """The clip generator ``name`` makes with ``options``; made on first use, then reused."""
        key = name + "-" + _key(options)
        if key not in self._made:
            self._made[key] = GENERATORS[name](self.directory, **options)
        return self._made[key]

    def still_noisy(self, **options) -> Clip:
        """See still_noisy()."""
        return self.get("still_noisy", **options)

    def figure_crossing(self, **options) -> Clip:
        """See figure_crossing()."""
        return self.get("figure_crossing", **options)

    def hard_cuts(self, **options) -> Clip:
        """See hard_cuts()."""
        return self.get("hard_cuts", **options)

    def flicker(self, **options) -> Clip:
        """See flicker()."""
        return self.get("flicker", **options)

    def pan(self, **options) -> Clip:
        """See pan()."""
        return self.get("pan", **options)

    def figure_walk(self, **options) -> Clip:
        """See figure_walk()."""
        return self.get("figure_walk", **options)

    def long_static(self, **options) -> Clip:
        """See long_static()."""
        return self.get("long_static", **options)

    def numbered(self, **options) -> Clip:
        """See numbered()."""
        return self.get("numbered", **options)

    def pipe_stream(self, **options) -> Clip:
        """See pipe_stream()."""
        return self.get("pipe_stream", **options)

    def with_long_audio(self, **options) -> Clip:
        """See with_long_audio()."""
        return self.get("with_long_audio", **options)
