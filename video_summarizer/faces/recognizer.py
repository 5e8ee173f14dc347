"""Per-frame face recognition: detection, encoding and matching against the known-faces library.

The loop calls ``FaceRecognizer.recognize(frame)`` and gets our own ``FaceMatch`` records
back; nothing from dlib leaves this package. The recognizer composes the known-faces library
(``KnownFaces``: photos -> cached encodings) and the identity tracker (``IdentityTracker``: a
face seen in the previous frame keeps its identity without being encoded again; names
smoothed over frames). face_recognition (dlib plus ~130 MB of models) and OpenCV are
imported in ``load()``, never at import time.
"""
from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from video_summarizer import defaults as D
from video_summarizer.backends import FaceModel
from video_summarizer.errors import BackendUnavailable, SummarizerError
from video_summarizer.faces.identity import DEFAULT_REUSE, IdentityReuse, IdentityTracker, Track
from video_summarizer.faces.known import KnownFaces, SkippedImage, UnreadableImage, default_cache_dir
from video_summarizer.faces.match import UNKNOWN, Box, FaceMatch
from video_summarizer.frames import to_rgb
from video_summarizer.limits import DEFAULT_MAX_PIXELS, FACE_IMAGES_MAX
from video_summarizer.stats import describe

logger = logging.getLogger(__name__)

# Tolerance 0.6 (face_recognition's default) matched small (36-52 px) crowd faces to the
# wrong person at distances 0.57-0.60 on our clips; at 0.5 there were no false matches
# while real matches sat at 0.07-0.35 (see ../shared/data/README.md).
DEFAULT_TOLERANCE = D.FACE_TOLERANCE

# Detection cost grows with the pixels HOG scans; encoding (~80-100 ms a face) does not
# depend on size. Detecting at 0.5 with upsample 1 scans a quarter of the full-frame
# pixels; bench/bench_faces.py prints the time and recall behind this choice.
DEFAULT_SCALE = D.FACE_SCALE

# Percentiles come from the most recent frames only, so a day-long run stays bounded.
_TIMING_WINDOW = 10_000


def _import_face_recognition() -> Any:
    """Import face_recognition, turning its silent quit() and import errors into ours."""
    try:
        import face_recognition  # noqa: PLC0415 - heavy: loads dlib and its models
    except SystemExit as exc:
        # face_recognition_models calls quit() (exit code 0) when pkg_resources is missing.
        raise BackendUnavailable(
            "face_recognition could not load its models (pkg_resources missing?): "
            "install setuptools<80.9 and face_recognition_models",
            option="--known-faces",
        ) from exc
    except ImportError as exc:
        raise BackendUnavailable(
            f"face_recognition is not installed ({exc}): "
            "pip install dlib-bin face_recognition_models && "
            "pip install --no-deps face_recognition",
            option="--known-faces",
        ) from exc
    return face_recognition


def _check_settings(model: str, tolerance: float, scale: float, upsample: int,
                    smoothing: tuple[int, int] | None) -> None:
    """Model and tolerance come from CLI options: the option name tells the user what to fix.
    Scale, upsample and smoothing have no option (the CLI leaves their defaults): a bad
    value is a programming error, said as such."""
    if model not in ("hog", "cnn"):
        raise SummarizerError(f"face detector must be 'hog' or 'cnn', not {model!r}", option="--face-model")
    if not 0.0 <= tolerance <= 1.0:
        raise SummarizerError(f"face tolerance must be between 0 and 1, not {tolerance}",
                              option="--face-tolerance")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"FaceRecognizer(scale=...) must be in (0, 1], not {scale}")
    if upsample < 0:
        raise ValueError(f"FaceRecognizer(upsample=...) must be 0 or more, not {upsample}")
    if smoothing is not None and not 1 <= smoothing[0] <= smoothing[1]:
        raise ValueError(f"FaceRecognizer(smoothing=(k, n)) needs 1 <= k <= n, not {smoothing}")


class FaceRecognizer(FaceModel):
    """Finds faces in frames and names those in the known-faces library."""

    def __init__(
        self,
        known_faces_dir: str | os.PathLike | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        model: str = D.FACE_MODEL,
        upsample: int = 1,
        scale: float = DEFAULT_SCALE,
        cache_dir: str | os.PathLike | None = None,
        smoothing: tuple[int, int] | None = None,
        reuse: IdentityReuse | None = DEFAULT_REUSE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_images: int = FACE_IMAGES_MAX,
    ) -> None:
        _check_settings(model, tolerance, scale, upsample, smoothing)
        self.known_faces_dir = Path(known_faces_dir).expanduser() if known_faces_dir is not None else None
        self.tolerance = float(tolerance)
        self.model = model
        self.upsample = int(upsample)
        self.scale = float(scale)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.known = KnownFaces(self.known_faces_dir, cache_dir=self.cache_dir,
                                cache_key=f"{model}-u{self.upsample}", encode=self._encode_reference,
                                max_pixels=max_pixels, max_images=max_images)
        self.identities = IdentityTracker(reuse, smoothing, tolerance=self.tolerance)  # reuse None: encode every face
        self._fr: Any = None  # the face_recognition module, once loaded
        self._cv2: Any = None
        self._load_lock = threading.Lock()
        # dlib's detectors and encoder are not safe for concurrent use (dlib docs), and on
        # a 2-core machine parallel dlib calls would gain little anyway.
        self._dlib_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._counts = Counter({"frames": 0, "faces": 0, "known": 0, "unknown": 0, "encoded": 0, "reused": 0})
        self._seen: Counter[str] = Counter()
        self._ms: deque[float] = deque(maxlen=_TIMING_WINDOW)

    # ------------------------------------------------------------------ library
    @property
    def known_names(self) -> list[str]:
        """Sorted names of the people in the library."""
        return self.known.names

    @property
    def encodings_per_name(self) -> dict[str, int]:
        """How many reference encodings each known person has."""
        return self.known.encodings_per_name

    @property
    def library(self) -> dict[str, int]:
        """Library images looked at, encoded now, read from the cache, skipped (the last load)."""
        return self.known.counts

    @property
    def skipped(self) -> list[SkippedImage]:
        """The library files that gave no encoding, and why (the last load)."""
        return self.known.skipped

    def load(self) -> FaceRecognizer:
        """Import face_recognition and load (or re-load) the known-faces library."""
        with self._load_lock:
            if self._fr is None:
                import cv2  # noqa: PLC0415 - keep `--help` fast

                self._cv2 = cv2
                self._fr = _import_face_recognition()
                if self.model == "cnn":
                    self._warn_if_cnn_on_cpu()
            self.known.load()
        return self

    def _warn_if_cnn_on_cpu(self) -> None:
        import dlib  # noqa: PLC0415 - already imported by face_recognition

        # An edge probe on dlib's build: older dlib builds lack the flag (then: no CUDA).
        if not getattr(dlib, "DLIB_USE_CUDA", False):
            logger.warning(
                "face detector 'cnn' runs on the CPU here (dlib built without CUDA): "
                "expect seconds a frame; use 'hog' on machines without a GPU"
            )

    def _encode_reference(self, path: Path, data: bytes) -> dict:
        """Detect and encode a library photo at full size: reference photos are few, accuracy matters."""
        buffer = io.BytesIO(data)
        try:
            image = self._fr.load_image_file(buffer)
        except Exception as exc:  # PIL raises several types for broken or odd files
            # PIL names the file it read, here a buffer (<_io.BytesIO object at 0x...>): the path says more
            raise UnreadableImage(f"{type(exc).__name__}: {str(exc).replace(repr(buffer), str(path))}") from exc
        with self._dlib_lock:
            boxes = self._fr.face_locations(image, self.upsample, self.model)
            if len(boxes) != 1:
                return {"faces": len(boxes)}
            encoding = self._fr.face_encodings(image, boxes)[0]
        return {"faces": 1, "encoding": [float(v) for v in encoding]}

    # ------------------------------------------------------------------ frames
    def recognize(self, frame_bgr: np.ndarray, timestamp: float | None = None) -> list[FaceMatch]:
        """Faces in one BGR (or grey / BGRA) frame, boxes in that frame's pixel coordinates.

        ``timestamp`` is the frame's time in seconds (video time for files); identity reuse
        needs it to know which frames are adjacent. Without it every face is encoded.
        """
        if self._fr is None:
            self.load()
        started = time.perf_counter()
        if timestamp is not None and not math.isfinite(timestamp):
            timestamp = None  # a NaN would pass every "close in time" comparison
        # cvtColor (in frames.to_rgb) gives a fresh contiguous array: a [:, :, ::-1] view breaks dlib's encoder.
        rgb = to_rgb(frame_bgr, require_uint8=True)
        boxes = self._detect(rgb)
        names, references = self.known.references()  # one snapshot: a reload mid-frame changes nothing here
        carried = self.identities.carried_over(rgb, boxes, timestamp, references)
        fresh = [box for box, old in zip(boxes, carried) if old is None]
        tracks = self.identities.tracks(rgb, boxes, carried, self._encode(rgb, fresh, names), timestamp)
        # Left to right, so the names reach the VLM prompt in a stable order.
        matches = sorted((self._match(t.box, t.encoding, names, references, reused=t.reuses > 0) for t in tracks),
                         key=lambda m: (m.box[3], m.box[0]))
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        matches = self.identities.smooth(matches)
        self.identities.remember(rgb.shape, tracks, timestamp)
        self._count(matches, tracks, len(fresh), bool(names), elapsed_ms)
        return matches

    def boxes(self, frame_bgr: np.ndarray) -> list[Box]:
        """Face boxes only, to blur a clip's other frames: no encoding, no identity kept (a small
        copy costs detection on its pixels alone, so a clip's copies cost about one frame)."""
        if self._fr is None:
            self.load()
        return self._detect(to_rgb(frame_bgr, require_uint8=True))

    def _encode(self, rgb: np.ndarray, boxes: list[Box], names: list[str]) -> list[np.ndarray | None]:
        """Encodings of the faces in these boxes; none with an empty library (every face is unknown)."""
        if not boxes or not names:
            return [None] * len(boxes)
        with self._dlib_lock:
            # Encode on the full-resolution pixels: encodings from a downscaled face drift
            # (0.13 at 1/2, 0.32 at 1/4 from the full-size encoding), enough to lose a match.
            return list(self._fr.face_encodings(rgb, boxes))

    def _detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes found on a downscaled copy, mapped back to full-frame pixels."""
        height, width = rgb.shape[:2]
        if self.scale < 1.0:
            size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
            small = self._cv2.resize(rgb, size, interpolation=self._cv2.INTER_AREA)
            sx, sy = width / size[0], height / size[1]  # exact ratios, not the rounded scale
        else:
            small, sx, sy = rgb, 1.0, 1.0
        with self._dlib_lock:
            found = self._fr.face_locations(small, self.upsample, self.model)
        boxes = []
        for top, right, bottom, left in found:
            box = (
                max(0, int(round(top * sy))),
                min(width, int(round(right * sx))),
                min(height, int(round(bottom * sy))),
                max(0, int(round(left * sx))),
            )
            if box[2] > box[0] and box[1] > box[3]:
                boxes.append(box)
        return boxes

    def _match(self, box: Box, encoding: np.ndarray | None, names: list[str], references: np.ndarray,
               *, reused: bool = False) -> FaceMatch:
        if not names or encoding is None:
            return FaceMatch(UNKNOWN, None, box, reused)
        # Same Euclidean distance as face_recognition.face_distance, one person per row.
        distances = np.linalg.norm(references - encoding, axis=1)
        best = int(np.argmin(distances))
        distance = float(distances[best])
        name = names[best] if distance <= self.tolerance else UNKNOWN
        return FaceMatch(name, round(distance, 4), box, reused)

    def _count(self, matches: list[FaceMatch], tracks: list[Track], encoded: int, library: bool,
               elapsed_ms: float) -> None:
        with self._state_lock:
            c = self._counts
            c["frames"] += 1
            c["faces"] += len(matches)
            if library:
                c["reused"] += sum(1 for t in tracks if t.reuses > 0)
                c["encoded"] += encoded
            for m in matches:
                if m.known:
                    c["known"] += 1
                    self._seen[m.name] += 1
                else:
                    c["unknown"] += 1
            self._ms.append(elapsed_ms)

    # ------------------------------------------------------------------ statistics
    def counts(self) -> dict:
        """Frames, faces (encoded / reused), known/unknown, names seen, ms per frame and the library."""
        with self._state_lock:
            c = self._counts
            return {
                "frames": c["frames"],
                "faces": c["faces"],
                # Faces whose encoding was computed / carried over from the previous frame;
                # with an empty library neither happens (every face is unknown unencoded).
                "encoded": c["encoded"],
                "reused": c["reused"],
                "known": c["known"],
                "unknown": c["unknown"],
                "suppressed_by_smoothing": self.identities.suppressed,
                "names": dict(self._seen),
                "ms_per_frame": describe(self._ms),
                "library": {**self.library, "people": len(self.known_names)},
            }

    @property
    def stats(self) -> dict:  # type: ignore[override]  # a dict of counts, not ModelStats
        """The same as counts(): what the exit report's stats event and Ray's workers read."""
        return self.counts()

    def format_stats(self) -> str:
        """A short human-readable block for the exit report."""
        s = self.counts()
        lib = s["library"]
        lines = [
            f"faces: {s['frames']} frames, {s['faces']} faces "
            f"({s['known']} known, {s['unknown']} unknown); library: {lib['people']} people, "
            f"{lib['images']} images, {lib['skipped']} skipped"
        ]
        ms = s["ms_per_frame"]
        if ms["p50"] is not None:
            lines.append(f"  time a frame: p50 {ms['p50']:.0f} ms  p95 {ms['p95']:.0f} ms")
        if s["encoded"] or s["reused"]:
            share = s["reused"] / (s["encoded"] + s["reused"])
            lines.append(f"  identities: {s['encoded']} encoded, {s['reused']} reused from the "
                         f"previous frame ({share:.0%})")
        if s["names"]:
            seen = ", ".join(f"{n} x{c}" for n, c in sorted(s["names"].items()))
            lines.append(f"  seen: {seen}")
        if s["suppressed_by_smoothing"]:
            lines.append(f"  held back by smoothing: {s['suppressed_by_smoothing']}")
        return "\n".join(lines)


