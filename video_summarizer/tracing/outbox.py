"""What Langfuse did not acknowledge, kept on disk and sent again with the same ids.

``Outbox.attach(delivery, ...)`` sets ``Delivery.on_unacknowledged``: every span batch the
exporter could not deliver is kept as the OTLP protobuf it was (encoded with the OTLP
exporter's own ``encode_spans``: same trace and span ids), every score batch as the JSON
bodies the SDK sent (each with its score ``id``; on SDK 4 the ``score-create`` event and its
event id). One batch is one file in ``DIR/<host+public key fingerprint>/``::

    <time_ns>-<pid>-<seq>.<spans|scores>.<count>.batch   # a JSON header line, then the body

written to a temporary name, fsynced and renamed into place (a kill leaves a whole file or
none). A file leaves the outbox only after Langfuse answered 2xx for it (the unlink is then
fsynced), or when the host rejects it for good (a 4xx other than 401/403/408/429: sending
it again would be rejected again), or when the outbox is over its size and the oldest
files are dropped (counted, said once). The header holds no secret: the Authorization
header is rebuilt from the keys of whoever sends. Folders are 0700 and files 0600: captions,
prompts and user ids are the user's.

What the SDK still holds when the run ends (its span and score queues, a batch inside the
exporter's retries or waiting on a hanging host) and everything at a SIGKILL is kept by this
run's write-ahead journal (``journal.py``): each span and score is journaled as it finishes,
before the SDK has it, and settled when Langfuse acknowledges it or a batch file keeps it.
At close the unsettled rest becomes batch files (same ids); a killed run's journal is made
into batch files by the next run with the same keys, or by ``outbox send``.

Sending again: a background thread tries when Langfuse acknowledges a live batch again and
every ``retry_s`` (doubling to ``max_retry_s``) while the outbox holds files; at the start of
a run with keys (earlier runs' files); at close (when the host answered last); and from
``real_time_summarizer.py outbox send``. One sender at a time per folder (``flock``).

Nothing twice: a file whose first send landed but whose answer did not (a timeout after
the host processed it) is sent again; Langfuse keeps one observation per span id and one
score per score id (a repeated id updates the same row), so it is kept once. The SDK
retries a failed score batch itself (three tries): each failed try reaches the hook, so the
ids of batches already kept are remembered (a bounded window) and not kept twice, and a
score file of this run is sent only once the SDK's retries are over (``settle_s``) and not
at all when a later try of it was acknowledged. An id kept from the journal at close is not
kept again when the SDK gives up on it later (the same window), and a killed run's journal
leaves out the ids its batch files already hold. Counts are of ids: a file sent twice, or
an id both the SDK and the outbox delivered, is counted once.
"""
from __future__ import annotations

import base64
import fcntl
import gzip
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from video_summarizer import defaults as D
from video_summarizer.tracing import journal as wal
from video_summarizer.tracing.delivery import INGESTION_PATH, SCORES, SCORES_PATH, SPANS, item_ids, score_id

log = logging.getLogger(__name__)

TRACES_PATH = "/api/public/otel/v1/traces"
DEFAULT_MAX_MB = D.OUTBOX_MAX_MB
SUFFIX = ".batch"
_TMP = ".tmp-"
_RECENT_IDS = 20_000  # ids remembered for the SDK's retries: seconds of batches, not a day
_NOUN = {SPANS: "observations", SCORES: "scores"}
_JOURNAL_KIND = {SPANS: wal.SPAN, SCORES: wal.SCORE}
# Batch files made from a journal: requests of a size the SDK itself sends.
_SPANS_PER_BATCH, _SCORES_PER_BATCH = 500, 100


def fingerprint(host: str, public_key: str) -> str:
    """The folder name of one Langfuse project on one host (no key in clear)."""
    return sha256(f"{host.rstrip('/')}\n{public_key}".encode()).hexdigest()[:16]


def basic_auth(public_key: str, secret_key: str) -> str:
    """The Authorization header value Langfuse's public API takes."""
    return "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")


def counts_text(counts: dict[str, int]) -> str:
    """"12 observations and 30 scores"."""
    return f"{counts.get(SPANS, 0)} observations and {counts.get(SCORES, 0)} scores"


def private_dir(folder: Path) -> Path:
    """Make folder (and its parents) if needed; folder itself 0700: what it holds is the user's."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        try:  # one made by an earlier version (0755); a folder of someone else's stays as it is
            os.chmod(folder, 0o700)
        except OSError:
            pass
    return folder


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def score_item(sdk_major: int, *, score_id: str, trace_id: str, observation_id: str | None, name: str,
               value: Any, data_type: str, comment: str | None, timestamp: str) -> dict:
    """A score as the SDK sends it: SDK 5 a /api/public/scores item, SDK 4 a score-create event."""
    body = {"id": score_id, "traceId": trace_id, "name": name, "value": value, "dataType": data_type}
    if observation_id:
        body["observationId"] = observation_id
    if comment is not None:
        body["comment"] = comment
    if sdk_major >= 5:
        return {**body, "timestamp": timestamp}
    return {"id": f"{score_id}-event", "type": "score-create", "timestamp": timestamp, "body": body}


def encode_batch(kind: str, items: Sequence[Any]) -> tuple[list[str], str, dict, bytes]:
    """(ids, endpoint path, non-secret headers, body) of what to keep for a refused batch."""
    if kind == SPANS:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        ids = [format(span.context.span_id, "016x") for span in items]
        body = gzip.compress(encode_spans(items).SerializeToString())
        return ids, TRACES_PATH, {"Content-Type": "application/x-protobuf",
                                  "Content-Encoding": "gzip"}, body
    items = [item for item in items if isinstance(item, dict)]
    ids = [score_id(item) for item in items]
    if any(item.get("type") == "score-create" for item in items):  # SDK 4's ingestion events
        return ids, INGESTION_PATH, {"Content-Type": "application/json"}, \
            json.dumps({"batch": items}).encode()
    return ids, SCORES_PATH, {"Content-Type": "application/json"}, json.dumps(items).encode()


@dataclass
class Batch:
    """One kept batch: its file, what it holds, and how to send it."""

    path: Path
    kind: str
    ids: list[str]
    endpoint: str
    headers: dict
    body: bytes
    run: str = ""


def journal_batches(found: "wal.Unsettled") -> list[tuple[str, list[str], str, dict, bytes]]:
    """(kind, ids, endpoint, headers, body) of the batch files for what a journal holds."""
    batches = []
    for at in range(0, len(found.spans), _SPANS_PER_BATCH):
        chunk = found.spans[at:at + _SPANS_PER_BATCH]
        body = gzip.compress(wal.encode_records([record for _id, record in chunk]))
        headers = {**found.headers, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        batches.append((SPANS, [i for i, _payload in chunk], TRACES_PATH, headers, body))
    for at in range(0, len(found.scores), _SCORES_PER_BATCH):
        batches.append((SCORES, *encode_batch(SCORES, found.scores[at:at + _SCORES_PER_BATCH])))
    return batches


def batch_ids(path: Path) -> tuple[str, list[str]]:
    """(run, ids) from a batch file's header line, without reading its body."""
    with open(path, "rb") as fh:
        meta = json.loads(fh.readline())
    return str(meta.get("run", "")), list(meta.get("ids") or ())


def read_batch(path: Path) -> Batch:
    """A batch file as written by ``Outbox.keep`` (ValueError/OSError when it is not one)."""
    data = path.read_bytes()
    head, sep, body = data.partition(b"\n")
    meta = json.loads(head)
    if not sep or meta.get("kind") not in (SPANS, SCORES):
        raise ValueError(f"{path.name} is not an outbox batch")
    return Batch(path, meta["kind"], list(meta["ids"]), meta["endpoint"], dict(meta["headers"]),
                 body, meta.get("run", ""))


@dataclass
class _Entry:
    kind: str
    count: int
    size: int
    folder: str


@dataclass
class SendResult:
    """What one send of the outbox did."""

    sent: dict = field(default_factory=lambda: {SPANS: 0, SCORES: 0})  # each id counted once
    ids: set = field(default_factory=set)  # the ids sent (a file kept twice is counted once)
    rejected: dict = field(default_factory=lambda: {SPANS: 0, SCORES: 0})
    stopped: str | None = None  # why it stopped before the end (the host's answer), or None
    busy: bool = False  # another process was sending this folder


class KeptBatches:
    """The files of an outbox folder: refused batches, this run's journal, their index and bound.

    ``Outbox`` adds the sending; see the module docstring.
    """

    def __init__(self, root: str | os.PathLike, max_mb: float = DEFAULT_MAX_MB, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_mb * 1024 * 1024) if max_mb and max_mb > 0 else 0
        self._clock = clock
        self.run = f"{os.getpid()}-{time.time_ns()}"
        self.folder: Path | None = None  # this project's folder, once attached / sending
        self._lock = threading.Lock()
        self._index: OrderedDict[str, _Entry] = OrderedDict()  # file path -> entry, oldest first
        self._size = 0
        self._ours: dict[str, float] = {}  # this run's files: path -> clock time kept
        self._recent_kept: OrderedDict[str, None] = OrderedDict()
        # Everything finished that the SDK holds, on disk before the SDK has it (journal.py):
        # at close what was neither acknowledged nor kept becomes batch files.
        self.journal: wal.Journal | None = None
        self._extra_headers: dict = {}  # the span requests' headers but Authorization
        self._seq = 0
        self.kept = {SPANS: 0, SCORES: 0}  # this run's items written
        self.dropped = {SPANS: 0, SCORES: 0}  # over the size bound, or rejected for good
        self.write_failures = 0
        self._scanned = False
        # close() is over and the exit line said what waits and what was dropped: a batch the
        # SDK gives up on later (past the flush deadline) is still kept, but drops nothing.
        self._reported = False

    def scan(self) -> None:
        """Index the files on disk (every project's folder: they share the size bound)."""
        entries = []
        for path in self.root.glob(f"*/*{SUFFIX}"):
            if path.name.startswith("."):  # a .tmp- file not renamed yet (pathlib globs dot files)
                continue
            parts = path.name[:-len(SUFFIX)].split(".")
            try:
                kind, count = parts[1], int(parts[2])
                size = path.stat().st_size
            except (IndexError, ValueError, OSError):
                continue
            if kind in (SPANS, SCORES):
                entries.append((path.name, str(path), _Entry(kind, count, size, path.parent.name)))
        for path in self.root.glob(f"*/{_TMP}*"):  # a write cut short by a kill; not one in progress
            try:
                if time.time() - path.stat().st_mtime > 60:
                    path.unlink()
            except OSError:
                pass
        with self._lock:
            self._index.clear()
            for _name, path, entry in sorted(entries):
                self._index[path] = entry
            self._size = sum(e.size for e in self._index.values())
            self._scanned = True

    def waiting(self, folder: str | None = None, *, ours: bool = False) -> dict[str, int]:
        """Items on disk (of one project's folder; of this run's files only)."""
        name = folder if folder is not None else (self.folder.name if self.folder else None)
        counts = {SPANS: 0, SCORES: 0}
        with self._lock:
            for path, entry in self._index.items():
                if (name is None or entry.folder == name) and (not ours or path in self._ours):
                    counts[entry.kind] += entry.count
        return counts

    def _forget(self, path: str) -> _Entry | None:
        with self._lock:
            entry = self._index.pop(path, None)
            self._ours.pop(path, None)
            if entry is not None:
                self._size -= entry.size
        return entry

    @staticmethod
    def _remember(ids: OrderedDict, values: Sequence[str]) -> None:
        for value in values:
            ids[value] = None
            ids.move_to_end(value)
        while len(ids) > _RECENT_IDS:
            ids.popitem(last=False)

    def handed(self, item: dict) -> None:
        """A score the tracker is about to give the SDK (``score_item``): journaled first."""
        journal = self.journal  # None once close() began (SDK threads call in meanwhile)
        if journal is not None:
            journal.add_score(item)

    def _settle(self, kind: str, ids: Sequence[str]) -> None:
        journal = self.journal
        if journal is not None and ids:
            journal.settle(_JOURNAL_KIND[kind], ids)

    def _fresh(self, ids: Sequence[str]) -> list[bool]:
        """Which of ids no batch file of this run holds yet; they count as kept from now on.

        One lock from the check to the remembering: close() keeps what the journal holds
        while an SDK thread may keep a refused try of the same items (each kept once).
        """
        with self._lock:
            fresh = [i not in self._recent_kept for i in ids]
            self._remember(self._recent_kept, [i for i, new in zip(ids, fresh) if new])
        return fresh

    def _unremember(self, ids: Sequence[str]) -> None:
        with self._lock:  # not written after all: the journal still has them
            for i in ids:
                self._recent_kept.pop(i, None)

    def keep(self, kind: str, items: Sequence[Any]) -> None:
        """Write one refused batch (the Delivery's on_unacknowledged hook); never raises."""
        if self.folder is None or not items:
            return
        if kind == SCORES:
            items = [i for i in items if isinstance(i, dict)]
        all_ids = item_ids(kind, items)
        fresh = [item for item, new in zip(items, self._fresh(all_ids)) if new]
        if fresh:  # else a retry of a batch already kept, or kept from the journal at close
            try:
                ids, endpoint, headers, body = encode_batch(kind, fresh)
                if kind == SPANS:
                    headers = {**self._extra_headers, **headers}
                self._store(kind, ids, endpoint, headers, body, self.run)
            except Exception as exc:  # the hook runs in the SDK's threads: it must not raise there
                self._unremember(item_ids(kind, fresh))
                self._write_failed(exc)
                return
        self._settle(kind, all_ids)

    def _write_failed(self, exc: BaseException) -> None:
        self.write_failures += 1
        if self.write_failures == 1:
            log.warning("Langfuse outbox %s: cannot keep a batch (%s); counting further "
                        "failures", self.root, exc)

    def _store(self, kind: str, ids: list[str], endpoint: str, headers: dict, body: bytes,
               run: str) -> None:
        """One batch file (raises OSError); this run's are counted as kept."""
        with self._lock:
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.{kind}.{len(ids)}{SUFFIX}"
        meta = {"kind": kind, "ids": ids, "endpoint": endpoint, "headers": headers, "run": run}
        path = self._write(name, json.dumps(meta).encode() + b"\n" + body)
        with self._lock:
            self._index[str(path)] = _Entry(kind, len(ids), path.stat().st_size, self.folder.name)
            self._size += self._index[str(path)].size
            if run == self.run:
                self._ours[str(path)] = self._clock()
                self.kept[kind] += len(ids)
        if not self._reported:
            self._bound()

    def _keep_journal(self, found: "wal.Unsettled", fresh: Callable[[list[str]], list[bool]]) -> bool:
        """Batch files for what a journal holds unsettled; ``fresh(ids)`` tells which are in no
        batch file yet (a kill between a batch and its settle record). True: all on disk."""
        spans_new = fresh([i for i, _payload in found.spans])
        scores_new = fresh([score_id(s) for s in found.scores])
        found = wal.Unsettled(found.run, found.headers,
                              [s for s, new in zip(found.spans, spans_new) if new],
                              [s for s, new in zip(found.scores, scores_new) if new])
        done = True
        for kind, ids, endpoint, headers, body in journal_batches(found):
            try:
                self._store(kind, ids, endpoint, headers, body, found.run)
            except OSError as exc:
                self._unremember(ids)
                self._write_failed(exc)
                done = False
        return done

    def recover_journals(self) -> int:
        """Batch files for the journals of ended runs in this folder (killed ones); removed."""
        if self.folder is None or not self.folder.is_dir():
            return 0

        def keep(found: wal.Unsettled) -> bool:
            if found.run == self.run:
                return False
            on_disk: set[str] = set()
            for path in self.folder.glob(f"*{SUFFIX}"):
                try:
                    run, ids = batch_ids(path)
                except (OSError, ValueError):
                    continue
                if run == found.run:
                    on_disk.update(ids)
            return self._keep_journal(found, lambda ids: [i not in on_disk for i in ids])

        return wal.recover(self.folder, keep)

    def _close_journal(self) -> None:
        """What the SDK never got out (queued, retrying, hanging) goes into batch files, same ids."""
        journal, self.journal = self.journal, None
        if journal is None:
            return
        try:
            kept = self._keep_journal(journal.take_unsettled(), self._fresh)
        except Exception as exc:  # noqa: BLE001 - close() goes on; the journal stays for the next sender
            self._write_failed(exc)
            kept = False
        if kept:
            journal.remove()
        # else the journal stays (its lock goes with this process): the next run or
        # `outbox send` makes batch files of what is not in one yet.

    def _write(self, name: str, data: bytes) -> Path:
        private_dir(self.folder)
        tmp, final = self.folder / f"{_TMP}{name}", self.folder / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.folder)  # the rename survives a power cut
        return final

    def _bound(self) -> None:
        while self.max_bytes:
            with self._lock:
                if self._size <= self.max_bytes or len(self._index) <= 1:
                    return
                path, entry = next(iter(self._index.items()))
            self._unlink(path)
            if self._forget(path) is not None:
                first = not any(self.dropped.values())
                self.dropped[entry.kind] += entry.count
                if first:
                    log.warning("Langfuse outbox %s is over its %g MB: dropping the oldest "
                                "batches (counted in the exit line; --langfuse-outbox-max-mb)",
                                self.root, self.max_bytes / 1024 / 1024)

    def _remove(self, path: str) -> None:
        self._unlink(path)
        self._forget(path)

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
            _fsync_dir(Path(path).parent)  # gone for good: not sent again after a power cut
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("outbox: cannot remove %s: %s", path, exc)


class Outbox(KeptBatches):
    """An on-disk outbox of one folder: what Langfuse did not acknowledge, sent again; see the module docstring."""

    def __init__(self, root: str | os.PathLike, max_mb: float = DEFAULT_MAX_MB, *,
                 timeout_s: float = 5.0, retry_s: float = 30.0, max_retry_s: float = 300.0,
                 settle_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(root, max_mb, clock=clock)
        self.timeout_s = float(timeout_s)
        self.retry_s, self.max_retry_s = float(retry_s), float(max_retry_s)
        # The SDK's retries of a score batch: three tries of timeout_s each, ~3 s of backoff.
        self.settle_s = 3 * self.timeout_s + 5.0 if settle_s is None else float(settle_s)
        self._auth: str | None = None
        self.delivery: Any = None
        self._send_lock = threading.Lock()
        self.resent = {SPANS: 0, SCORES: 0}  # this run's items sent from the outbox
        self.resent_earlier = {SPANS: 0, SCORES: 0}  # earlier runs' items sent now
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, delivery: Any, host: str, public_key: str, headers: dict) -> None:
        """Keep what ``delivery`` reports unacknowledged; send it to host in the background."""
        self.delivery = delivery
        self.host = host.rstrip("/")
        self.folder = self.root / fingerprint(self.host, public_key)
        self._auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        self._extra_headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        try:
            private_dir(self.root)
            private_dir(self.folder)
            self.recover_journals()  # a killed run's: sent with the other files
            self.journal = wal.Journal(self.folder, self.run, self._extra_headers)
        except OSError as exc:
            self.write_failures += 1
            log.warning("Langfuse outbox %s: cannot keep a journal (%s); what the SDK still holds "
                        "at the end may be lost", self.folder, exc)
        if not self._scanned:
            self.scan()
        delivery.outbox = self
        delivery.on_unacknowledged = self.keep
        delivery.on_acknowledged = self.acknowledged
        where = str(self.folder).replace("{", "{{").replace("}", "}}")
        templates = delivery.monitor.templates
        templates["failing"] += f"; what it does not acknowledge waits in the outbox {where}"
        templates["back"] += "; sending the outbox"
        self._thread = threading.Thread(target=self._loop, name="langfuse-outbox", daemon=True)
        self._thread.start()

    def acknowledged(self, kind: str, items: Sequence[Any]) -> None:
        """The host acknowledged a live batch (on_acknowledged): settle its scores, wake the sender."""
        self._settle(kind, item_ids(kind, items))
        if self._index:
            self._wake.set()

    def send(self, host: str, auth: str, *, deadline_s: float | None = None,
             settled_only: bool = False) -> SendResult:
        """Send this folder's files, oldest first, until one fails or the deadline passes."""
        import httpx

        result = SendResult()
        if self.folder is None or not self.folder.is_dir():
            return result
        end = None if deadline_s is None else self._clock() + deadline_s
        lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._send_lock, open(lock_fd, "r+b") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                result.busy = True
                return result
            with self._lock:
                paths = [p for p, e in self._index.items() if e.folder == self.folder.name]
            with httpx.Client(timeout=self.timeout_s) as client:
                for path in paths:
                    left = None if end is None else end - self._clock()
                    if left is not None and left <= 0.05:
                        result.stopped = "out of time"
                        break
                    stopped = self._send_one(client, host, auth, path, result, left, settled_only)
                    if stopped:
                        result.stopped = stopped
                        break
        return result

    def _send_one(self, client: Any, host: str, auth: str, path: str, result: SendResult,
                  left: float | None, settled_only: bool) -> str | None:
        import httpx

        kept_at = self._ours.get(path)
        if settled_only and kept_at is not None and self._index.get(path, _Entry(SPANS, 0, 0, "")).kind == SCORES \
                and self._clock() - kept_at < self.settle_s:
            return None  # the SDK may still be retrying this batch itself
        try:
            batch = read_batch(Path(path))
        except FileNotFoundError:
            self._forget(path)
            return None
        except (OSError, ValueError) as exc:
            log.warning("Langfuse outbox: %s cannot be read (%s); left where it is", path, exc)
            self._forget(path)
            return None
        ours = batch.run == self.run
        if ours and batch.kind == SCORES and self.delivery is not None:
            if self.delivery.all_acknowledged(batch.ids):  # a later try of the SDK's own delivered it
                self._remove(path)
                return None
        timeout = self.timeout_s if left is None else max(0.1, min(self.timeout_s, left))
        try:
            response = client.post(host + batch.endpoint, content=batch.body, timeout=timeout,
                                   headers={**batch.headers, "Authorization": auth})
        except httpx.HTTPError as exc:
            from video_summarizer.tracing.delivery import short_reason

            return short_reason(f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            self._remove(path)
            counts = self.resent if ours else self.resent_earlier
            new = len(set(batch.ids) - result.ids)  # a file kept twice: its ids counted once
            result.ids.update(batch.ids)
            with self._lock:
                counts[batch.kind] += new
            result.sent[batch.kind] += new
            if ours and self.delivery is not None:
                self.delivery.sent(batch.kind, len(batch.ids), ids=batch.ids)
            return None
        if 400 <= status < 500 and status not in (401, 403, 408, 429):
            log.warning("Langfuse outbox: %s rejected a batch of %d %s for good (HTTP %d); "
                        "removed", host, len(batch.ids), _NOUN[batch.kind], status)
            self._remove(path)
            self.dropped[batch.kind] += len(batch.ids)
            result.rejected[batch.kind] += len(batch.ids)
            return None
        from video_summarizer.tracing.delivery import http_reason

        return http_reason(status)

    def _loop(self) -> None:
        wait = 0.0  # earlier runs' files: try at once
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            if not any(self.waiting().values()) or self._auth is None:
                wait = self.retry_s
                continue
            try:
                result = self.send(self.host, self._auth, settled_only=True)
            except Exception as exc:  # a background sender never crashes the run
                log.debug("outbox: send failed: %s", exc)
                result = SendResult(stopped=str(exc))
            wait = min(self.max_retry_s, max(self.retry_s, wait * 2)) if result.stopped \
                else self.retry_s
            self._stop.wait(1.0)  # at most one sweep a second, however busy the live traffic

    def close(self, deadline_s: float, host_answers: bool) -> None:
        """Stop the background sender; with time left and the host answering, send what is left."""
        started = self._clock()
        self._close_journal()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, min(deadline_s, 2.0)))
        left = deadline_s - (self._clock() - started)
        if host_answers and self._auth is not None and left > 0.1 and any(self.waiting().values()):
            try:
                self.send(self.host, self._auth, deadline_s=left)
            except Exception as exc:  # exit goes on: the files stay for the next run
                log.debug("outbox: final send failed: %s", exc)
        self._reported = True

    def progress(self) -> str:
        """For the outage lines: how much waits in the outbox."""
        return f"{counts_text(self.waiting())} wait in the outbox {self.folder}"

    def exit_note(self) -> str:
        """For the exit line: what waits, what was sent from the outbox, what was dropped."""
        notes = []
        ours, total = self.waiting(ours=True), self.waiting()
        if any(total.values()):
            earlier = {k: total[k] - ours[k] for k in total}
            extra = f" (and {counts_text(earlier)} of earlier runs)" if any(earlier.values()) else ""
            notes.append(f"{counts_text(ours)}{extra} wait in the outbox {self.folder} (sent when "
                         "Langfuse answers: the next run with keys, or `real_time_summarizer.py outbox send`)")
        if any(self.resent.values()):
            notes.append(f"{counts_text(self.resent)} of them sent from the outbox after the outage")
        if any(self.resent_earlier.values()):
            notes.append(f"{counts_text(self.resent_earlier)} of earlier runs sent from the outbox")
        if any(self.dropped.values()):
            notes.append(f"{counts_text(self.dropped)} dropped from the outbox (over "
                         "--langfuse-outbox-max-mb, or rejected by the host)")
        return "; ".join(notes)


def send_outbox_command(root: str | os.PathLike, *, host: str, public_key: str,
                        secret_key: str, timeout_s: float = 10.0) -> int:
    """``outbox send``: send what the outbox holds for these keys; 0 all sent, 1 some left."""
    host = host.rstrip("/")
    outbox = Outbox(root, 0, timeout_s=timeout_s)
    outbox.folder = outbox.root / fingerprint(host, public_key)
    outbox.recover_journals()  # a killed run's: what its SDK still held
    if outbox.root.is_dir():
        outbox.scan()
    before, everything = outbox.waiting(), outbox.waiting(folder=None)
    others = {k: everything[k] - before[k] for k in before}
    other_note = (f"; {counts_text(others)} kept for other Langfuse keys or hosts stay there"
                  if any(others.values()) else "")
    if not any(before.values()):
        log.info("Langfuse outbox %s: nothing to send to %s%s", outbox.folder, host, other_note)
        return 0
    result = outbox.send(host, basic_auth(public_key, secret_key))
    left = outbox.waiting()
    if result.busy:
        log.warning("Langfuse outbox %s: another process is sending it now; %s wait",
                    outbox.folder, counts_text(left))
        return 1
    rejected = (f", {counts_text(result.rejected)} rejected by the host for good"
                if any(result.rejected.values()) else "")
    line = (f"Langfuse outbox {outbox.folder}: sent {counts_text(result.sent)} to {host}"
            f"{rejected}; ")
    if any(left.values()):
        log.warning("%s%s left (%s)%s", line, counts_text(left), result.stopped, other_note)
        return 1
    log.info("%snothing left%s", line, other_note)
    return 0


DEFAULT_HOST = D.LANGFUSE_HOST


def check_outbox_dir(path: str | os.PathLike) -> None:
    """Raise InputError naming --langfuse-outbox when the folder cannot be made or written."""
    from video_summarizer.errors import InputError

    folder = Path(path)
    try:
        private_dir(folder)
        probe = folder / f"{_TMP}probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the outbox folder {folder}: {exc.strerror or exc} "
                         "(another DIR, or off)", option="--langfuse-outbox") from None


if TYPE_CHECKING:  # the edge's option objects, named here only
    from video_summarizer.options import OutboxOptions
    from video_summarizer.tracing.settings import LangfuseSettings

SEND = "outbox send"  # what its errors name


def open_outbox(folder: Path | None, max_mb: float, *, has_keys: bool, timeout_s: float) -> Outbox | None:
    """The run's outbox in folder (--langfuse-outbox; None: off), only with Langfuse keys."""
    if folder is None or not has_keys:
        return None
    return Outbox(folder, max_mb, timeout_s=timeout_s)


def send_command(outbox: OutboxOptions, langfuse: LangfuseSettings, cache_home: Path) -> int:
    """`outbox send`: what the outbox holds for these keys sent; 0 all sent, 1 some left (for cron)."""
    from video_summarizer.errors import InputError

    if not langfuse.has_keys:
        raise InputError("needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (the project the outbox "
                         "is for; source setup_langfuse.sh)", option=SEND)
    folder = outbox.folder(cache_home)
    if folder is None:
        raise InputError("--langfuse-outbox is off: there is no outbox to send", option=SEND)
    return send_outbox_command(folder, host=(langfuse.base_url or DEFAULT_HOST).rstrip("/"),
                               public_key=langfuse.public_key or "", secret_key=langfuse.secret_key or "",
                               timeout_s=langfuse.timeout_s or D.OUTBOX_SEND_TIMEOUT_S)

