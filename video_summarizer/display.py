"""An optional OpenCV window: the live frame, the latest caption, the summary, face boxes."""
from __future__ import annotations

import logging
import os
import sys
import textwrap
import time
from typing import Any

from video_summarizer.timecodes import format_video_time

log = logging.getLogger(__name__)

WINDOW = "real-time summarizer (q or Esc quits)"
# Face boxes come from the last recognized frame; drawn on later frames only this close to it,
# so a box never lands on another shot after a cut (names are still listed below).
BOX_MAX_AGE_S = 0.5


def display_unavailable_reason() -> str | None:
    """Why no window can be shown here, or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    import cv2

    # cv2 points its bundled Qt at a font folder it does not ship, and Qt complains on every
    # start: use the system's fonts instead when there are some.
    if not os.path.isdir(os.environ.get("QT_QPA_FONTDIR", "")):
        for fonts in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
            if os.path.isdir(fonts):
                os.environ["QT_QPA_FONTDIR"] = fonts
                break
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV build has no GUI (opencv-python-headless?); install opencv-python"
    return None


def _clock(t: float) -> str:
    """Video time as mm:ss; a live wall-clock (epoch) time as hh:mm:ss UTC."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) if t > 1e8 else format_video_time(t)


class Display:
    """Draws the newest frame with the run's latest caption, faces and summary."""

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self._sized = False

    def show(self, image: Any, t: float, caption: tuple[float, str], summary: str,
             faces: tuple[float, list]) -> bool:
        """Draw one frame (at time t) with the newest (time, value) results; False on q or Esc."""
        cv2 = self._cv2
        canvas = image.copy()
        faces_t, matches = faces
        for m in matches if 0 <= t - faces_t <= BOX_MAX_AGE_S else []:
            top, right, bottom, left = m.box
            colour = (0, 200, 0) if m.name != "unknown" else (0, 160, 255)
            cv2.rectangle(canvas, (left, top), (right, bottom), colour, 2)
            cv2.putText(canvas, m.name, (left, max(12, top - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        y = canvas.shape[0] - 10
        caption_t, text = caption
        names = sorted({m.name for m in matches if m.name != "unknown"})
        lines = textwrap.wrap(f"[{_clock(caption_t)}] {text}", 80)[:3] if text else []
        lines += [f"faces at [{_clock(faces_t)}]: {', '.join(names)}"] if names else []
        lines += ["--"] + textwrap.wrap(summary, 80)[:4] if summary else []
        for line in reversed(lines):
            cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
            cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            y -= 18
        if not self._sized:  # a resizable window opens small: start at the frame's own size
            cv2.resizeWindow(WINDOW, canvas.shape[1], canvas.shape[0])
            self._sized = True
        cv2.imshow(WINDOW, canvas)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        """Close the window."""
        try:
            self._cv2.destroyWindow(WINDOW)
            self._cv2.waitKey(1)
        except self._cv2.error:
            pass
