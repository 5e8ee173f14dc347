"""Where results go: the JSONL events stream, summary files, and the batch output folder.

Everything here is written so that a kill at any moment leaves valid files: events are
flushed line by line, summaries are written to a temporary file and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from video_summarizer.errors import InputError
from video_summarizer.files import NOT_WRITTEN, make_private_dir, open_private
from video_summarizer.lock import FolderLock
from video_summarizer.timecodes import format_video_time, stamp_decimals

# The version of the JSON this tool writes (summary documents, --json); bumped on a breaking change.
SCHEMA_VERSION = 1


def utc_iso(epoch_s: float | None = None) -> str:
    """An epoch time (default now) as UTC ISO-8601 with a Z."""
    t = datetime.now(timezone.utc) if epoch_s is None else datetime.fromtimestamp(epoch_s, tz=timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventWriter:
    """One JSON object per line, flushed per line, safe to call from worker threads.

    The file is opened at the first event, so a run that fails before anything happens
    leaves no empty file behind (the CLI checks beforehand that it can be written). A file
    that cannot be opened or written (a full disk) is said once and dropped; the run goes on
    and names it at the end (files.NOT_WRITTEN).
    """

    def __init__(self, target: str | None, max_bytes: int = 0) -> None:
        self._lock = threading.Lock()
        self._target = target
        self._max_bytes = max_bytes  # --events-max-mb: rotated to PATH.1 ... PATH.5 (not stdout)
        self._owned = target not in (None, "-")
        self._stdout = target == "-"
        self._fh: IO[str] | None = sys.stdout if self._stdout else None
        self._listeners: list[Callable[[str, dict], None]] = []
        self.listener_errors = 0

    def add_listener(self, listener: Callable[[str, dict], None]) -> None:
        """Also hand every event (type, fields with time) to `listener`: metrics, the index, the page."""
        self._listeners.append(listener)

    @property
    def to_stdout(self) -> bool:
        """True when events go to stdout (the summary then goes to stderr)."""
        return self._stdout

    def emit(self, event_type: str, **fields: Any) -> None:
        """Write one event line: {"type": ..., "time": ..., **fields}."""
        if self._target is None and not self._listeners:
            return
        record = {"type": event_type, "time": utc_iso(), **fields}
        for listener in self._listeners:
            try:
                listener(event_type, record)
            except Exception:  # a listener never stops the run; counted, said once
                self.listener_errors += 1
                if self.listener_errors == 1:
                    logging.getLogger(__name__).warning("an event listener failed (said once)", exc_info=True)
        if self._target is None:
            return
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            if self._target is None:  # dropped by another thread meanwhile
                return
            try:
                if self._fh is None:
                    self._fh = self._open()
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError as e:  # a full disk, a revoked permission: said once, the run goes on
                self._drop(e)

    def _open(self) -> IO[str]:
        if self._max_bytes and self._owned:
            from video_summarizer.rotation import RotatingLines

            return RotatingLines(self._target, self._max_bytes)  # type: ignore[return-value]
        return open_private(self._target, "a", encoding="utf-8", buffering=1)

    def _drop(self, error: OSError) -> None:
        """Stop writing events (the lock is held); listeners still get them."""
        fh, self._fh = self._fh, None
        if self._owned and fh is not None:
            try:
                fh.close()
            except OSError:  # the unwritten rest of the buffer fails again: already said
                pass
        NOT_WRITTEN.record("--events", "stdout" if self._stdout else self._target or "", error)
        self._target = None

    def close(self) -> None:
        """Close the file (never stdout)."""
        with self._lock:
            if self._owned and self._fh is not None:
                try:
                    self._fh.close()
                except OSError as e:
                    NOT_WRITTEN.record("--events", self._target or "", e)
            self._fh = None
            self._target = None


def write_atomic(path: str | Path, text: str) -> None:
    """Write text to path via a temporary file (0600) in the same folder and a rename."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a device or a pipe: written in place, never replaced
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # a pipe nobody reads: ENXIO, not a hang
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # made 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def incomplete_reasons(stats: dict) -> list[str]:
    """What a stage left undone for a source (empty: complete). Such outputs are kept for reading
    but never count as done: the next batch run redoes them (a model outage leaves no lasting hole)."""
    reasons = []
    failed, made = stats.get("summary_failures") or 0, stats.get("summaries") or 0
    if failed:
        reasons.append(f"{failed} of {failed + made} summaries failed (the captions stand in for them)")
    if stats.get("caption_failures"):
        reasons.append(f"{stats['caption_failures']} of {stats.get('selected')} selected frames were not captioned")
    if stats.get("job_errors"):
        reasons.append(f"{stats['job_errors']} frames failed in the pipeline")
    return reasons


@dataclass
class SummaryDocument:
    """The end product for one source: final summary, rolling summaries, captions, stats."""

    source: str
    label: str
    summary: str
    captions: list[dict]
    summaries: list[dict]
    stats: dict
    input_sha256: str | None = None
    interrupted: bool = False
    # The summary's sentences with the caption events each cites (None: not a model summary).
    sentences: list[dict] | None = None

    def to_json(self) -> dict:
        """The .summary.json shape."""
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "label": self.label,
            "input_sha256": self.input_sha256,
            "generated_at": utc_iso(),
            "interrupted": self.interrupted,
            # complete: every stage did its work; an incomplete one is redone by the next batch run
            "complete": not self.interrupted and not incomplete_reasons(self.stats),
            "incomplete": incomplete_reasons(self.stats),
            "summary": self.summary,
            "sentences": self.sentences,
            "summaries": self.summaries,
            "captions": self.captions,
            "stats": self.stats,
        }

    def to_markdown(self) -> str:
        """A human-readable summary with the caption timeline."""
        lines = [f"# Summary of {self.label}", ""]
        if self.interrupted:
            lines += ["_Run interrupted before the end of the source._", ""]
        if incomplete_reasons(self.stats):
            lines += [f"_Incomplete: {'; '.join(incomplete_reasons(self.stats))}._", ""]
        if self.stats.get("truncated"):
            lines += [f"_Truncated: {self.stats['frames_read']} of {self.stats.get('frames_expected')} "
                      "frames could be decoded._", ""]
        lines += [self.summary or "_No summary: no frame was captioned._", "", "## Timeline", ""]
        decimals = stamp_decimals(c["video_time"] for c in self.captions)  # as the summary cites them
        for c in self.captions:
            faces = f" ({', '.join(c['faces'])})" if c.get("faces") else ""
            lines.append(f"- [{format_video_time(c['video_time'], decimals)}] {c['caption']}{faces}")
        if not self.captions:
            lines.append("- (no captions)")
        return "\n".join(lines) + "\n"


class OutputDir:
    """The batch folder: per-input outputs, skip-if-done by content hash, and a run lock."""

    LOCK_NAME = ".real_time_summarizer.lock"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = FolderLock(self.path / self.LOCK_NAME, "--output-dir")

    def acquire(self) -> None:
        """Make the folder (0700) if needed and take its lock, or raise InputError naming the holder."""
        try:
            make_private_dir(self.path)
        except OSError as e:
            raise InputError(f"cannot use output folder {self.path}: {e.strerror}", option="--output-dir") from e
        self._lock.acquire(f"pid {os.getpid()} since {utc_iso()}")

    def release(self) -> None:
        """Drop the lock (the file stays; the lock is the flock, not the file)."""
        self._lock.release()

    def paths_for(self, name: str) -> tuple[Path, Path]:
        """(<name>.summary.json, <name>.summary.md) for one input (runner.plan_inputs names them)."""
        return self.path / f"{name}.summary.json", self.path / f"{name}.summary.md"

    def is_done(self, name: str, sha256: str) -> bool:
        """True when both outputs exist, are complete, and were made from content with this hash."""
        json_path, md_path = self.paths_for(name)
        if not (json_path.is_file() and md_path.is_file()):
            return False
        try:
            doc = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (doc.get("input_sha256") == sha256 and not doc.get("interrupted", False)
                and not incomplete_reasons(doc.get("stats") or {}))

    def write(self, doc: SummaryDocument, name: str) -> tuple[Path, Path]:
        """Write both outputs atomically."""
        json_path, md_path = self.paths_for(name)
        write_atomic(md_path, doc.to_markdown())
        write_atomic(json_path, json.dumps(doc.to_json(), indent=2, ensure_ascii=False) + "\n")
        return json_path, md_path
