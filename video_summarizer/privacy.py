"""Faces stay local: blur detected faces before a frame leaves this machine.

Recognition runs on the original frame, so the names still reach the caption model as text;
only the copy sent to the model (or saved) has its faces made unrecognizable. ``blur_faces``
pixelates each face box, grown by a margin (detector boxes are tight: hair, ears and jaw
identify people too), then smooths the blocks so no face detector finds a face there.
``is_local_endpoint`` decides the default: blur when the caption model is not on this machine.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable
from urllib.parse import urlsplit

import numpy as np

MARGIN = 0.3  # each side of a face box grows by this share of the box size
BLOCKS = 6  # a face becomes about BLOCKS x BLOCKS flat squares


def blur_faces(frame: np.ndarray, boxes: Iterable[tuple[int, int, int, int]],
               margin: float = MARGIN) -> tuple[np.ndarray, int]:
    """A copy of frame with every (top, right, bottom, left) box pixelated; and how many were."""
    import cv2  # lazy: OpenCV is heavy

    out = frame.copy()
    h, w = out.shape[:2]
    count = 0
    for top, right, bottom, left in boxes:
        grow_y, grow_x = int((bottom - top) * margin), int((right - left) * margin)
        y0, y1 = max(0, top - grow_y), min(h, bottom + grow_y)
        x0, x1 = max(0, left - grow_x), min(w, right + grow_x)
        if y1 <= y0 or x1 <= x0:
            continue
        region = out[y0:y1, x0:x1]
        small = cv2.resize(region, (BLOCKS, BLOCKS), interpolation=cv2.INTER_AREA)
        blocks = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x1 - x0, y1 - y0) // BLOCKS) | 1)  # odd, about one block wide
        out[y0:y1, x0:x1] = cv2.GaussianBlur(blocks, (k, k), 0)
        count += 1
    return out, count


def is_local_endpoint(url: str | None) -> bool:
    """True when url's host is this machine's loopback (localhost, 127.0.0.0/8, ::1)."""
    if not url:
        return True  # no endpoint: the model runs in this process
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:  # a name: local only if every address it resolves to is loopback
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
