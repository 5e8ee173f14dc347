"""Datasets of captioned frames: what ``--dataset NAME`` adds during a run, and the local folder.

An item is one captioned frame: the JPEG the caption model got (after ``--blur-faces``), the
prompt and the recognized names as input, the caption, model and prompt version as metadata,
with the source and its video time. Its id is derived from the dataset name, the source's
content hash and the frame index, so a second run over the same file adds nothing twice.

With Langfuse keys the items go to the Langfuse dataset NAME (``langfuse_datasets.py`` makes
the SDK calls; this module never imports it). Without keys the dataset is a folder::

    NAME/items.jsonl         one item a line: id, input, metadata, image (file name below)
    NAME/images/<id>.jpg     the frame as the caption model got it
    NAME/runs/<RUN>.jsonl    one line per item an experiment captioned (experiments.py)

in the same shape, uploaded later with ``dataset push NAME``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from video_summarizer.backends import FrameObserver
from video_summarizer.errors import InputError
from video_summarizer.files import NOT_WRITTEN, make_private_dir, open_private
from video_summarizer.limits import DATASET_IMAGE_MAX_BYTES, inside, read_small_file

log = logging.getLogger(__name__)

ITEMS_FILE = "items.jsonl"
IMAGES_DIR = "images"
RUNS_DIR = "runs"


@dataclass(frozen=True)
class DatasetItem:
    """One captioned frame: its id, JPEG, input (prompt, faces) and metadata (caption, model, ...)."""

    id: str
    image_jpeg: bytes = field(repr=False)
    input: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


class DatasetStore(Protocol):
    """Where items go: a local folder or a Langfuse dataset."""

    def ids(self) -> set[str]:
        """The ids already in the dataset (creating an empty one if there is none)."""

    def add(self, item: DatasetItem) -> None:
        """Add one item."""


def item_id(dataset: str, content_hash: str, frame_index: int) -> str:
    """The item id: the same dataset, source content and frame give the same id."""
    key = f"{dataset}\n{content_hash}\n{int(frame_index)}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def content_hash(spec: str | None, fallback: str) -> str:
    """SHA-256 of a file source's bytes; for cameras, streams and stdin, of ``fallback`` (the run)."""
    if spec and os.path.isfile(spec):
        h = hashlib.sha256()
        with open(spec, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    return hashlib.sha256(f"{spec}\n{fallback}".encode()).hexdigest()


class LocalDataset:
    """The folder form of a dataset (see the module docstring); thread-safe appends."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        self._lock = threading.Lock()

    @property
    def exists(self) -> bool:
        """True when the folder holds an items file."""
        return (self.folder / ITEMS_FILE).is_file()

    def ids(self) -> set[str]:
        """The ids in items.jsonl (the folder is made, 0700, when missing)."""
        try:
            make_private_dir(self.folder)
        except OSError as e:
            raise InputError(f"cannot make the dataset folder {self.folder}: {e.strerror or e}",
                             option="--dataset") from e
        return {entry["id"] for entry in self._entries()}

    def _entries(self) -> list[dict]:
        path = self.folder / ITEMS_FILE
        if not path.is_file():
            return []
        entries = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a kill: the rest of the file still counts
                log.warning("%s line %d is not JSON; skipped", path, n)
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                log.warning("%s line %d is not an item (no \"id\"); skipped", path, n)
                continue
            entries.append(entry)
        return entries

    def add(self, item: DatasetItem) -> None:
        """Write the JPEG, then its line (a kill between the two leaves no line without image)."""
        images = self.folder / IMAGES_DIR
        with self._lock:
            make_private_dir(images)
            with open_private(images / f"{item.id}.jpg", "wb") as fh:
                fh.write(item.image_jpeg)
            line = {"id": item.id, "input": item.input, "metadata": item.metadata,
                    "image": f"{IMAGES_DIR}/{item.id}.jpg"}
            with open_private(self.folder / ITEMS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    def items(self, option: str = "--dataset") -> list[DatasetItem]:
        """Every item with its JPEG; a missing image skips its item (a warning).

        An image outside the folder (an absolute path, ``..``, a link out), or one that is not a
        small regular file, is an InputError naming the item and ``option``: nothing is read
        from it, so nothing of it can be uploaded or captioned.
        """
        out = []
        for entry in self._entries():
            path = self._image_path(entry, option)
            try:
                jpeg = read_small_file(path, DATASET_IMAGE_MAX_BYTES, follow_links=False)
            except OSError:
                log.warning("%s: image %s is missing; item %s skipped", self.folder, path, entry["id"])
                continue
            except ValueError as exc:
                raise InputError(f"item {entry['id'][:40]!r} of {self.folder}/: its image {path.name} is "
                                 f"{exc}", option=option) from None
            out.append(DatasetItem(entry["id"], jpeg, entry.get("input") or {}, entry.get("metadata") or {}))
        return out

    def _image_path(self, entry: dict, option: str) -> Path:
        """The item's image, all links followed, when it is inside the folder; else InputError naming the item."""
        image = entry.get("image", f"{IMAGES_DIR}/{entry['id']}.jpg")
        if isinstance(image, str) and image and not os.path.isabs(image) and ".." not in Path(image).parts:
            path = self.folder / image
            try:
                if inside(path, self.folder):
                    return path.resolve()
            except (OSError, ValueError, RuntimeError):  # a NUL byte, a link loop
                pass
        raise InputError(f"item {entry['id'][:40]!r} of {self.folder}/ names the image {str(image)[:80]!r}, "
                         "which is not inside the dataset folder: only files in it are read", option=option)

    # -- experiment runs ---------------------------------------------------------------------
    def add_run_record(self, run: str, record: dict) -> None:
        """Append one item's result of an experiment run."""
        runs = self.folder / RUNS_DIR
        with self._lock:
            make_private_dir(runs)
            with open_private(runs / f"{_safe_name(run)}.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def check_new_run(self, run: str) -> None:
        """Check that RUN is a new run: a name used before is refused, naming the command.

        Langfuse keeps one dataset run per name and adds a second execution's items to it, so
        reusing a name would mix two runs there (and replace the first one's records here).
        """
        path = self.folder / RUNS_DIR / f"{_safe_name(run)}.jsonl"
        if path.exists():
            raise InputError(f"dataset {self.name} already has a run named {run!r} ({path}): give this run "
                             "another name, so that both can be compared", option="experiment")

    def runs(self) -> dict[str, list[dict]]:
        """Every run's records, oldest run first."""
        folder = self.folder / RUNS_DIR
        if not folder.is_dir():
            return {}
        found: dict[str, list[dict]] = {}
        for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
            records = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
            if records:
                found[records[0].get("run", path.stem)] = records
        return found


def _safe_name(run: str) -> str:
    """A run name as a file name (slashes and odd characters become _)."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in run)[:150] or "run"


class DatasetWriter(FrameObserver):
    """A frame observer (``Stages.frame_observers``): each captioned frame becomes an item, once.

    Thread-safe (frames are captioned on several threads). A store that fails is said once and
    counted; the run goes on.
    """

    def __init__(self, store: DatasetStore, *, name: str, max_side: int, quality: int,
                 session_id: str, where: str) -> None:
        self.store = store
        self.name = name
        self.max_side = max_side
        self.quality = quality
        self.session_id = session_id
        self.where = where  # "Langfuse dataset X" / "folder X/", for the log lines
        self.added = 0
        self.skipped = 0  # already in the dataset
        self.failed = 0
        self._lock = threading.Lock()
        self._hashes: dict[str, str] = {}
        self._known = set(store.ids())

    def __call__(self, image: Any, record: dict, matches: list) -> None:
        """Add the frame the caption model got, with its caption record, unless already there."""
        from video_summarizer.frames import to_jpeg_bytes

        spec = record.get("source_spec") or record.get("source")
        digest = self._digest(spec)
        iid = item_id(self.name, digest, record["frame"])
        with self._lock:
            if iid in self._known:
                self.skipped += 1
                return
            self._known.add(iid)
        item = DatasetItem(
            iid, to_jpeg_bytes(image, self.max_side, self.quality),
            input={"prompt": record.get("prompt"), "faces": list(record.get("faces") or [])},
            metadata={"caption": record.get("caption"), "model": record.get("model"),
                      "prompt_version": record.get("prompt_version"), "source": record.get("source"),
                      "video_time": record.get("video_time"), "frame": record["frame"],
                      "source_sha256": digest, "trace_id": record.get("trace_id")})
        try:
            self.store.add(item)
        except Exception as exc:  # a dataset never stops the run: counted, said once
            with self._lock:
                self.failed += 1
                self._known.discard(iid)
                first = self.failed == 1
            if first:
                NOT_WRITTEN.record("--dataset", f"a frame to {self.where}", exc,
                                   "the run goes on; later frames are tried, failures counted")
            return
        with self._lock:
            self.added += 1

    def _digest(self, spec: str | None) -> str:
        with self._lock:
            digest = self._hashes.get(spec or "")
        if digest is None:
            digest = content_hash(spec, self.session_id)
            with self._lock:
                self._hashes[spec or ""] = digest
        return digest

    def format_stats(self) -> str:
        """One line for the exit report."""
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"Dataset {self.where}: {self.added} frames added, {self.skipped} already there{failed}")


def push(local: LocalDataset, remote: Callable[[], DatasetStore]) -> tuple[int, int]:
    """Upload the folder's items the remote dataset lacks: (added, already there).

    ``remote()`` makes the Langfuse dataset; it is called only once every item's image has been
    checked, so a refused item is said before Langfuse is asked anything.
    """
    if not local.exists:
        raise InputError(f"{local.folder}/ holds no {ITEMS_FILE}: not a dataset folder made by --dataset",
                         option="dataset push")
    items = local.items(option="dataset push")
    store = remote()
    known = store.ids()
    added = skipped = 0
    for item in items:
        if item.id in known:
            skipped += 1
            continue
        store.add(item)
        known.add(item.id)
        added += 1
    return added, skipped


def unique_items(items: Iterable[DatasetItem]) -> list[DatasetItem]:
    """Items with repeated ids dropped (the first one kept)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            out.append(item)
    return out
