"""The known-faces library: a folder of photos -> one 128-d encoding per photo, cached on disk.

``name.jpg`` is one photo of ``name``; ``name/`` holds several. Each photo must show exactly
one face; the rest are skipped, each said once. Encodings are cached by the photo's content
(and the detector settings), so a second start encodes nothing and an edited photo is encoded
again. How a photo becomes an encoding (decoding, detection, the encoder) is the recognizer's:
it is handed in as ``encode``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from video_summarizer.errors import InputError
from video_summarizer.files import make_private_dir, open_private
from video_summarizer.limits import (
    DEFAULT_MAX_PIXELS,
    FACE_IMAGE_MAX_BYTES,
    FACE_IMAGES_MAX,
    image_pixels_problem,
    read_small_file,
)
from video_summarizer.paths import cache_home

logger = logging.getLogger(__name__)

# Formats PIL (face_recognition.load_image_file) reads reliably as photos.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Bump when anything that changes a cached encoding changes (detector use, encoder).
_CACHE_VERSION = "v1"

# A photo's cache entry: {"faces": n} and, when n == 1, {"encoding": 128 floats}.
Encoder = Callable[[Path, bytes], dict]


class UnreadableImage(Exception):
    """The photo's bytes are no image the decoder reads (the message says why)."""


@dataclass(frozen=True)
class SkippedImage:
    """A library file that gave no encoding, and why."""

    path: str
    reason: str


def default_cache_dir() -> Path:
    """Where encodings are cached: $XDG_CACHE_HOME (or ~/.cache)/real-time-summarizer/faces."""
    return cache_home(os.environ) / "real-time-summarizer" / "faces"


class KnownFaces:
    """The known-faces library: photos -> 128-d encodings, cached on disk by content hash."""

    def __init__(self, folder: Path | None, *, cache_dir: Path | None, cache_key: str, encode: Encoder,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, max_images: int = FACE_IMAGES_MAX) -> None:
        self.folder = folder  # None: no library, every face is unknown
        self.cache_dir = cache_dir  # None: no disk cache
        self.cache_key = cache_key  # the detector settings an encoding depends on ("hog-u1")
        self.max_pixels = max_pixels  # photos larger are skipped before decoding
        self.max_images = max_images  # photos past this many (in name order) are not read
        self._encode = encode
        # (names, encodings): one name per row; swapped as one object so a reload never
        # pairs old names with new rows under a running recognize().
        self._refs: tuple[list[str], np.ndarray] = ([], np.zeros((0, 128)))
        self.skipped: list[SkippedImage] = []
        self.counts: dict[str, int] = {"images": 0, "encoded": 0, "from_cache": 0, "skipped": 0}
        self._cache_warned = False

    def references(self) -> tuple[list[str], np.ndarray]:
        """(one name per row, the encodings): one snapshot, unchanged by a reload."""
        return self._refs

    @property
    def names(self) -> list[str]:
        """Sorted names of the people in the library."""
        return sorted(set(self._refs[0]))

    @property
    def encodings_per_name(self) -> dict[str, int]:
        """How many reference encodings each known person has."""
        return dict(Counter(self._refs[0]))

    def load(self) -> None:
        """Read (or re-read) the folder; InputError when it is missing or not a folder."""
        self.skipped = []
        self.counts = {"images": 0, "encoded": 0, "from_cache": 0, "skipped": 0}
        self._cache_warned = False
        names: list[str] = []
        encodings: list[np.ndarray] = []
        if self.folder is None:
            logger.info("no known-faces folder given: every face will be reported as unknown")
        else:
            files = self._files(self.folder)
            cache = self._cache_ready()
            for name, path in files:
                encoding = self._encoding(path, cache)
                if encoding is not None:
                    names.append(name)
                    encodings.append(encoding)
            self._say_loaded(names)
        self._refs = (names, np.array(encodings) if encodings else np.zeros((0, 128)))

    def _say_loaded(self, names: list[str]) -> None:
        if not names:
            logger.warning("known-faces folder %s has no usable face images: every face will be "
                           "reported as unknown", self.folder)
            return
        c = self.counts
        # the same counts as the exit report's "library:" line
        logger.info("known faces: %d people, %d images, %d skipped; %d encoded now, %d from cache",
                    len(set(names)), c["images"], c["skipped"], c["encoded"], c["from_cache"])

    def _files(self, folder: Path) -> list[tuple[str, Path]]:
        """(name, path) pairs: name.jpg is one image of `name`; name/ holds several."""
        hint = "give a folder of name.jpg images (or one subfolder of images per person)"
        if not folder.exists():
            raise InputError(f"known-faces folder {folder} does not exist: {hint}", option="--known-faces")
        if not folder.is_dir():
            raise InputError(f"known-faces path {folder} is not a folder: {hint}", option="--known-faces")
        try:
            found = self._listed(folder)
        except OSError as exc:
            raise InputError(f"cannot read the known-faces folder {folder}: {exc.strerror or exc}",
                             option="--known-faces") from exc
        if len(found) > self.max_images:
            left_out = len(found) - self.max_images
            self.counts["images"] += left_out
            self.counts["skipped"] += left_out
            logger.warning("known faces: only the first %d images of %s are read; %d more left out",
                           self.max_images, folder, left_out)
            found = found[:self.max_images]
        return found

    def _listed(self, folder: Path) -> list[tuple[str, Path]]:
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
        self.counts["images"] += 1  # images = files looked at = used + skipped, in both report lines
        self._skip(path, f"unsupported format {path.suffix or '(no extension)'!r}")
        return False

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(SkippedImage(str(path), reason))
        self.counts["skipped"] += 1
        logger.warning("known faces: skipping %s: %s", path, reason)

    def _cache_ready(self) -> Path | None:
        """The cache folder, created if needed; None (with a note) when there is none or it is not writable."""
        if self.cache_dir is None:
            return None
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
        return cache / f"{digest}-{_CACHE_VERSION}-{self.cache_key}.json"

    def _encoding(self, path: Path, cache: Path | None) -> np.ndarray | None:
        """The encoding of the one face in `path` (cached by content), or None if skipped."""
        self.counts["images"] += 1
        try:
            # A FIFO or /dev/zero under a .jpg name would be read forever: regular files only, bounded.
            data = read_small_file(path, FACE_IMAGE_MAX_BYTES)
        except OSError as exc:
            self._skip(path, f"unreadable ({exc.strerror or exc})")
            return None
        except ValueError as exc:
            self._skip(path, str(exc))
            return None
        entry = self._cached_or_encoded(path, data, cache)
        if entry is None:
            return None
        if entry["faces"] != 1:
            what = "no face" if entry["faces"] == 0 else f"{entry['faces']} faces"
            self._skip(path, f"{what} found (need exactly one face per image)")
            return None
        return np.asarray(entry["encoding"], dtype=np.float64)

    def _cached_or_encoded(self, path: Path, data: bytes, cache: Path | None) -> dict | None:
        entry_file = self._cache_file(cache, data) if cache is not None else None
        entry = _read_cache(entry_file) if entry_file is not None else None
        if entry is not None:
            self.counts["from_cache"] += 1
            return entry
        entry = self._encoded(path, data)
        if entry is None:
            return None  # unreadable image: not cached, so a fixed file is retried
        self.counts["encoded"] += 1
        if entry_file is not None and not _write_cache(entry_file, entry) and not self._cache_warned:
            self._cache_warned = True  # warn once a load, not once an image
            logger.warning("could not write face encodings to the cache %s: they will be "
                           "encoded again on the next start", entry_file.parent)
        return entry

    def _encoded(self, path: Path, data: bytes) -> dict | None:
        """Encode a photo the header says is not too large; None (skipped) when it is unreadable."""
        try:
            too_large = image_pixels_problem(data, self.max_pixels)  # from the header: nothing decoded yet
        except ValueError as exc:
            self._skip(path, f"unreadable image ({exc})")
            return None
        if too_large:
            self._skip(path, f"the image is {too_large}")
            return None
        try:
            return self._encode(path, data)
        except UnreadableImage as exc:
            self._skip(path, f"unreadable image ({exc})")
            return None


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
