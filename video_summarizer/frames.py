"""Frame conversion at the model edges: an OpenCV BGR frame to RGB, PIL or a JPEG data URL.

One place for what the caption clients and the face recognizer each did: check the frame,
downscale it (never up), and change colour order with ``cv2.cvtColor``. cvtColor returns a
fresh contiguous array; a ``[:, :, ::-1]`` view would not do for dlib's encoder. OpenCV and
Pillow are imported inside the functions, never at import time.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class JpegImage:
    """A frame encoded for an OpenAI-style request: the data URL and what was sent."""

    data_url: str
    width: int
    height: int
    jpeg_bytes: int


def checked(frame: Any, *, require_uint8: bool = False) -> np.ndarray:
    """The frame as a uint8 HxW or HxWxC array; ValueError for anything else."""
    if not isinstance(frame, np.ndarray) or frame.size == 0 or frame.ndim not in (2, 3):
        raise ValueError("frame must be a non-empty HxW or HxWxC uint8 array")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame has {frame.shape[2]} channels; expected 1, 3 or 4")
    if frame.dtype != np.uint8:
        if require_uint8:
            raise ValueError(f"frame must be a uint8 image (an OpenCV frame), not {frame.dtype}")
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame


def downscale(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """The frame shrunk so its longest side is at most max_side; never enlarged (None: as is)."""
    h, w = frame.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return frame
    import cv2  # lazy: OpenCV is heavy

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # INTER_AREA: the right filter for shrinking, no aliasing on text and edges.
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def to_rgb(frame_bgr: np.ndarray, max_side: int | None = None, *, require_uint8: bool = False) -> np.ndarray:
    """An RGB uint8 copy of a BGR(A) or grey frame, downscaled to max_side (never up)."""
    import cv2  # lazy: OpenCV is heavy

    frame = downscale(checked(frame_bgr, require_uint8=require_uint8), max_side)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def to_pil(frame_bgr: np.ndarray, max_side: int | None = None) -> Any:
    """A PIL RGB image of the frame, downscaled to max_side (never up)."""
    from PIL import Image  # lazy: only the in-process models need Pillow

    return Image.fromarray(to_rgb(frame_bgr, max_side))


def to_jpeg_bytes(frame_bgr: np.ndarray, max_side: int | None, quality: int) -> bytes:
    """The frame downscaled to max_side (never up) as JPEG bytes (traced frames, dataset items)."""
    import cv2  # lazy: OpenCV is heavy

    frame = checked(frame_bgr)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    ok, buf = cv2.imencode(".jpg", downscale(frame, max_side), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def from_jpeg_bytes(data: bytes) -> np.ndarray:
    """A BGR frame decoded from JPEG (or PNG) bytes; ValueError when they are not an image."""
    import cv2  # lazy: OpenCV is heavy

    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError("not a JPEG or PNG image")
    return frame


def to_jpeg_data_url(frame_bgr: np.ndarray, max_side: int, quality: int) -> JpegImage:
    """The frame downscaled to max_side (never up) and encoded as a base64 JPEG data URL.

    JPEG is written from BGR (or grey) as OpenCV expects, so colours arrive unchanged.
    """
    import cv2  # lazy: OpenCV is heavy

    frame = checked(frame_bgr)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    frame = downscale(frame, max_side)
    h, w = frame.shape[:2]
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    data = base64.b64encode(buf.tobytes()).decode("ascii")
    return JpegImage(f"data:image/jpeg;base64,{data}", w, h, int(buf.size))
