"""An optional OpenCV window: the live frame, the latest caption, the summary, face boxes."""
from __future__ import annotations

import logging
import os
import sys
import textwrap
from typing import Any

log = logging.getLogger(__name__)

WINDOW = "real-time summarizer (q or Esc quits)"


def display_unavailable_reason() -> str | None:
    """Why no window can be shown here, or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV build has no GUI (opencv-python-headless?); install opencv-python"
    return None


class Display:
    """Draws the newest frame with the run's latest caption, faces and summary."""

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2

    def show(self, image: Any, caption: str, summary: str, faces: list) -> bool:
        """Draw one frame; False when the user pressed q or Esc."""
        cv2 = self._cv2
        canvas = image.copy()
        for m in faces:
            top, right, bottom, left = m.box
            colour = (0, 200, 0) if m.name != "unknown" else (0, 160, 255)
            cv2.rectangle(canvas, (left, top), (right, bottom), colour, 2)
            cv2.putText(canvas, m.name, (left, max(12, top - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        y = canvas.shape[0] - 10
        lines = textwrap.wrap(caption, 80)[:3] + (["--"] + textwrap.wrap(summary, 80)[:4] if summary else [])
        for line in reversed(lines):
            cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
            cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            y -= 18
        cv2.imshow(WINDOW, canvas)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        """Close the window."""
        try:
            self._cv2.destroyWindow(WINDOW)
            self._cv2.waitKey(1)
        except self._cv2.error:
            pass
