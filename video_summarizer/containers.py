"""What a container file says about itself that OpenCV does not tell: whether it is whole.

OpenCV states a Matroska/WebM file's frame count as its duration times the frame rate, and
the duration is the longest stream's: a PCM audio track that outlasts the video makes a whole
file look cut ("138 of 154 frames decoded"). A Matroska file names its own length (the
Segment's size), so a cut copy is told from a whole one by reading a few bytes.
"""
from __future__ import annotations

import os
from typing import BinaryIO

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
SEGMENT_ID = b"\x18\x53\x80\x67"


def _vint(fh: BinaryIO) -> tuple[int, bool] | None:
    """An EBML size: (value, whether it says "unknown": all its value bits set), or None."""
    first = fh.read(1)
    if not first or first[0] == 0:
        return None
    length = 9 - first[0].bit_length()
    rest = fh.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = first[0] & ((1 << (8 - length)) - 1)
    for byte in rest:
        value = (value << 8) | byte
    return value, value == (1 << (7 * length)) - 1


def matroska_whole(path: str | os.PathLike) -> bool | None:
    """True when a Matroska/WebM file holds every byte its Segment states, False when it ends
    before that (a cut copy); None when it is no Matroska file or its Segment states no size
    (written live to a pipe)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if fh.read(4) != EBML_MAGIC:
                return None
            header = _vint(fh)
            if header is None:
                return None
            fh.seek(header[0], os.SEEK_CUR)  # past the EBML header
            if fh.read(4) != SEGMENT_ID:
                return None
            segment = _vint(fh)
            if segment is None or segment[1]:
                return None
            return fh.tell() + segment[0] <= size
    except OSError:
        return None
