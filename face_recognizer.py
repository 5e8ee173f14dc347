"""Who is on screen: a known-faces library and per-frame face recognition.

The loop calls ``FaceRecognizer.recognize(frame)`` and gets our own ``FaceMatch`` records
back; nothing from dlib leaves this module. face_recognition (dlib plus ~130 MB of models)
and OpenCV are imported in ``load()``, never at import time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from errors import BackendUnavailable, InputError, SummarizerError
from stats import describe

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"

# Formats PIL (face_recognition.load_image_file) reads reliably as photos.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Tolerance 0.6 (face_recognition's default) matched small (36-52 px) crowd faces to the
# wrong person at distances 0.57-0.60 on our clips; at 0.5 there were no false matches
# while real matches sat at 0.07-0.35 (see ../shared/data/README.md).
DEFAULT_TOLERANCE = 0.5

# Detection cost grows with the pixels HOG scans; encoding (~80-100 ms a face) does not
# depend on size. Detecting at 0.5 with upsample 1 scans a quarter of the full-frame
# pixels; bench/bench_faces.py prints the time and recall behind this choice.
DEFAULT_SCALE = 0.5

# Bump when anything that changes a cached encoding changes (detector use, encoder).
_CACHE_VERSION = "v1"
# Percentiles come from the most recent frames only, so a day-long run stays bounded.
_TIMING_WINDOW = 10_000


@dataclass(frozen=True)
class FaceMatch:
    """One face in a frame: who (or ``unknown``), how close, and where."""

    name: str
    distance: float | None  # to the closest known encoding; None with an empty library
    box: tuple[int, int, int, int]  # (top, right, bottom, left) in the original frame's pixels

    @property
    def known(self) -> bool:
        """True when the face matched someone in the library."""
        return self.name != UNKNOWN


@dataclass(frozen=True)
class SkippedImage:
    """A library file that gave no encoding, and why."""

    path: str
    reason: str


def default_cache_dir() -> Path:
    """Where encodings are cached: $XDG_CACHE_HOME (or ~/.cache)/real-time-summarizer/faces."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "real-time-summarizer" / "faces"


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


class FaceRecognizer:
    """Finds faces in frames and names those in the known-faces library."""

    def __init__(
        self,
        known_faces_dir: str | os.PathLike | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        model: str = "hog",
        upsample: int = 1,
        scale: float = DEFAULT_SCALE,
        cache_dir: str | os.PathLike | None = None,
        smoothing: tuple[int, int] | None = None,
    ) -> None:
        # Settings come from CLI options; the option name tells the user what to fix.
        if model not in ("hog", "cnn"):
            raise SummarizerError(f"face detector must be 'hog' or 'cnn', not {model!r}",
                                  option="--face-model")
        if not 0.0 <= tolerance <= 1.0:
            raise SummarizerError(f"face tolerance must be between 0 and 1, not {tolerance}",
                                  option="--face-tolerance")
        if not 0.0 < scale <= 1.0:
            raise SummarizerError(f"face detection scale must be in (0, 1], not {scale}",
                                  option="--face-scale")
        if upsample < 0:
            raise SummarizerError(f"face upsample count must be 0 or more, not {upsample}",
                                  option="--face-upsample")
        if smoothing is not None and not 1 <= smoothing[0] <= smoothing[1]:
            raise SummarizerError(f"face smoothing (k, n) needs 1 <= k <= n, not {smoothing}",
                                  option="--face-smoothing")
        self.known_faces_dir = (
            Path(known_faces_dir).expanduser() if known_faces_dir is not None else None
        )
        self.tolerance = float(tolerance)
        self.model = model
        self.upsample = int(upsample)
        self.scale = float(scale)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.smoothing = smoothing

        self._fr: Any = None  # the face_recognition module, once loaded
        self._cv2: Any = None
        # (names, encodings): one name per row; swapped as one object so a reload never
        # pairs old names with new rows under a running recognize().
        self._refs: tuple[list[str], np.ndarray] = ([], np.zeros((0, 128)))
        self.skipped: list[SkippedImage] = []
        self.library: dict[str, int] = {"images": 0, "encoded": 0, "from_cache": 0, "skipped": 0}
        self._cache_warned = False

        self._load_lock = threading.Lock()
        # dlib's detectors and encoder are not safe for concurrent use (dlib docs), and on
        # a 2-core machine parallel dlib calls would gain little anyway.
        self._dlib_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._recent: deque[frozenset[str]] = deque(maxlen=smoothing[1] if smoothing else 1)
        self._frames = 0
        self._faces = 0
        self._known = 0
        self._unknown = 0
        self._suppressed = 0
        self._seen: Counter[str] = Counter()
        self._ms: deque[float] = deque(maxlen=_TIMING_WINDOW)

    # ------------------------------------------------------------------ library
    @property
    def known_names(self) -> list[str]:
        """Sorted names of the people in the library."""
        return sorted(set(self._refs[0]))

    @property
    def encodings_per_name(self) -> dict[str, int]:
        """How many reference encodings each known person has."""
        return dict(Counter(self._refs[0]))

    def load(self) -> FaceRecognizer:
        """Import face_recognition and load (or re-load) the known-faces library."""
        with self._load_lock:
            if self._fr is None:
                import cv2  # noqa: PLC0415 - keep `--help` fast

                self._cv2 = cv2
                self._fr = _import_face_recognition()
                if self.model == "cnn":
                    self._warn_if_cnn_on_cpu()
            self._load_library()
        return self

    def _warn_if_cnn_on_cpu(self) -> None:
        import dlib  # noqa: PLC0415 - already imported by face_recognition

        if not getattr(dlib, "DLIB_USE_CUDA", False):
            logger.warning(
                "face detector 'cnn' runs on the CPU here (dlib built without CUDA): "
                "expect seconds a frame; use 'hog' on machines without a GPU"
            )

    def _load_library(self) -> None:
        folder = self.known_faces_dir
        names: list[str] = []
        encodings: list[np.ndarray] = []
        self.skipped = []
        self.library = {"images": 0, "encoded": 0, "from_cache": 0, "skipped": 0}
        self._cache_warned = False
        if folder is None:
            logger.info("no known-faces folder given: every face will be reported as unknown")
        elif not folder.exists():
            raise InputError(
                f"known-faces folder {folder} does not exist: give a folder of name.jpg "
                "images (or one subfolder of images per person)",
                option="--known-faces",
            )
        elif not folder.is_dir():
            raise InputError(
                f"known-faces path {folder} is not a folder: give a folder of name.jpg "
                "images (or one subfolder of images per person)",
                option="--known-faces",
            )
        else:
            try:
                files = self._library_files(folder)
            except OSError as exc:
                raise InputError(
                    f"cannot read the known-faces folder {folder}: {exc.strerror or exc}",
                    option="--known-faces",
                ) from exc
            cache = self._cache_ready()
            for name, path in files:
                encoding = self._library_encoding(path, cache)
                if encoding is not None:
                    names.append(name)
                    encodings.append(encoding)
            if not names:
                logger.warning(
                    "known-faces folder %s has no usable face images: every face will be "
                    "reported as unknown", folder,
                )
            else:
                logger.info(
                    "known faces: %d people, %d images (%d encoded, %d from cache, %d skipped)",
                    len(set(names)), len(names), self.library["encoded"],
                    self.library["from_cache"], self.library["skipped"],
                )
        self._refs = (names, np.array(encodings) if encodings else np.zeros((0, 128)))

    def _library_files(self, folder: Path) -> list[tuple[str, Path]]:
        """(name, path) pairs: name.jpg is one image of `name`; name/ holds several."""
        found: list[tuple[str, Path]] = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue  # .DS_Store and friends are not meant as faces
            if entry.is_dir():
                for image in sorted(entry.iterdir()):
                    if image.name.startswith("."):
                        continue
                    if image.is_dir():
                        self._skip(image, "nested folders are not read (one level per person)")
                    elif self._supported(image):
                        found.append((entry.name, image))
            elif self._supported(entry):
                found.append((entry.stem, entry))
        return found

    def _supported(self, path: Path) -> bool:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return True
        self._skip(path, f"unsupported format {path.suffix or '(no extension)'!r}")
        return False

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(SkippedImage(str(path), reason))
        self.library["skipped"] += 1
        logger.warning("known faces: skipping %s: %s", path, reason)

    def _cache_ready(self) -> Path | None:
        """The cache folder, created if needed; None (with a note) when it is not writable."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("face encodings will not be cached (%s: %s)", self.cache_dir, exc)
            return None
        return self.cache_dir

    def _cache_file(self, cache: Path, data: bytes) -> Path:
        # The key covers the image bytes and every setting that changes the encoding, so
        # an edited image or another detector never reads a stale entry.
        digest = hashlib.sha256(data).hexdigest()
        return cache / f"{digest}-{_CACHE_VERSION}-{self.model}-u{self.upsample}.json"

    def _library_encoding(self, path: Path, cache: Path | None) -> np.ndarray | None:
        """The encoding of the one face in `path` (cached by content), or None if skipped."""
        self.library["images"] += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._skip(path, f"unreadable ({exc.strerror or exc})")
            return None
        entry_file = self._cache_file(cache, data) if cache is not None else None
        entry = _read_cache(entry_file) if entry_file is not None else None
        if entry is None:
            entry = self._encode_library_image(path, data)
            if entry is None:
                return None  # unreadable image: not cached, so a fixed file is retried
            self.library["encoded"] += 1
            if entry_file is not None and not _write_cache(entry_file, entry):
                if not self._cache_warned:  # warn once a load, not once an image
                    self._cache_warned = True
                    logger.warning(
                        "could not write face encodings to the cache %s: they will be "
                        "encoded again on the next start", entry_file.parent,
                    )
        else:
            self.library["from_cache"] += 1
        if entry["faces"] != 1:
            what = "no face" if entry["faces"] == 0 else f"{entry['faces']} faces"
            self._skip(path, f"{what} found (need exactly one face per image)")
            return None
        return np.asarray(entry["encoding"], dtype=np.float64)

    def _encode_library_image(self, path: Path, data: bytes) -> dict | None:
        """Detect and encode at full size: reference photos are few, accuracy matters."""
        import io  # noqa: PLC0415

        try:
            image = self._fr.load_image_file(io.BytesIO(data))
        except Exception as exc:  # PIL raises several types for broken or odd files
            self._skip(path, f"unreadable image ({type(exc).__name__}: {exc})")
            return None
        with self._dlib_lock:
            boxes = self._fr.face_locations(image, self.upsample, self.model)
            if len(boxes) != 1:
                return {"faces": len(boxes)}
            encoding = self._fr.face_encodings(image, boxes)[0]
        return {"faces": 1, "encoding": [float(v) for v in encoding]}

    # ------------------------------------------------------------------ frames
    def recognize(self, frame_bgr: np.ndarray) -> list[FaceMatch]:
        """Faces in one BGR (or grey / BGRA) frame, boxes in that frame's pixel coordinates."""
        if self._fr is None:
            self.load()
        started = time.perf_counter()
        rgb = self._to_rgb(frame_bgr)
        boxes = self._detect(rgb)
        with self._dlib_lock:
            # Encode on the full-resolution pixels: encodings from a downscaled face drift
            # (0.13 at 1/2, 0.32 at 1/4 from the full-size encoding), enough to lose a match.
            encodings = self._fr.face_encodings(rgb, boxes) if boxes else []
        # Left to right, so the names reach the VLM prompt in a stable order.
        matches = sorted(
            (self._match(box, enc) for box, enc in zip(boxes, encodings)),
            key=lambda m: (m.box[3], m.box[0]),
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with self._state_lock:
            if self.smoothing is not None:
                matches = self._smooth(matches)
            self._frames += 1
            self._faces += len(matches)
            for m in matches:
                if m.known:
                    self._known += 1
                    self._seen[m.name] += 1
                else:
                    self._unknown += 1
            self._ms.append(elapsed_ms)
        return matches

    def _to_rgb(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise ValueError("recognize() needs a uint8 numpy image (an OpenCV frame)")
        # cvtColor gives a fresh contiguous array: a [:, :, ::-1] view breaks dlib's encoder.
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        if frame.ndim == 3 and frame.shape[2] == 4:
            return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
        if frame.ndim == 3 and frame.shape[2] == 3:
            return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        raise ValueError(f"recognize() needs a BGR, BGRA or grey frame, not shape {frame.shape}")

    def _detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
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

    def _match(self, box: tuple[int, int, int, int], encoding: np.ndarray) -> FaceMatch:
        names, references = self._refs
        if not names:
            return FaceMatch(UNKNOWN, None, box)
        # Same Euclidean distance as face_recognition.face_distance, one person per row.
        distances = np.linalg.norm(references - encoding, axis=1)
        best = int(np.argmin(distances))
        distance = float(distances[best])
        name = names[best] if distance <= self.tolerance else UNKNOWN
        return FaceMatch(name, round(distance, 4), box)

    def _smooth(self, matches: list[FaceMatch]) -> list[FaceMatch]:
        """Report a name only once it held in k of the last n processed frames."""
        k, _ = self.smoothing
        self._recent.append(frozenset(m.name for m in matches if m.known))
        held = Counter(name for names in self._recent for name in names)
        out = []
        for m in matches:
            if m.known and held[m.name] < k:
                self._suppressed += 1
                m = FaceMatch(UNKNOWN, m.distance, m.box)
            out.append(m)
        return out

    # ------------------------------------------------------------------ statistics
    @property
    def stats(self) -> dict:
        """Frames, faces, known/unknown counts, names seen and ms per frame (avg/p50/p95...)."""
        with self._state_lock:
            return {
                "frames": self._frames,
                "faces": self._faces,
                "known": self._known,
                "unknown": self._unknown,
                "suppressed_by_smoothing": self._suppressed,
                "names": dict(self._seen),
                "ms_per_frame": describe(self._ms),
                "library": {**self.library, "people": len(self.known_names)},
            }

    def format_stats(self) -> str:
        """A short human-readable block for the exit report."""
        s = self.stats
        lib = s["library"]
        lines = [
            f"faces: {s['frames']} frames, {s['faces']} faces "
            f"({s['known']} known, {s['unknown']} unknown); library: {lib['people']} people, "
            f"{lib['images']} images, {lib['skipped']} skipped"
        ]
        ms = s["ms_per_frame"]
        if ms["p50"] is not None:
            lines.append(f"  time a frame: p50 {ms['p50']:.0f} ms  p95 {ms['p95']:.0f} ms")
        if s["names"]:
            seen = ", ".join(f"{n} x{c}" for n, c in sorted(s["names"].items()))
            lines.append(f"  seen: {seen}")
        if s["suppressed_by_smoothing"]:
            lines.append(f"  held back by smoothing: {s['suppressed_by_smoothing']}")
        return "\n".join(lines)


def _read_cache(path: Path) -> dict | None:
    """A cached library entry, or None when absent or damaged (then it is re-encoded)."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("faces"), int):
        return None
    if entry["faces"] == 1 and len(entry.get("encoding") or ()) != 128:
        return None
    return entry


def _write_cache(path: Path, entry: dict) -> bool:
    """Write atomically, so two processes starting together never read half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True

