"""Find the moment: every caption and summary in a LanceDB table, searched by meaning and by word.

Writing (``--index DIR``): ``open_indexer`` returns an ``Indexer`` whose ``listen`` is added to
the run's EventWriter. Each caption and summary event is queued there (the frame loop never
waits) and a background thread embeds them in batches with a sentence-transformers model and
merges them into the ``moments`` table, beside LanceDB's own full-text index on the text.

Rows are keyed so that indexing is idempotent: a file's moments by its path, kind and frame
(a summary by its window), so a re-run over the same file replaces its rows instead of adding
them again, and a changed file (another content hash) has its old rows deleted first; a live
source's (and stdin's) moments by kind and trace id, each trace being a new moment.

Reading (``--search``): ``search`` runs one hybrid query (vector + full text, fused by
reciprocal rank, LanceDB's default reranker) with every filter in its ``where`` clause, so the
filters select before the ranking, never after it.

lancedb, pyarrow and sentence-transformers are imported inside functions only: without
``--index``/``--search``/``--ask`` none of them is loaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from video_summarizer.defaults import EMBED_MODEL as DEFAULT_EMBED_MODEL
from video_summarizer.errors import InputError
from video_summarizer.files import NOT_WRITTEN, make_private_dir
from video_summarizer.models.hf import ModelSpec, is_folder_name, load_error, locate
from video_summarizer.options import IndexOptions, QueryOptions
from video_summarizer.timecodes import format_video_time, parse_time_option

log = logging.getLogger(__name__)

TABLE = "moments"
MODEL_KEY = b"summarizer.embed_model"  # the table's schema metadata: the model its vectors came from
EMBED_SPEC = ModelSpec(
    role="embedding model", option="--embed-model", example=DEFAULT_EMBED_MODEL,
    contents="a sentence-transformers folder (modules.json, config.json, weights and tokenizer)",
    served="the index needs the model in this process")
BATCH_ROWS = 256  # the most rows embedded and written at once (a backlog goes in big batches)
BATCH_WAIT_S = 1.0  # the longest an event waits in the queue for its batch to fill
OPTIMIZE_EVERY_S = 300.0  # fold new rows into the full-text index (unindexed rows are still searched)
CANDIDATES = 50  # each side of the hybrid query: enough for the fusion to see every good match
# A flat scan of 384-d vectors took 160-370 ms at 100,000 rows on 2 busy cores: from this many rows an
# IVF_PQ index is made (at each optimize), and PQ's coarse distances are refined on 5x the candidates.
VECTOR_INDEX_ROWS = 20_000
REFINE_FACTOR = 5
_COLUMNS = ["kind", "source", "spec", "live", "time_s", "end_s", "frame", "text", "faces", "trace_id"]


# -- where the index is ------------------------------------------------------------------------

def index_location(index: IndexOptions) -> str | None:
    """--index, else LANCEDB_URI (LanceDB Cloud, db://...), else None."""
    return index.index or index.cloud_uri or None


def connect(location: str, *, create: bool, cloud: IndexOptions | None = None) -> Any:
    """A LanceDB connection: a local folder, or db://... with LANCEDB_API_KEY (never logged) from ``cloud``."""
    for name in ("LANCE_LOG", "LANCEDB_LOG"):  # lance's Rust logger warns on stderr when it creates a table
        os.environ.setdefault(name, "error")
    import lancedb

    if location.startswith("db://"):
        key = cloud.cloud_api_key if cloud is not None else None
        if not key:
            raise InputError(f"{location} is LanceDB Cloud: set LANCEDB_API_KEY in the environment",
                             option="--index")
        kw = {"region": cloud.cloud_region} if cloud.cloud_region else {}
        return lancedb.connect(location, api_key=key, **kw)
    path = os.path.expanduser(location)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{location} is a file, not an index folder", option="--index")
    if not create and not os.path.isdir(path):
        raise InputError(f"no index at {location} (make one with --source ... --index {location})",
                         option="--index")
    if create:
        try:
            make_private_dir(path)  # captions and names: 0700 when this run makes it
        except OSError as e:
            raise InputError(f"cannot make the index folder {location}: {e.strerror}", option="--index") from e
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"cannot write to the index folder {location}", option="--index")
    return lancedb.connect(path)


def open_table(location: str, cloud: IndexOptions | None = None) -> Any:
    """The moments table for reading; a missing or empty index is an InputError naming --index."""
    db = connect(location, create=False, cloud=cloud)
    if TABLE not in db.list_tables().tables:
        raise InputError(f"no index at {location} (make one with --source ... --index {location})",
                         option="--index")
    table = db.open_table(TABLE)
    if table.count_rows() == 0:
        raise InputError(f"the index at {location} is empty: nothing has been captioned into it yet",
                         option="--index")
    return table


def _schema(dim: int, model: str) -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string()),
        pa.field("kind", pa.string()),  # caption | summary
        pa.field("source", pa.string()),  # the source's label (what events and traces call it)
        pa.field("spec", pa.string()),  # the source as given (a stream's secrets masked)
        pa.field("content", pa.string()),  # a file's content hash; "" for live sources and stdin
        pa.field("live", pa.bool_()),
        pa.field("time_s", pa.float64()),  # video seconds (files) or epoch seconds (live)
        pa.field("end_s", pa.float64()),  # a summary's window end; = time_s for a caption
        pa.field("wall", pa.string()),  # when the event happened, UTC ISO-8601
        pa.field("frame", pa.int64()),  # -1 for a summary
        pa.field("text", pa.string()),
        pa.field("faces", pa.list_(pa.string())),
        pa.field("trace_id", pa.string()),
        # a caption of a clip covers start_s..time_s (its key frame); older indexes lack the column
        pa.field("start_s", pa.float64()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ], metadata={MODEL_KEY: model_reference(model).encode()})


def model_reference(name: str) -> str:
    """How an index records its embedding model: a folder by its absolute path, a hub id as given."""
    return os.path.abspath(os.path.expanduser(name)) if is_folder_name(name) else name


def stored_model(table: Any) -> str | None:
    """The embedding model the index was made with (None: an index made before it was recorded)."""
    value = (table.schema.metadata or {}).get(MODEL_KEY)
    return value.decode() if value else None


def index_model(table: Any | None, given: str | None, location: str) -> str:
    """The embedding model for this index (None: a new one): its own; --embed-model only confirms it."""
    stored = stored_model(table) if table is not None else None
    if given is None:
        return stored or DEFAULT_EMBED_MODEL
    if stored is not None and not _same_model(given, stored):
        raise InputError(f"the index at {_shown(location)} was made with the embedding model {stored}, "
                         f"not {given}: leave --embed-model out to use its own, or give another --index",
                         option="--embed-model")
    return given


def _same_model(given: str, stored: str) -> bool:
    """A folder by where it really is (a link to it is the same model), a hub id by its name."""
    if is_folder_name(given) and is_folder_name(stored):
        return os.path.realpath(model_reference(given)) == os.path.realpath(stored)
    return model_reference(given) == stored


# -- the embedding model ------------------------------------------------------------------------

class Embedder:
    """A sentence-transformers model, loaded once, that turns texts into unit vectors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._source = locate(name, EMBED_SPEC)  # the cheap check: files there, nothing loaded
        self.model: Any = None
        self.dim = 0

    def load(self) -> "Embedder":
        """Load the model (CPU), with one progress line; a failure names --embed-model."""
        t0 = time.perf_counter()
        try:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(self._source or self.name, device="cpu",
                                             local_files_only=self._source is not None)
            self.dim = int(self.model.get_embedding_dimension())
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, a folder of something else
            raise load_error(self.name, EMBED_SPEC, exc) from exc
        log.info("Embedding model %s ready in %.1f s (%d dimensions)", self.name, time.perf_counter() - t0,
                 self.dim)
        return self

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit vectors (float32 rows) of the texts."""
        return self.model.encode(list(texts), batch_size=BATCH_ROWS, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


# -- writing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceInfo:
    """What the index keeps of one source of the run besides its label."""

    spec: str  # as shown (masked)
    path: str | None  # a file's absolute path (None: live, stdin)
    live: bool


@dataclass
class IndexStats:
    """What the indexer did: rows written, batches, failures."""

    captions: int = 0
    summaries: int = 0
    batches: int = 0
    replaced_sources: int = 0  # changed files whose old rows were deleted
    failures: int = 0
    seconds: float = 0.0  # embedding and writing, in the background thread


class Indexer:
    """Embeds and writes the run's caption and summary events off the frame loop."""

    def __init__(self, table: Any, embedder: Embedder, sources: dict[str, SourceInfo], location: str) -> None:
        self.table = table
        self.embedder = embedder
        self.sources = sources
        self.location = location
        self.stats = IndexStats()
        self._queue: queue.Queue = queue.Queue()
        self._content: dict[str, str] = {}  # file path -> content hash, checked once per run
        self._faces: dict[str, list[tuple[float, list[str]]]] = {}  # label -> (time, faces) of captions
        self._last_optimize = time.monotonic()
        self._thread = threading.Thread(target=self._work, name="indexer", daemon=True)
        self._thread.start()

    def listen(self, event_type: str, record: dict) -> None:
        """EventWriter listener: queue caption and summary events (never blocks)."""
        if event_type in ("caption", "summary"):
            self._queue.put(record)

    def close(self, deadline_s: float = 60.0) -> None:
        """Write what is queued, fold it into the full-text index, and say what was written."""
        self._queue.put(None)
        self._thread.join(deadline_s)
        if self._thread.is_alive():
            log.warning("Index: still writing after %.0f s; %d events not indexed", deadline_s,
                        self._queue.qsize())
            return
        self._optimize()
        s = self.stats
        failed = f", {s.failures} batches failed" if s.failures else ""
        log.info("Index: %d captions and %d summaries written to %s in %.1f s%s", s.captions, s.summaries,
                 _shown(self.location), s.seconds, failed)

    def _work(self) -> None:
        done = False
        while not done:
            batch: list[dict] = []
            first = None
            while len(batch) < BATCH_ROWS:
                timeout = None if first is None else max(0.0, first + BATCH_WAIT_S - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
                first = first or time.monotonic()
            if batch:
                self._write(batch)
            if not done and time.monotonic() - self._last_optimize > OPTIMIZE_EVERY_S:
                self._optimize()

    def _write(self, records: list[dict]) -> None:
        t0 = time.perf_counter()
        try:
            rows = [self._row(r) for r in records]
            vectors = self.embedder.encode([r["text"] for r in rows])
            for row, vector in zip(rows, vectors):
                row["vector"] = vector.tolist()
            import pyarrow as pa

            data = pa.Table.from_pylist(rows, schema=self.table.schema)
            self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        except Exception as e:  # an index failure never stops the run; counted, said once
            self.stats.failures += 1
            NOT_WRITTEN.record("--index", f"{len(records)} events to {_shown(self.location)}", e,
                               "the run goes on; later events are tried, failed batches counted")
            return
        finally:
            self.stats.seconds += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.captions += sum(1 for r in rows if r["kind"] == "caption")
        self.stats.summaries += sum(1 for r in rows if r["kind"] == "summary")

    def _row(self, record: dict) -> dict:
        label = record.get("source") or "?"
        info = self.sources.get(label) or SourceInfo(label, None, False)
        content = self._content_of(info)
        if record["type"] == "caption":
            kind, start = "caption", float(record["video_time"])
            end, frame, text, faces = start, int(record["frame"]), record["caption"], list(record["faces"])
            first = float((record.get("span") or {}).get("start", start))
            self._faces.setdefault(label, []).append((start, faces))
            del self._faces[label][:-5000]  # a month on a camera stays bounded
            moment = f"frame {frame}"
        else:
            kind, (start, end) = "summary", (float(t) for t in record["window"])
            frame, text, first = -1, record.get("text") or "", start
            faces = sorted({n for t, names in self._faces.get(label, []) if start <= t <= end for n in names})
            moment = f"window {start:.3f}-{end:.3f}{' final' if record.get('final') else ''}"
        if info.path is not None:  # a file: one row per moment of its content, whatever the run
            key = f"{info.path}\x00{kind}\x00{moment}"
        else:  # live or stdin: each trace is a new moment
            key = f"{kind}\x00{record['trace_id']}"
        return {"id": hashlib.sha1(key.encode()).hexdigest(), "kind": kind, "source": label, "spec": info.spec,
                "content": content, "live": info.live, "time_s": start, "end_s": end,
                "wall": record.get("time") or "", "frame": frame, "text": text, "faces": faces,
                "trace_id": record.get("trace_id") or "", "start_s": first}  # dropped by an older table

    def _content_of(self, info: SourceInfo) -> str:
        """A file's content hash; at its first event of the run, rows of other content are deleted."""
        if info.path is None:
            return ""
        if info.path not in self._content:
            from video_summarizer.outputs import file_sha256

            try:
                digest = file_sha256(info.path)
            except OSError:
                digest = ""
            self._content[info.path] = digest
            stale = f"spec = {_sql(info.spec)} AND content != {_sql(digest)}"
            if self.table.count_rows(stale):
                self.table.delete(stale)
                self.stats.replaced_sources += 1
                log.info("Index: %s changed since it was indexed; its old moments are replaced", info.spec)
        return self._content[info.path]

    def _optimize(self) -> None:
        """Fold new rows into the indexes; a table grown big gets its vector index."""
        self._last_optimize = time.monotonic()
        try:
            self.table.optimize()  # new rows join the full-text and vector indexes
            if self.table.count_rows() >= VECTOR_INDEX_ROWS and not any(
                    i.index_type.startswith("IVF") for i in self.table.list_indices()):
                self.table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ")
        except Exception:  # noqa: BLE001 - the rows are written; only the index is behind
            log.warning("Index: optimizing %s failed; searches still find every row", _shown(self.location),
                        exc_info=log.isEnabledFor(logging.DEBUG))


def open_indexer(index: IndexOptions, inputs: Iterable[Any], live: bool | None = None) -> Indexer:
    """The run's indexer: the folder checked, the embedding model loaded, the table opened or made.

    ``live``: --live/--no-live (None: cameras and streams are live).
    """
    from video_summarizer.source_specs import kind_of

    location = index_location(index)
    db = connect(location, create=True, cloud=index)
    table = db.open_table(TABLE) if TABLE in db.list_tables().tables else None
    model = index_model(table, index.embed_model, location)
    embedder = Embedder(model).load()
    if table is not None:  # an index made before the model was recorded: at least the size must fit
        dim = table.schema.field("vector").type.list_size
        if dim != embedder.dim:
            raise InputError(f"the index at {_shown(location)} holds {dim}-dimension vectors but "
                             f"{model} makes {embedder.dim}: use the model it was made with, "
                             "or another --index", option="--embed-model")
    else:
        from lancedb.index import FTS

        table = db.create_table(TABLE, schema=_schema(embedder.dim, model), exist_ok=True)
        table.create_index("text", config=FTS(), replace=True)
    sources = {}
    for item in inputs:
        kind = kind_of(item.spec)
        is_live = live if live is not None else kind in ("camera", "stream")
        path = os.path.abspath(os.path.expanduser(item.spec)) if kind == "file" and not is_live else None
        sources[item.label] = SourceInfo(path or item.shown, path, is_live)
    log.info("Index: %s (%d moments so far)", _shown(location), table.count_rows())
    return Indexer(table, embedder, sources, location)


# -- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One search: the text and the filters, checked."""

    text: str
    faces: tuple[str, ...] = ()
    source_filter: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 10


@dataclass
class Hit:
    """One moment found: where, when, what, who, how well it matched, and its trace."""

    kind: str
    source: str
    spec: str
    live: bool
    time_s: float
    end_s: float
    frame: int
    text: str
    faces: list[str]
    score: float
    trace_id: str
    start_s: float | None = None  # where a clip's caption starts (None: the moment alone, or an older index)
    cite: str = field(init=False)  # how an answer cites it: [source mm:ss]

    def __post_init__(self) -> None:
        self.cite = f"[{self.source} {moment_time(self.time_s, self.live)}]"

    @property
    def when(self) -> str:
        """mm:ss (or a window) for files; the UTC wall-clock time for live sources."""
        if self.live:
            return datetime.fromtimestamp(self.time_s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.kind == "summary" and self.end_s > self.time_s:
            return f"{format_video_time(self.time_s)}-{format_video_time(self.end_s)}"
        if self.start_s is not None and format_video_time(self.start_s) != format_video_time(self.time_s):
            return f"{format_video_time(self.start_s)}-{format_video_time(self.time_s)}"  # a clip's span
        return format_video_time(self.time_s)

    def line(self) -> str:
        """The one-line form --search prints."""
        faces = ", ".join(self.faces) if self.faces else "-"
        what = "summary: " if self.kind == "summary" else ""
        return (f"{self.source} [{self.when}] {what}{self.text}  | faces: {faces} | score {self.score:.4f} "
                f"| trace {self.trace_id}")

    def to_json(self) -> dict:
        """The --json form of one hit."""
        return {"kind": self.kind, "source": self.source, "spec": self.spec, "live": self.live,
                "time": self.when, "time_s": self.time_s, "end_s": self.end_s, "frame": self.frame,
                "text": self.text, "faces": self.faces, "score": round(self.score, 6), "trace_id": self.trace_id,
                **({"start_s": self.start_s} if self.start_s is not None else {})}


def moment_time(seconds: float, live: bool) -> str:
    """How an answer cites a moment's time: mm:ss of video, or the UTC hh:mm:ss of a live one."""
    if live:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%H:%M:%S")
    return format_video_time(seconds)


_CLOCK = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_when(value: str, option: str) -> tuple[str, float]:
    """("video", seconds) for 90, 01:30 or 1:02:03; ("clock", epoch) for an ISO date/time (UTC if no zone)."""
    text = value.strip()
    if _CLOCK.match(text):
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return "clock", (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    try:
        return "video", parse_time_option(text)
    except ValueError as exc:
        why = str(exc)
    shown = repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if why != "not a video time":  # shaped like one, but out of range
        raise InputError(f"{shown} is not a video time: {why}; write 90, 01:30 or 1:02:03", option=option)
    raise InputError(f"{shown} is neither a video time (90, 01:30, 1:02:03) nor a date and time "
                     "(2026-12-01T09:00, UTC unless it says otherwise)", option=option)


# The faces column lowercased in the query itself (no name holds a newline: they are file names).
_FACES_LOWER = "string_to_array(lower(array_to_string(faces, '\n')), '\n')"


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _like(glob: str) -> str:
    """A glob (* and ?) as a SQL LIKE pattern with \\ as the escape."""
    out = []
    for ch in glob:
        out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(ch, ch))
    return _sql("".join(out))


def where_clause(q: Query) -> tuple[str | None, list[tuple[str, str]]]:
    """The query's filters as one LanceDB where clause, and each filter alone (option, clause)."""
    parts: list[tuple[str, str]] = []
    if q.faces:  # names as the known-faces files spell them: "Biden" finds "biden"
        names = ", ".join(_sql(n.lower()) for n in q.faces)
        parts.append(("--faces", f"array_has_all({_FACES_LOWER}, [{names}])"))
    if q.source_filter:
        pattern = _like(q.source_filter)
        parts.append(("--source-filter", f"(source LIKE {pattern} ESCAPE '\\' OR spec LIKE {pattern} ESCAPE '\\')"))
    scales = set()
    for option, value, op in (("--since", q.since, ">="), ("--until", q.until, "<=")):
        if value is None:
            continue
        scale, t = parse_when(value, option)
        scales.add(scale)
        column = "end_s" if op == ">=" else "time_s"  # a summary window overlapping the range counts
        parts.append((option, f"live = {'true' if scale == 'clock' else 'false'} AND {column} {op} {t!r}"))
    if len(scales) > 1:
        raise InputError("--since and --until must both be video times or both dates and times", option="--until")
    return (" AND ".join(f"({c})" for _, c in parts) or None), parts


def check_filters(table: Any, q: Query) -> str | None:
    """The where clause, after checking that each filter alone matches something (else InputError)."""
    where, parts = where_clause(q)
    for option, clause in parts:
        if option in ("--faces", "--source-filter") and table.count_rows(clause) == 0:
            raise InputError(_nothing_matches(table, option, q), option=option)
    return where


def _nothing_matches(table: Any, option: str, q: Query) -> str:
    column = "faces" if option == "--faces" else "source"
    values = table.search().select([column]).limit(100_000).to_arrow().column(column).to_pylist()
    known = sorted({v for x in values for v in (x if isinstance(x, list) else [x]) if v})
    shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
    if option == "--faces":
        return f"no moment in the index shows {' and '.join(q.faces)} (names in the index: {shown})"
    return f"no source in the index matches {q.source_filter!r} (sources: {shown})"


def search(table: Any, embedder: Embedder, q: Query, where: str | None = None) -> list[Hit]:
    """The best moments for the query, best first: one hybrid query, the filters inside it."""
    where = where if where is not None else check_filters(table, q)
    vector = embedder.encode([q.text])[0].tolist()
    query = (table.search(query_type="hybrid").vector(vector).text(q.text).distance_type("cosine")
             .refine_factor(REFINE_FACTOR).select(_COLUMNS + [c for c in ("start_s",) if c in table.schema.names]))
    if where:
        query = query.where(where, prefilter=True)
    # Each side brings CANDIDATES; the fusion ranks them and we keep the --limit best.
    rows = query.limit(max(q.limit, CANDIDATES)).to_list()[:q.limit]
    return [Hit(kind=r["kind"], source=r["source"], spec=r["spec"], live=bool(r["live"]), time_s=r["time_s"],
                end_s=r["end_s"], frame=int(r["frame"]), text=r["text"], faces=list(r["faces"] or []),
                score=float(r.get("_relevance_score") or 0.0), trace_id=r["trace_id"],
                start_s=r.get("start_s") if r["kind"] == "caption" else None) for r in rows]


def query_of(query: QueryOptions, option: str) -> Query:
    """The Query of the options (the text of `search` or `ask`); an empty text names its command."""
    if not query.text.strip():
        raise InputError("the text is empty: give some words to find", option=option)
    q = Query(text=query.text.strip(), faces=tuple(query.faces), source_filter=query.source_filter,
              since=query.since, until=query.until, limit=query.limit)
    where_clause(q)  # a bad --since/--until is said before the index is opened
    return q


def find(index: IndexOptions, query: QueryOptions, option: str,
         before_load: Callable[[], None] | None = None) -> list[Hit]:
    """Open the index, check the filters and its model, call before_load (ask: its model's check), load, search."""
    q = query_of(query, option)
    location = index_location(index)
    if location is None:
        raise InputError("give the index to search (--index DIR, or LANCEDB_URI for LanceDB Cloud)",
                         option="--index")
    table = open_table(location, index)
    where = check_filters(table, q)  # every filter is said before the model loads
    model = index_model(table, index.embed_model, location)
    if before_load is not None:
        before_load()
    embedder = Embedder(model).load()
    return search(table, embedder, q, where)


def search_command(index: IndexOptions, query: QueryOptions, as_json: bool, out: Any) -> int:
    """`search`: print the best moments, best first (or one JSON document with --json); the exit code."""
    hits = find(index, query, "search")
    if as_json:
        out.write(json.dumps({"query": query.text, "hits": [h.to_json() for h in hits]}, ensure_ascii=False) + "\n")
    else:
        for n, hit in enumerate(hits, 1):
            out.write(f"{n}. {hit.line()}\n")
        if not hits:
            out.write("(no moment matches)\n")
    out.flush()
    return 0


def _shown(location: str) -> str:
    """An index location as it may be logged (a URI's query string, which may hold keys, cut off)."""
    return location.split("?", 1)[0]
