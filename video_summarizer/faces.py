"""Who is on screen: a known-faces library and per-frame face recognition.

The loop calls ``FaceRecognizer.recognize(frame)`` and gets our own ``FaceMatch`` records
back; nothing from dlib leaves this module. Given the frame's timestamp too, a face seen in
the previous frame can keep its identity without being encoded again (``IdentityReuse``).
face_recognition (dlib plus ~130 MB of models) and OpenCV are imported in ``load()``, never
at import time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from video_summarizer import defaults as D
from video_summarizer.errors import BackendUnavailable, InputError, SummarizerError
from video_summarizer.files import make_private_dir, open_private
from video_summarizer.frames import to_rgb
from video_summarizer.limits import (
    DEFAULT_MAX_PIXELS,
    FACE_IMAGE_MAX_BYTES,
    FACE_IMAGES_MAX,
    image_pixels_problem,
    read_small_file,
)
from video_summarizer.stats import describe

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"

# Formats PIL (face_recognition.load_image_file) reads reliably as photos.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Tolerance 0.6 (face_recognition's default) matched small (36-52 px) crowd faces to the
# wrong person at distances 0.57-0.60 on our clips; at 0.5 there were no false matches
# while real matches sat at 0.07-0.35 (see ../shared/data/README.md).
DEFAULT_TOLERANCE = D.FACE_TOLERANCE

# Detection cost grows with the pixels HOG scans; encoding (~80-100 ms a face) does not
# depend on size. Detecting at 0.5 with upsample 1 scans a quarter of the full-frame
# pixels; bench/bench_faces.py prints the time and recall behind this choice.
DEFAULT_SCALE = D.FACE_SCALE

# Identity reuse compares faces as tiny grey thumbnails (see IdentityReuse).
_THUMB_SIZE = 8

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
    # True when the encoding was carried over from the previous frame instead of computed.
    # Provenance, not identity: left out of ==, so a reused match equals a fresh one.
    reused: bool = field(default=False, compare=False)

    @property
    def known(self) -> bool:
        """True when the face matched someone in the library."""
        return self.name != UNKNOWN


@dataclass(frozen=True)
class IdentityReuse:
    """When a face may keep the encoding it had in the previous recognized frame.

    dlib's encoder (dlib-bin, no BLAS) costs ~77-79 ms a face at any detection scale,
    against ~21 ms for detecting at scale 0.5 in a 640x360 frame: on the Hamilton clip,
    every frame, encoding was two thirds of the time (135 faces in 275 frames; mean 60-63
    ms a frame, 0.42-0.46x of full frame). A face that is still in the same place and
    still looks the same a frame later is the same face: its encoding is carried over and
    matched again against the current library. There this encoded 38 of the 135 faces:
    mean 0.21-0.28x of full frame by the wall clock on a shared machine (CPU time
    0.24-0.26x), recall of the full-frame matches 0.974 (0.962 encoding every face;
    bench/bench_faces.py).

    Times are the frames' own timestamps (video time for files), never the wall clock:
    frames recognized back to back may be seconds apart in the video.
    """

    # Re-encode after this many reuses in a row, or once the encoding's frame is this
    # many seconds older than the current one: both bound drift. Over 4-8 frames of one
    # Hamilton face the distance to the nearest known face moved by up to 0.13 (p95 0.09).
    max_reuses: int = 8
    max_age_s: float = 0.5
    # Reuse only from a frame at most this far away in time, before or after (workers may
    # finish slightly out of order): about 3 frames at 30 fps. Frames the loop selects
    # seconds apart are always encoded afresh.
    max_gap_s: float = 0.1
    # Same place: box overlap with the previous face. Detection at 0.5 jitters between
    # HOG window sizes (86 and 104 px faces), so one face gave IoU 0.61-1.0 frame to frame.
    min_iou: float = 0.5
    # Still looks the same: 8x8 grey thumbnails of the old face and of the same region in
    # this frame, as mean absolute difference (0-255) and again with brightness and
    # contrast taken out (z-scores), which catches cuts between dark shots. On our clips a
    # face against itself one frame later passed both in 94% of pairs; a face against any
    # face of another clip passed in none of 2,416 pairs (lowest z difference 0.64); at
    # Hamilton's real cuts the places where its faces appear differed by z 0.63-1.38
    # (grey 21 at 0.63).
    max_grey_diff: float = 20.0
    max_shape_diff: float = 0.5
    # An unknown face is kept only while its distance sits above the tolerance by this
    # much per second since it was encoded (0.03 a frame at 30 fps). A near miss is often
    # a known person at a poor angle: Lin's distance hovers at 0.50-0.55 for seconds on
    # the Hamilton clip and moved by 0.016 (median) / 0.043 (p90) a frame, so a near miss
    # is looked at again before drift could carry it under the tolerance (kept like
    # matches instead, unknowns lost 22 of the 78 full-frame matches: recall 0.69). A match
    # is kept as it is: at tolerance 0.5 our clips gave no false matches, and each Hamilton
    # frame where a carried match outlived the full-frame verdict (16 frames, full-frame
    # distances 0.50-0.57) has Lin on screen (README: matches at tolerance 0.6).
    unknown_margin_per_s: float = 0.9

    def __post_init__(self) -> None:
        if self.max_reuses < 0 or min(self.max_age_s, self.max_gap_s, self.max_grey_diff,
                                      self.max_shape_diff, self.unknown_margin_per_s) < 0:
            raise SummarizerError(f"identity reuse settings must not be negative: {self}")
        if not 0.0 < self.min_iou <= 1.0:
            raise SummarizerError(f"identity reuse min_iou must be in (0, 1], not {self.min_iou}")


DEFAULT_REUSE = IdentityReuse()


@dataclass(frozen=True)
class _Track:
    """One face of the last recognized frame, as identity reuse needs it."""

    box: tuple[int, int, int, int]
    thumb: np.ndarray  # _THUMB_SIZE^2 grey pixels of the face, float32
    encoding: np.ndarray | None  # None when nothing was encoded (empty library)
    reuses: int  # reuses in a row since the encoding was computed
    encoded_at: float | None  # timestamp of the frame that computed it (None: not given)


@dataclass(frozen=True)
class _LastFrame:
    at: float  # the frame's timestamp
    shape: tuple[int, ...]
    tracks: tuple[_Track, ...]


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
        model: str = D.FACE_MODEL,
        upsample: int = 1,
        scale: float = DEFAULT_SCALE,
        cache_dir: str | os.PathLike | None = None,
        smoothing: tuple[int, int] | None = None,
        reuse: IdentityReuse | None = DEFAULT_REUSE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_images: int = FACE_IMAGES_MAX,
    ) -> None:
        # model and tolerance come from CLI options: the option name tells the user what to fix.
        # scale, upsample and smoothing have no option (the CLI leaves their defaults): a bad
        # value is a programming error, said as such.
        if model not in ("hog", "cnn"):
            raise SummarizerError(f"face detector must be 'hog' or 'cnn', not {model!r}",
                                  option="--face-model")
        if not 0.0 <= tolerance <= 1.0:
            raise SummarizerError(f"face tolerance must be between 0 and 1, not {tolerance}",
                                  option="--face-tolerance")
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"FaceRecognizer(scale=...) must be in (0, 1], not {scale}")
        if upsample < 0:
            raise ValueError(f"FaceRecognizer(upsample=...) must be 0 or more, not {upsample}")
        if smoothing is not None and not 1 <= smoothing[0] <= smoothing[1]:
            raise ValueError(f"FaceRecognizer(smoothing=(k, n)) needs 1 <= k <= n, not {smoothing}")
        self.known_faces_dir = (
            Path(known_faces_dir).expanduser() if known_faces_dir is not None else None
        )
        self.tolerance = float(tolerance)
        self.model = model
        self.upsample = int(upsample)
        self.scale = float(scale)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.smoothing = smoothing
        self.reuse = reuse  # None: encode every face in every frame
        self.max_pixels = max_pixels  # library images larger are skipped before decoding
        self.max_images = max_images  # library images past this many (in name order) are not read

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
        self._encoded = 0
        self._reused = 0
        self._last: _LastFrame | None = None

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
                    # the same counts as the exit report's "library:" line
                    "known faces: %d people, %d images, %d skipped; %d encoded now, %d from cache",
                    len(set(names)), self.library["images"], self.library["skipped"],
                    self.library["encoded"], self.library["from_cache"],
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
        if len(found) > self.max_images:
            left_out = len(found) - self.max_images
            self.library["images"] += left_out
            self.library["skipped"] += left_out
            logger.warning("known faces: only the first %d images of %s are read; %d more left out",
                           self.max_images, folder, left_out)
            found = found[:self.max_images]
        return found

    def _supported(self, path: Path) -> bool:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return True
        self.library["images"] += 1  # images = files looked at = used + skipped, in both report lines
        self._skip(path, f"unsupported format {path.suffix or '(no extension)'!r}")
        return False

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(SkippedImage(str(path), reason))
        self.library["skipped"] += 1
        logger.warning("known faces: skipping %s: %s", path, reason)

    def _cache_ready(self) -> Path | None:
        """The cache folder, created if needed; None (with a note) when it is not writable."""
        try:
            st = make_private_dir(self.cache_dir).stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                self.cache_dir.chmod(0o700)  # made open by an earlier version: who is known is private
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
            # A FIFO or /dev/zero under a .jpg name would be read forever: regular files only, bounded.
            data = read_small_file(path, FACE_IMAGE_MAX_BYTES)
        except OSError as exc:
            self._skip(path, f"unreadable ({exc.strerror or exc})")
            return None
        except ValueError as exc:
            self._skip(path, str(exc))
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
            too_large = image_pixels_problem(data, self.max_pixels)  # from the header: nothing decoded yet
        except ValueError as exc:
            self._skip(path, f"unreadable image ({exc})")
            return None
        if too_large:
            self._skip(path, f"the image is {too_large}")
            return None
        buffer = io.BytesIO(data)
        try:
            image = self._fr.load_image_file(buffer)
        except Exception as exc:  # PIL raises several types for broken or odd files
            # PIL names the file it read, here a buffer (<_io.BytesIO object at 0x...>): the path says more
            self._skip(path, f"unreadable image ({type(exc).__name__}: {str(exc).replace(repr(buffer), str(path))})")
            return None
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
        names, references = self._refs  # one snapshot: a reload mid-frame changes nothing here
        carried = self._carried_over(rgb, boxes, timestamp, references)
        fresh = [box for box, old in zip(boxes, carried) if old is None]
        encodings: list[np.ndarray | None] = [None] * len(fresh)
        if fresh and names:  # with an empty library every face is unknown: nothing to encode
            with self._dlib_lock:
                # Encode on the full-resolution pixels: encodings from a downscaled face drift
                # (0.13 at 1/2, 0.32 at 1/4 from the full-size encoding), enough to lose a match.
                encodings = list(self._fr.face_encodings(rgb, fresh))
        keep = self.reuse is not None and timestamp is not None
        tracks, found = [], iter(encodings)
        for box, old in zip(boxes, carried):
            if old is None:
                tracks.append(_Track(box, self._thumb(rgb, box) if keep else _NO_THUMB,
                                     next(found), 0, timestamp))
            else:
                tracks.append(_Track(box, self._thumb(rgb, box), old.encoding, old.reuses + 1,
                                     old.encoded_at))
        # Left to right, so the names reach the VLM prompt in a stable order.
        matches = sorted(
            (self._match(t.box, t.encoding, (names, references), reused=t.reuses > 0)
             for t in tracks),
            key=lambda m: (m.box[3], m.box[0]),
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with self._state_lock:
            if self.smoothing is not None:
                matches = self._smooth(matches)
            last = self._last
            if keep and (last is None or timestamp >= last.at
                         or abs(timestamp - last.at) > self.reuse.max_gap_s):
                # Keep the newest frame: an older one finishing late must not replace it
                # (a jump, such as the next file starting at 0 s, starts a new timeline).
                self._last = _LastFrame(timestamp, rgb.shape, tuple(tracks))
            self._frames += 1
            self._faces += len(matches)
            if names:
                self._reused += sum(1 for t in tracks if t.reuses > 0)
                self._encoded += len(fresh)
            for m in matches:
                if m.known:
                    self._known += 1
                    self._seen[m.name] += 1
                else:
                    self._unknown += 1
            self._ms.append(elapsed_ms)
        return matches

    # ------------------------------------------------------------------ identity reuse
    def _carried_over(self, rgb: np.ndarray, boxes: list[tuple[int, int, int, int]],
                      timestamp: float | None, references: np.ndarray) -> list[_Track | None]:
        """For each box, the previous frame's face whose encoding it may keep, or None."""
        carried: list[_Track | None] = [None] * len(boxes)
        policy = self.reuse
        if policy is None or timestamp is None or not boxes or not len(references):
            return carried
        with self._state_lock:
            last = self._last
        if (last is None or last.shape != rgb.shape
                or abs(timestamp - last.at) > policy.max_gap_s):
            return carried
        # Each box is judged against the one previous face it overlaps most (best pairs
        # first), so two faces side by side never swap identities.
        pairs = sorted(((_iou(box, t.box), i, j) for i, box in enumerate(boxes)
                        for j, t in enumerate(last.tracks)), reverse=True)
        judged: set[int] = set()
        taken: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < policy.min_iou:
                break
            if i in judged or j in taken:
                continue
            judged.add(i)
            taken.add(j)
            if self._may_reuse(last.tracks[j], rgb, boxes[i], timestamp, references):
                carried[i] = last.tracks[j]
        return carried

    def _may_reuse(self, track: _Track, rgb: np.ndarray, box: tuple[int, int, int, int],
                   timestamp: float, references: np.ndarray) -> bool:
        policy = self.reuse
        if track.encoding is None or track.reuses >= policy.max_reuses:
            return False
        age = abs(timestamp - track.encoded_at)  # abs: frames may come slightly out of order
        if age > policy.max_age_s:
            return False
        distance = float(np.min(np.linalg.norm(references - track.encoding, axis=1)))
        margin = policy.unknown_margin_per_s * age
        if self.tolerance < distance < self.tolerance + margin:
            return False  # a near miss: look again, it may be someone we know
        return self._looks_same(track, rgb, box)

    def _looks_same(self, track: _Track, rgb: np.ndarray, box: tuple[int, int, int, int]) -> bool:
        """Whether the old face still looks the same here (no cut, no big change)."""
        # Where the face was, and the old face's size where the detector sees it now: the
        # first misses a face that moved a few pixels, the second a box that jittered to
        # another HOG window size. One face one frame later passed 94% of the time with
        # either, 88% and 84% with one alone.
        top, right, bottom, left = track.box
        height, width = bottom - top, right - left
        centre_y, centre_x = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        top = min(max(0, centre_y - height // 2), rgb.shape[0] - height)
        left = min(max(0, centre_x - width // 2), rgb.shape[1] - width)
        policy = self.reuse
        for region in (track.box, (top, left + width, top + height, left)):
            here = self._thumb(rgb, region)
            if np.mean(np.abs(here - track.thumb)) <= policy.max_grey_diff and (
                    np.mean(np.abs(_zscore(here) - _zscore(track.thumb))) <= policy.max_shape_diff):
                return True
        return False

    def _thumb(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        top, right, bottom, left = box
        small = self._cv2.resize(rgb[top:bottom, left:right], (_THUMB_SIZE, _THUMB_SIZE),
                                 interpolation=self._cv2.INTER_AREA)
        return self._cv2.cvtColor(small, self._cv2.COLOR_RGB2GRAY).astype(np.float32)

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

    def _match(self, box: tuple[int, int, int, int], encoding: np.ndarray | None,
               refs: tuple[list[str], np.ndarray], *, reused: bool = False) -> FaceMatch:
        names, references = refs
        if not names or encoding is None:
            return FaceMatch(UNKNOWN, None, box, reused)
        # Same Euclidean distance as face_recognition.face_distance, one person per row.
        distances = np.linalg.norm(references - encoding, axis=1)
        best = int(np.argmin(distances))
        distance = float(distances[best])
        name = names[best] if distance <= self.tolerance else UNKNOWN
        return FaceMatch(name, round(distance, 4), box, reused)

    def _smooth(self, matches: list[FaceMatch]) -> list[FaceMatch]:
        """Report a name only once it held in k of the last n processed frames."""
        k, _ = self.smoothing
        self._recent.append(frozenset(m.name for m in matches if m.known))
        held = Counter(name for names in self._recent for name in names)
        out = []
        for m in matches:
            if m.known and held[m.name] < k:
                self._suppressed += 1
                m = FaceMatch(UNKNOWN, m.distance, m.box, m.reused)
            out.append(m)
        return out

    # ------------------------------------------------------------------ statistics
    @property
    def stats(self) -> dict:
        """Frames, faces (encoded / reused), known/unknown, names seen and ms per frame."""
        with self._state_lock:
            return {
                "frames": self._frames,
                "faces": self._faces,
                # Faces whose encoding was computed / carried over from the previous frame;
                # with an empty library neither happens (every face is unknown unencoded).
                "encoded": self._encoded,
                "reused": self._reused,
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


_NO_THUMB = np.zeros((0, 0), np.float32)  # identity reuse off: no thumbnails kept


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (top, right, bottom, left) boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    return inter / ((a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter)


def _zscore(pixels: np.ndarray) -> np.ndarray:
    """Pixels with brightness and contrast taken out."""
    return (pixels - pixels.mean()) / (pixels.std() + 1e-6)


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
        with open_private(tmp, "w") as fh:
            fh.write(json.dumps(entry))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True

