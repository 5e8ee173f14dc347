"""Benchmark rows for --index / --search: the loop's efficiency with the indexer listening, query
latency over 100,000 generated captions, and the indexer's throughput.

    python -m bench.bench_index            # the three rows (a few minutes on 2 cores)
    python -m bench.bench_index --quick    # fewer captions for the throughput row, fewer frames

The embedding model is a tiny random BERT with MiniLM's 384 dimensions (tests/tiny_models.py;
no model hub here): the vectors, the table and the queries have the real sizes, while the
real all-MiniLM-L6-v2 (6 layers, not 2) takes longer to embed each text, which lowers the
throughput row and adds its encoding time (a few ms for one short query) to the latency row.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.benchmark import run_source, stages, synthetic_video
from video_summarizer.outputs import EventWriter

QUERY_ROWS = 100_000
SUBJECTS = ["A man", "A woman", "Two people", "A child", "Biden", "Obama", "A crowd", "A dog", "A red car", "A cyclist"]
ACTIONS = ["speaks at a podium", "walks past", "waves to the camera", "sits on a bench", "opens a door",
           "shakes hands", "drives by", "reads a newspaper", "applauds", "looks at a phone"]
PLACES = ["in a hall", "on a street at night", "in a kitchen", "on a stage", "in a parking lot", "in the rain",
          "near a window", "in an office", "at a station", "in a park"]
QUERIES = ["a man at a podium", "Biden shakes hands", "a dog in the park", "red car at night", "crowd applauds",
           "woman reading a newspaper", "someone opens a door", "cyclist in the rain"]


def caption(i: int) -> str:
    """Generated caption i: a thousand phrasings, a frame number that makes each one unique."""
    return (f"{SUBJECTS[i % 10]} {ACTIONS[i // 10 % 10]} {PLACES[i // 100 % 10]}. "
            f"Frame {i} of camera {i % 7}.")


class IndexedEvents(EventWriter):
    """The real EventWriter with the indexer's listener, keeping (time, type, fields) for the efficiency ratio."""

    def __init__(self, listener) -> None:
        super().__init__(None)
        self.items: list[tuple[float, str, dict]] = []
        self._items_lock = threading.Lock()
        self.add_listener(listener)
        self.add_listener(self._keep)

    def _keep(self, event_type: str, record: dict) -> None:
        with self._items_lock:
            self.items.append((time.time(), event_type, record))

    def of(self, event_type: str) -> list[tuple[float, dict]]:
        """The events of one type, with the time each came."""
        return [(t, f) for t, kind, f in self.items if kind == event_type]


def _indexer(tmp: Path, bert: Path, name: str, inputs=()):
    from video_summarizer.search.index import open_indexer
    from video_summarizer.options import IndexOptions

    return open_indexer(IndexOptions(index=str(tmp / name), embed_model=str(bert)), list(inputs))


def efficiency(tmp: Path, bert: Path, reps: int, inflight: int = 2) -> tuple[str, str, str, bool]:
    """bench.benchmark row 1 with --index on: captions per second over what the VLM allows."""
    from tests.fake_openai import FakeOpenAIServer
    from video_summarizer.runner import Input

    n = 12 * inflight
    video = synthetic_video(tmp / f"eff{inflight}.avi", n)
    ratios: dict[bool, list[float]] = {True: [], False: []}
    written = 0
    with FakeOpenAIServer(reply="A bar moves across a grey screen.", first_chunk_delay=0.3) as srv:
        for rep in range(reps):
            for on in (False, True):  # side by side: this machine is shared and noisy
                indexer = _indexer(tmp, bert, f"eff-{rep}", [Input(str(video), "eff", "eff")]) if on else None
                events = IndexedEvents(indexer.listen if on else (lambda *_: None))
                st = stages(tmp, srv.base_url, events=events)
                run_source(str(video), st, interval=0, max_inflight=inflight)
                caps = events.of("caption")
                starts = [t - f["latency_ms"] / 1000 for t, f in caps]
                span = max(t for t, _ in caps) - min(starts)
                ratios[on].append((len(caps) / span) / (inflight / 0.3))
                if indexer is not None:
                    indexer.close()
                    written = indexer.stats.captions
    ratio, off = statistics.median(ratios[True]), statistics.median(ratios[False])
    return (f"pipeline efficiency with --index on, --max-inflight {inflight} (300 ms VLM, {n} captions)",
            f"{ratio:.3f} ({written} captions indexed a run); off, side by side: {off:.3f}", "≥ 0.95",
            ratio >= 0.95)


def throughput(tmp: Path, bert: Path, n: int) -> tuple[str, str, str, bool | None]:
    """Captions a second from the listener to rows in the table (embedded, merged, full-text indexed)."""
    indexer = _indexer(tmp, bert, "throughput")
    t0 = time.perf_counter()
    for i in range(n):
        indexer.listen("caption", {"type": "caption", "time": "", "source": "cam0", "frame": i,
                                   "video_time": 1.7e9 + i, "faces": [], "caption": caption(i), "trace_id": f"t{i}"})
    indexer.close(deadline_s=1800)
    seconds = time.perf_counter() - t0
    assert indexer.stats.captions == n, indexer.stats
    return (f"index throughput ({n} captions through the listener: embedded, written, indexed)",
            f"{n / seconds:.0f} captions/s", "— (a camera every 5 s makes 0.2/s)", None)


def query_latency(tmp: Path, bert: Path, n: int = QUERY_ROWS) -> tuple[str, str, str, bool]:
    """p50/p95 of a whole --search (query embedded, hybrid query, filters) over n generated captions."""
    import numpy as np
    import pyarrow as pa

    from video_summarizer.search.index import Embedder, _schema, connect

    embedder = Embedder(str(bert)).load()
    db = connect(str(tmp / "latency"), create=True)
    table = db.create_table("moments", schema=_schema(embedder.dim), mode="overwrite")
    t0 = time.perf_counter()
    # Embedding 100,000 texts would take this machine 12 min (the throughput row): each of the
    # thousand phrasings is embedded once, and each caption's vector is its phrasing's, jittered
    # and renormalized, so no two rows are alike (the search's cost depends on sizes, not words).
    phrasings = embedder.encode([caption(i).split(" Frame")[0] for i in range(1000)])
    rng = np.random.default_rng(0)
    chunk = 10_000
    for start in range(0, n, chunk):
        texts = [caption(i) for i in range(start, min(n, start + chunk))]
        vectors = phrasings[np.arange(start, start + len(texts)) % 1000] + rng.normal(
            0, 0.02, (len(texts), embedder.dim)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{"id": f"r{start + k}", "kind": "caption", "source": f"cam{(start + k) % 7}", "spec": "", "content": "",
                 "live": False, "time_s": float(start + k), "end_s": float(start + k), "wall": "", "frame": start + k,
                 "text": text, "faces": ["biden"] if "Biden" in text else [], "trace_id": f"t{start + k}",
                 "vector": vec.tolist()} for k, (text, vec) in enumerate(zip(texts, vectors))]
        table.add(pa.Table.from_pylist(rows, schema=table.schema))
    built = time.perf_counter() - t0
    from lancedb.index import FTS

    from video_summarizer.search.index import Indexer

    table.create_index("text", config=FTS(), replace=True)
    t1 = time.perf_counter()
    Indexer(table, embedder, {}, str(tmp / "latency")).close()  # what a run's close does: the vector index
    indexed = time.perf_counter() - t1
    # --search is a process of its own that opens the table: so is the timing (in the process that
    # wrote and indexed the table the same queries measured 2-4x slower: 200 vs 44 ms p50).
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bench.bench_index", "--time-queries", str(tmp / "latency"), str(bert)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    p50, p95 = json.loads(out.stdout.strip().splitlines()[-1])
    kinds = [i.index_type for i in table.list_indices()]
    return (f"--search latency over {n:,} captions (embed + hybrid query + filter; indexes {', '.join(kinds)})",
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms (table built in {built:.0f} s, indexed in {indexed:.0f} s)",
            "p95 ≤ 100 ms", p95 <= 100)


def rows(quick: bool = False) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, target, met) rows for --index and --search."""
    from tests.tiny_models import build_tiny_bert

    out = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bert = build_tiny_bert(tmp / "bert", hidden_size=384)
        for measure in (lambda: efficiency(tmp, bert, reps=1 if quick else 3),
                        lambda: throughput(tmp, bert, 2_000 if quick else 10_000),
                        lambda: query_latency(tmp, bert)):
            out.append(measure())
            print("  " + " | ".join(str(x) for x in out[-1]), file=sys.stderr, flush=True)  # as it comes
    return out


def time_queries(location: str, bert: str) -> tuple[float, float]:
    """p50 and p95 in ms of QUERIES (a third with --faces) against the index, as --search runs them."""
    from video_summarizer.search.index import Embedder, Query, open_table, search

    table, embedder = open_table(location), Embedder(bert).load()
    times = []
    for rep in range(5):
        for k, text in enumerate(QUERIES):
            t = time.perf_counter()
            assert search(table, embedder, Query(text=text, faces=("biden",) if k % 3 == 0 else (), limit=10))
            times.append((time.perf_counter() - t) * 1000)
    times = times[len(QUERIES):]  # the first round warms the caches
    return statistics.median(times), sorted(times)[int(0.95 * (len(times) - 1))]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--time-queries"]:
        print(json.dumps(time_queries(sys.argv[2], sys.argv[3])))
        sys.exit(0)
    for r in rows(quick="--quick" in sys.argv):
        print(" | ".join(str(x) for x in r), flush=True)
