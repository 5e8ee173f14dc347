"""Bounds on what the project reads from outside, checked before the expensive part.

A frame's size is read from the container or the image header before anything is decoded
(a 750 KB PNG can decode to 16000x16000, 768 MB of pixels); files the project only expects
to be small photos (known faces, dataset images) are read only when they are regular files
of a bounded size, so a FIFO or ``/dev/zero`` under a ``.jpg`` name is said, not read forever.
Pillow is imported inside the functions, never at import time.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path

from video_summarizer import defaults as D

# 8K UHD: the largest frame a camera or a recording is expected to have.
DEFAULT_MAX_PIXELS = D.MAX_PIXELS
# What stdin may hold on disk (an MP4 or a still image is copied to a temporary file first).
DEFAULT_STDIN_MAX_MB = D.STDIN_MAX_MB
# Known faces: portrait photos, a few MB each; a library of a thousand people already takes
# minutes to encode on first use (~0.3 s an image).
FACE_IMAGE_MAX_BYTES = 20 * 1024 * 1024
FACE_IMAGES_MAX = 1000
# Dataset images are the JPEGs --dataset wrote (15-55 KB at 768 px).
DATASET_IMAGE_MAX_BYTES = 20 * 1024 * 1024

MAX_PIXELS_OPTION = "--max-pixels"


def pixels_problem(width: float, height: float, max_pixels: int | None) -> str | None:
    """Why a width x height frame is over --max-pixels, or None when it fits (or the size is unknown)."""
    w, h = int(width or 0), int(height or 0)
    if max_pixels is None or w <= 0 or h <= 0 or w * h <= max_pixels:
        return None
    return _over(f"{w}x{h}, {_pixels(w * h)}", max_pixels)


def _over(size: str, max_pixels: int) -> str:
    return f"{size}, more than {MAX_PIXELS_OPTION} {max_pixels} ({_pixels(max_pixels)}) allows"


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels" if n >= 100_000 else f"{n} pixels"


def image_pixels_problem(image: str | os.PathLike | bytes, max_pixels: int | None) -> str | None:
    """Why a still image is over --max-pixels, from its header only (nothing decoded); None when it fits.

    ValueError when Pillow cannot read the header (not an image, or a broken one).
    """
    from PIL import Image, UnidentifiedImageError  # lazy: only images need Pillow

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours decides, and says it in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        # Pillow refuses to open it at all (over twice its own limit), so the size is only in its message.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = _pixels(int(found.group(1))) if found else "too large for Pillow to open"
        return _over(size, max_pixels) if max_pixels is not None else None
    except UnidentifiedImageError:
        raise ValueError("not a JPEG, PNG, BMP, WebP or TIFF image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for broken headers
        raise ValueError(f"broken image header ({exc})") from None
    return pixels_problem(width, height, max_pixels)


def read_small_file(path: str | os.PathLike, max_bytes: int, *, follow_links: bool = True) -> bytes:
    """The bytes of a regular file of at most max_bytes; ValueError saying why not; OSError when unreadable.

    Opened without blocking (a FIFO would wait for a writer) and checked on the open file, so
    what is checked is what is read; reading stops at max_bytes + 1 even if the file grows.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"not a regular file ({_file_kind(mode)})")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes / 2**20:.0f} MB")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a plain file"


def inside(path: Path, folder: Path) -> bool:
    """Whether path is inside folder once every link in either is followed."""
    return path.resolve().is_relative_to(folder.resolve())
