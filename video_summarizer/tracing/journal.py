"""Write-ahead: every span and score the run finished is on disk before the SDK holds it.

The outbox (``outbox.Outbox``) keeps what Langfuse *refused*. Until this journal, what the
SDK still *held* when the run ended was lost: spans queued in the SDK's BatchSpanProcessor
(or dropped from it when full), a span batch inside the OTLP exporter's retries or waiting
on a hanging host, scores in the SDK's score queue, and all of it at a SIGKILL.

So each finished item is appended here first, synchronously, in the thread that finished it:

- spans by ``JournalSpanProcessor``, a SpanProcessor of ours registered on the tracker's
  TracerProvider *before* the SDK's own (OTel calls processors in the order they were added,
  so a span is in the journal before the SDK's processor can queue, export or acknowledge it);
- scores by ``LangfuseTracker.log_score`` (through ``Outbox.handed``) before ``create_score``.

An item is *settled* (a settle record appended) when Langfuse acknowledged it, or when the
outbox kept it in a batch file of its own (a refused batch). At close whatever is not settled
becomes outbox batch files, and the journal is removed. A run that was killed leaves its
journal behind; the next run with the same keys, or ``outbox send``, turns it into batch
files (``recover``): a journal is only read once the ``flock`` its writer holds is free, so
a live run's journal is never taken.

Cost: a span is written as compact JSON of the fields the OTLP encoder reads (``span_record``)
with one ``write()`` to an ``O_APPEND`` file: ~50 us a span, ~10 us a score, in the thread that
finished it (the shared 2-core machine, loaded; encoding the OTLP protobuf there took 3x that).
The OTLP request is made only when a batch file is (``encode_records``: ReadableSpans rebuilt
with OTel's public classes, then the exporter's own encoder; byte for byte the spans the
exporter sends). No fsync per record: a record in the page cache survives a kill of the process
(not a power cut; the batch files made from it are fsynced).

File: ``<run>-<segment>.journal`` in the outbox's project folder, 0600, a sequence of records
``kind (1 byte) | id length (2) | payload length (4) | id | payload``: ``H`` the header (JSON:
run, non-secret headers), ``S`` a span (id: span id hex; payload: ``span_record``), ``C``
a score (id: score id; payload: the score item as the SDK sends it, JSON), ``A`` settled
(payload: ``S<id>``/``C<id>`` lines). A record cut short by a kill ends the file (ignored).
A new segment starts past ``max_segment_bytes``; a full segment is removed once all its
items are settled, so a long run's journal holds what is in flight, not the day.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from video_summarizer.tracing.delivery import score_id

log = logging.getLogger(__name__)

SUFFIX = ".journal"
SPAN, SCORE, HEADER, SETTLED = b"S", b"C", b"H", b"A"
_HEAD = struct.Struct(">cHI")
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


def span_id(span: Any) -> str:
    """A ReadableSpan's span id as Langfuse names the observation (16 hex digits)."""
    return format(span.context.span_id, "016x")


def span_record(span: Any) -> bytes:
    """A finished ReadableSpan as compact JSON: every field the OTLP encoder reads.

    JSON, not the OTLP encoding itself: ~20 us a span instead of ~60 in the thread that ends
    it; ``encode_records`` makes the OTLP request when one is needed (at close, or later).
    """
    ctx, parent, scope = span.context, span.parent, span.instrumentation_scope
    return json.dumps({
        "n": span.name, "t": ctx.trace_id, "s": ctx.span_id, "f": int(ctx.trace_flags),
        "p": [parent.trace_id, parent.span_id, parent.is_remote] if parent is not None else None,
        "k": span.kind.value, "b": span.start_time, "e": span.end_time,
        "st": [span.status.status_code.value, span.status.description],
        "a": dict(span.attributes or {}),
        "ev": [[e.name, e.timestamp, dict(e.attributes or {})] for e in span.events],
        "l": [[link.context.trace_id, link.context.span_id, dict(link.attributes or {})]
              for link in span.links],
        "r": dict(span.resource.attributes), "rs": span.resource.schema_url,
        "sc": [scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})]
        if scope is not None else None}, separators=(",", ":")).encode()


def encode_records(records: Sequence[bytes]) -> bytes:
    """One OTLP ``ExportTraceServiceRequest`` (uncompressed) of journaled spans, encoded by the
    OTLP exporter's own encoder from ReadableSpans rebuilt with OTel's public classes."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    shared: dict[str, Any] = {}  # one Resource / scope object each: the encoder groups by them

    def one(key: Any, make: Callable[[], Any]) -> Any:
        return shared.setdefault(json.dumps(key, sort_keys=True), make()) if key is not None else None

    spans = []
    for raw in records:
        r = json.loads(raw)
        parent = SpanContext(r["p"][0], r["p"][1], is_remote=r["p"][2]) if r["p"] else None
        spans.append(ReadableSpan(
            name=r["n"], context=SpanContext(r["t"], r["s"], is_remote=False, trace_flags=TraceFlags(r["f"])),
            parent=parent, resource=one(["r", r["r"], r["rs"]], lambda: Resource(r["r"], r["rs"])),
            attributes=r["a"], kind=SpanKind(r["k"]), start_time=r["b"], end_time=r["e"],
            status=Status(StatusCode(r["st"][0]), r["st"][1]),
            events=[Event(name, attrs, ts) for name, ts, attrs in r["ev"]],
            links=[Link(SpanContext(t, i, is_remote=False), attrs) for t, i, attrs in r["l"]],
            instrumentation_scope=one(["sc", r["sc"]], lambda: InstrumentationScope(*r["sc"]))))
    return encode_spans(spans).SerializeToString()


def _record(kind: bytes, ident: str, payload: bytes) -> bytes:
    raw = ident.encode()
    return _HEAD.pack(kind, len(raw), len(payload)) + raw + payload


def read_records(data: bytes) -> Iterator[tuple[bytes, str, bytes]]:
    """(kind, id, payload) of each whole record; a record cut short ends the file."""
    at = 0
    while at + _HEAD.size <= len(data):
        kind, id_len, size = _HEAD.unpack_from(data, at)
        end = at + _HEAD.size + id_len + size
        if end > len(data):
            return
        ident = data[at + _HEAD.size:at + _HEAD.size + id_len].decode("ascii", "replace")
        yield kind, ident, data[end - size:end]
        at = end


@dataclass
class Unsettled:
    """A journal's items Langfuse has not acknowledged and the outbox has not kept."""

    run: str
    headers: dict
    spans: list[tuple[str, bytes]] = field(default_factory=list)  # (span id, span_record JSON)
    scores: list[dict] = field(default_factory=list)  # score items, ids included


def parse(data: bytes) -> Unsettled:
    """What one journal file holds that was never settled (in the order it was written)."""
    meta: dict = {}
    added: dict[tuple[bytes, str], bytes] = {}
    for kind, ident, payload in read_records(data):
        if kind == HEADER:
            meta = json.loads(payload)
        elif kind in (SPAN, SCORE):
            added[(kind, ident)] = payload
        elif kind == SETTLED:
            for line in payload.decode("ascii", "replace").splitlines():
                added.pop((line[:1].encode(), line[1:]), None)
    found = Unsettled(str(meta.get("run", "")), dict(meta.get("headers") or {}))
    for (kind, ident), payload in added.items():
        if kind == SPAN:
            found.spans.append((ident, payload))
        else:
            try:
                found.scores.append(json.loads(payload))
            except ValueError:
                continue
    return found


class _Segment:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.size = 0
        self.open_items = 0  # added, not settled


class Journal:
    """This run's write-ahead journal in one outbox project folder; see the module docstring."""

    def __init__(self, folder: Path, run: str, headers: dict, *,
                 max_segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.folder, self.run, self.headers = Path(folder), run, dict(headers)
        self.max_segment_bytes = int(max_segment_bytes)
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._where: dict[tuple[bytes, str], _Segment] = {}  # unsettled item -> its segment
        self._closed = False
        self.write_failures = 0
        self._new_segment()  # raises OSError: no journal, the caller says so

    # -- writing ------------------------------------------------------------------------------
    def _new_segment(self) -> _Segment:
        path = self.folder / f"{self.run}-{len(self._segments) + 1:04d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Held for the run: a recovering process reads only journals whose writer is gone.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            segment = _Segment(path, fd)
            self._append(segment, _record(HEADER, "", json.dumps(
                {"run": self.run, "headers": self.headers}).encode()))
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._segments.append(segment)
        return segment

    @staticmethod
    def _append(segment: _Segment, data: bytes) -> None:
        written = os.write(segment.fd, data)
        if written != len(data):  # a full disk mid-record: the reader drops the cut record
            raise OSError(f"short write to {segment.path.name}")
        segment.size += written

    def _add(self, kind: bytes, ident: str, payload: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                segment = self._segments[-1]
                if segment.size > self.max_segment_bytes:
                    segment = self._new_segment()
                self._append(segment, _record(kind, ident, payload))
            except OSError as exc:
                self.note_failure(exc)
                return
            segment.open_items += 1
            self._where[(kind, ident)] = segment

    def add_span(self, span: Any) -> None:
        """A finished span, before the SDK's processor gets it; never raises."""
        try:
            payload = span_record(span)
        except Exception as exc:  # noqa: BLE001 - runs in the thread that ended the span
            self.note_failure(exc)
            return
        self._add(SPAN, span_id(span), payload)

    def add_score(self, item: dict) -> None:
        """A score item (``outbox.score_item``), before the SDK gets it; never raises."""
        self._add(SCORE, score_id(item), json.dumps(item).encode())

    def settle(self, kind: bytes, ids: Sequence[str]) -> None:
        """These items were acknowledged or kept in a batch file: not needed here any more."""
        with self._lock:
            if self._closed:
                return
            touched: dict[int, tuple[_Segment, list[str]]] = {}
            for ident in ids:
                segment = self._where.pop((kind, ident), None)
                if segment is not None:
                    segment.open_items -= 1
                    touched.setdefault(id(segment), (segment, []))[1].append(ident)
            for segment, done in touched.values():
                if segment.open_items == 0 and segment is not self._segments[-1]:
                    self._drop(segment)  # all of it settled: gone, no settle record needed
                    continue
                try:
                    lines = "\n".join(kind.decode() + i for i in done).encode()
                    self._append(segment, _record(SETTLED, "", lines))
                except OSError as exc:  # a recovery then sends them again: harmless, same ids
                    self.note_failure(exc)

    def _drop(self, segment: _Segment) -> None:
        self._segments.remove(segment)
        os.close(segment.fd)
        segment.path.unlink(missing_ok=True)

    def note_failure(self, exc: BaseException) -> None:
        """Count a failed write; the first one is said once."""
        self.write_failures += 1
        if self.write_failures == 1:
            log.warning("Langfuse outbox: cannot write the journal in %s (%s); what the SDK "
                        "holds at the end may be lost; counting further failures", self.folder, exc)

    # -- at close -----------------------------------------------------------------------------
    def take_unsettled(self) -> Unsettled:
        """Stop writing; what was never settled, read back from the segments still open."""
        with self._lock:
            self._closed = True
            found = Unsettled(self.run, self.headers)
            for segment in self._segments:
                try:
                    part = parse(segment.path.read_bytes())
                except OSError as exc:
                    self.note_failure(exc)
                    continue
                found.spans += [s for s in part.spans if (SPAN, s[0]) in self._where]
                found.scores += [s for s in part.scores if (SCORE, score_id(s)) in self._where]
            return found

    def remove(self) -> None:
        """Remove the journal's files (what they held is kept elsewhere, or was settled)."""
        with self._lock:
            self._closed = True
            for segment in list(self._segments):
                self._drop(segment)
            self._where.clear()


def recover(folder: Path, keep: Callable[[Unsettled], bool]) -> int:
    """Hand what the journals of ended runs (killed ones) in folder hold to keep(); remove them.

    A journal is removed only when keep() returned True (its items are in batch files).
    Returns how many journals were taken; a journal whose writer still runs is left alone.
    """
    taken = 0
    for path in sorted(Path(folder).glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # its run removed it meanwhile
            with os.fdopen(os.dup(fd), "rb") as fh:
                found = parse(fh.read())
            if keep(found):
                path.unlink(missing_ok=True)
                taken += 1
        except Exception as exc:  # noqa: BLE001 - a damaged journal must not stop a run or a send
            log.warning("Langfuse outbox: cannot read the journal %s (%s); left where it is", path, exc)
        finally:
            os.close(fd)
    return taken


def journal_span_processor(journal: Journal, should_export: Callable[[Any], bool]) -> Any:
    """An OTel SpanProcessor that journals each span the SDK will export, as it ends.

    Registered on the tracker's TracerProvider before the SDK's own processor; ``should_export``
    is the filter handed to the SDK (``Langfuse(should_export_span=...)``), so it journals
    exactly the spans the SDK's processor queues. (Built here: OTel is imported only with keys.)
    """
    from opentelemetry.sdk.trace import SpanProcessor

    class JournalSpanProcessor(SpanProcessor):
        def on_end(self, span: Any) -> None:
            """Journal a sampled span the SDK will export; never raises."""
            try:
                if span.context.trace_flags.sampled and should_export(span):
                    journal.add_span(span)
            except Exception as exc:  # noqa: BLE001 - must not break the span's end
                journal.note_failure(exc)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            """Nothing is buffered: each record is written as its span ends."""
            return True

    return JournalSpanProcessor()
