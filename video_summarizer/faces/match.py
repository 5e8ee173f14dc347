"""The record a face model hands the loop: who, how close, where; never a dlib type."""
from __future__ import annotations

from dataclasses import dataclass, field

UNKNOWN = "unknown"

Box = tuple[int, int, int, int]  # (top, right, bottom, left) in the frame's pixels


@dataclass(frozen=True)
class FaceMatch:
    """One face in a frame: who (or ``unknown``), how close, and where."""

    name: str
    distance: float | None  # to the closest known encoding; None with an empty library
    box: Box  # (top, right, bottom, left) in the original frame's pixels
    # True when the encoding was carried over from the previous frame instead of computed.
    # Provenance, not identity: left out of ==, so a reused match equals a fresh one.
    reused: bool = field(default=False, compare=False)

    @property
    def known(self) -> bool:
        """True when the face matched someone in the library."""
        return self.name != UNKNOWN
