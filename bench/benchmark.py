"""One command, one Markdown table: the speed and robustness figures of the summarizer.

    python -m bench.benchmark            # everything (several minutes on 2 cores); or `make bench`
    python -m bench.benchmark --quick    # fewer repetitions and frames
    python -m bench.benchmark --only 7   # some rows only (here: change gating)
    python -m bench.benchmark --only 23 --models DIR   # real-size models on this CPU (bench_cpu_models.py)

Run it from the repository root: the project and the test suite's stand-ins (tests.fake_openai,
tests.fake_langfuse, tests.tiny_models, tests.clips) are imported from there, and the
processes it starts run there too.

Each figure is a ratio or a measure taken side by side in the same run (this machine is shared
and noisy), the median of several repetitions where it is timed. The VLM and Langfuse are the
local stand-ins of the test suite (tests/fake_openai.py, tests/fake_langfuse.py); the summary
model is a tiny random Mistral built in a temporary folder, loaded through the normal code path.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _k in [k for k in os.environ if k.startswith("LANGFUSE_")]:
    del os.environ[_k]  # the in-process runs trace only where a row says so
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tests.clips import ClipSet  # noqa: E402
from video_summarizer.stats import percentile  # noqa: E402

DATA = Path(os.environ.get("SUMMARIZER_TEST_DATA", REPO.parent / "shared" / "data"))
ROWS: list[tuple[str, str, str, str]] = []


def row(name: str, measured: str, target: str, ok: bool | None) -> None:
    """Add one table row and echo it as it comes (the whole run takes minutes)."""
    verdict = "—" if ok is None else ("yes" if ok else "**no**")
    ROWS.append((name, measured, target, verdict))
    print(f"  {name}: {measured} (target {target}) {verdict}", file=sys.stderr, flush=True)


# -- shared set-up ---------------------------------------------------------------------------

class RecordingEvents:
    """An EventWriter stand-in for in-process runs: keeps (time, type, fields) in memory."""

    to_stdout = False

    def __init__(self) -> None:
        self.items: list[tuple[float, str, dict]] = []
        self._lock = threading.Lock()

    def emit(self, event_type: str, **fields) -> None:
        with self._lock:
            self.items.append((time.time(), event_type, fields))

    def of(self, event_type: str) -> list[tuple[float, dict]]:
        return [(t, f) for t, kind, f in self.items if kind == event_type]

    def close(self) -> None:
        pass


class ServedElsewhere:
    """A FakeOpenAIServer in a child process (forked; stopped by its pid): the VLM stand-in's
    own CPU then no longer shares this process's GIL with the loop being measured, as a real
    caption server would not. ``base_url`` as FakeOpenAIServer's."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.process = None
        self.base_url = ""

    def __enter__(self) -> "ServedElsewhere":
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        here, there = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(there, self.kwargs), daemon=True)
        self.process.start()
        self.base_url = here.recv()
        return self

    def __exit__(self, *exc) -> None:
        import signal

        os.kill(self.process.pid, signal.SIGTERM)
        self.process.join(10)


def _serve(conn, kwargs: dict) -> None:
    from tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(**kwargs) as srv:
        conn.send(srv.base_url)
        threading.Event().wait()


def synthetic_video(path: Path, frames: int, fps: float = 30.0, size=(320, 240)) -> Path:
    """An MJPEG AVI whose every frame differs (a moving bar and the frame number)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
        cv2.rectangle(img, ((i * 5) % size[0], 0), ((i * 5) % size[0] + 20, size[1]), (0, 0, 255), -1)
        cv2.putText(img, str(i), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
        w.write(img)
    w.release()
    return path


def long_clip(path: Path, repeat: int) -> Path:
    """clip_01_tears_of_steel.mp4 concatenated `repeat` times (mp4v), for decoding throughput."""
    cap = cv2.VideoCapture(str(DATA / "videos" / "clip_01_tears_of_steel.mp4"))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (w, h))
    for _ in range(repeat):
        for img in frames:
            out.write(img)
    out.release()
    return path


def stages(tmp: Path, vlm_url: str, *, tracker=None, events=None, timeout_s: float = 30.0):
    """The real stages, faces off, against the local VLM and the tiny summarizer."""
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from tests.tiny_models import build_tiny_mistral
    from video_summarizer.pipeline import Stages
    from vlm_client_module import VLMClient

    llm_dir = tmp / "tiny-mistral"
    if not llm_dir.exists():
        build_tiny_mistral(llm_dir)
    llm = LLMSummarizer(str(llm_dir), device="cpu", max_new_tokens=8)
    llm.load()
    vlm = VLMClient(vlm_url, None, "qwen3", timeout_s=timeout_s)
    # As the CLI does before reading (app/assembly.py): the check builds the openai client, whose
    # import (0.7-2 s of CPU) the first caption would otherwise pay inside the timed run.
    vlm.check()
    return Stages(tracker=tracker or LangfuseTracker(), vlm=vlm,
                  summarizer=llm, faces=None, events=events or RecordingEvents())


def run_source(spec: str, st, *, interval: float, max_inflight: int, min_change: float | None = 0.0,
               source=None, summary_interval: float = 1e9) -> tuple[float, object]:
    """Run one source through the loop; returns (seconds from start to the last caption, run).
    min_change None: the default selection (change gating and the motion detector on every frame)."""
    from video_summarizer.pipeline import PipelineConfig, SourceRun
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source

    cfg = PipelineConfig(summary_interval=summary_interval, max_inflight=max_inflight)
    with (source or open_source(spec)) as src:
        selector = FrameSelector(interval=interval) if min_change is None else FrameSelector(
            interval=interval, min_change=min_change)
        run = SourceRun(src, selector, st, cfg,
                        session_id="bench", stop_event=threading.Event())
        t0 = time.time()
        run.run()
    captions = st.events.of("caption")
    return (max(t for t, _ in captions) - t0 if captions else float("nan")), run


# -- 1. pipeline efficiency ------------------------------------------------------------------

def bench_efficiency(tmp: Path, reps: int) -> None:
    with ServedElsewhere(reply="A bar moves across a grey screen.", first_chunk_delay=0.3) as srv:
        for inflight in (1, 2, 4):
            n = 12 * inflight
            video = synthetic_video(tmp / f"eff{inflight}.avi", n)
            ratios = []
            for _ in range(reps):
                st = stages(tmp, srv.base_url)
                _, run = run_source(str(video), st, interval=0, max_inflight=inflight)
                caps = st.events.of("caption")
                starts = [t - f["latency_ms"] / 1000 for t, f in caps]
                span = max(t for t, _ in caps) - min(starts)
                ratios.append((len(caps) / span) / (inflight / 0.3))
            row(f"1. pipeline efficiency, --max-inflight {inflight} (300 ms VLM, {n} captions)",
                f"{statistics.median(ratios):.3f}", "≥ 0.95", statistics.median(ratios) >= 0.95)


# -- 3. file throughput ---------------------------------------------------------------------

def bench_throughput(tmp: Path, reps: int, repeat: int) -> None:
    clip = long_clip(tmp / "long.mp4", repeat)
    ratios, ours_s, plain_s = [], [], []
    with ServedElsewhere(reply="A street at night.") as srv:
        for _ in range(reps):
            t0 = time.perf_counter()
            cap = cv2.VideoCapture(str(clip))
            count = 0
            while cap.read()[0]:
                count += 1
            cap.release()
            plain = time.perf_counter() - t0
            st = stages(tmp, srv.base_url)
            ours, _ = run_source(str(clip), st, interval=1.0, max_inflight=2, min_change=None)
            ratios.append(ours / plain)
            ours_s.append(ours)
            plain_s.append(plain)
    r = statistics.median(ratios)
    row(f"3. file throughput, {count} frames at 1 frame/s, 0 ms VLM, faces off, default selection (motion "
        "detector on every frame) (ours ÷ plain decode)",
        f"{r:.2f}× ({statistics.median(ours_s):.2f} s vs {statistics.median(plain_s):.2f} s)", "≤ 1.2×", r <= 1.2)


# -- 6. memory -------------------------------------------------------------------------------

WARM_FRAMES = 2000  # past the first rolling summary (frame 1,800): torch's first-use buffers are in


class SyntheticSource:
    """Small frames as fast as they are asked for (a file-like, non-live source)."""

    live = False
    fps = 30.0
    frame_count = None
    frames_dropped = 0

    def __init__(self, count: int) -> None:
        from video_summarizer.sources import Frame

        self._frame = Frame
        self.count = count
        self.label = "synthetic"
        self._stop = threading.Event()
        self.rss_at: dict[int, float] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self):
        import psutil

        proc = psutil.Process()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        for i in range(self.count):
            if self._stop.is_set():
                return
            if i in (WARM_FRAMES, self.count - 1):
                gc.collect()
                self.rss_at[i] = proc.memory_info().rss / 2**20
            img = base.copy()
            img[0, 0, 0] = i % 255
            yield self._frame(i, i / self.fps, time.time(), img)


SERVERS = """
import sys
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
with FakeLangfuseServer(public_key="pk-bench", secret_key="sk-bench") as lf, \\
        FakeOpenAIServer(reply="A noisy square.") as srv:
    print(lf.base_url, srv.base_url, flush=True)
    sys.stdin.read()
"""


def bench_memory(tmp: Path, frames: int) -> None:
    from langfuse_tracker import LangfuseTracker

    # The stand-in servers keep every request they receive: they run in their own process so
    # that only the summarizer's memory is measured here.
    servers = subprocess.Popen([sys.executable, "-c", SERVERS], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        lf_url, vlm_url = servers.stdout.readline().split()
        tracker = LangfuseTracker(public_key="pk-bench", secret_key="sk-bench", base_url=lf_url)
        events = RecordingEvents()
        events.emit = lambda *a, **k: None  # keep nothing: the loop's own memory is what counts
        st = stages(tmp, vlm_url, tracker=tracker, events=events)
        src = SyntheticSource(WARM_FRAMES + frames)
        # a rolling summary every 60 s of video (1,800 frames), as in a real run
        run_source("synthetic", st, interval=0, max_inflight=4, source=src, summary_interval=60.0)
        tracker.close(deadline_s=10)
    finally:
        servers.stdin.close()
        servers.wait(10)
    start, end = src.rss_at[WARM_FRAMES], src.rss_at[WARM_FRAMES + frames - 1]
    row(f"6. RSS growth over {frames:,} frames after {WARM_FRAMES:,} of warm-up (fake VLM, tracing to "
        "local receiver, a rolling summary every 1,800 frames)",
        f"{end - start:+.1f} MB ({start:.0f} → {end:.0f} MB)", "< 20 MB", end - start < 20)


# -- 7. change gating ------------------------------------------------------------------------

HAMILTON_FACES = [(2, 3), (90, 96), (101, 102), (107, 109), (122, 125), (129, 129), (138, 140), (144, 179),
                  (181, 186), (197, 210)]
CUTS = {"short_hamilton_clip.mp4": ([20, 82, 211], 275), "clip_01_tears_of_steel.mp4": ([21, 65, 185], 240)}


def selected_frames(path: Path, interval: float, min_change: float | None) -> list[int]:
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source

    sel = FrameSelector(interval=interval) if min_change is None else FrameSelector(interval=interval,
                                                                                  min_change=min_change)
    with open_source(str(path)) as src:
        return [f.index for f in src if sel.select(f)]


def bench_gating(tmp: Path) -> None:
    for name, (cuts, total) in CUTS.items():
        path = DATA / "videos" / name
        if not path.is_file():
            row(f"7. gating at --interval 0.5 on {name}", f"not run: {path} not found (set SUMMARIZER_TEST_DATA)",
                "—", None)
            continue
        off = selected_frames(path, 0.5, 0.0)
        on = selected_frames(path, 0.5, None)
        spans = [(c, nxt - 1) for c, nxt in zip(cuts, cuts[1:] + [total])]
        if name.startswith("short_hamilton"):
            spans += HAMILTON_FACES
        hit = lambda frames, a, b: any(a <= f <= b for f in frames)  # noqa: E731
        lost = [s for s in spans if hit(off, *s) and not hit(on, *s)]
        fewer = 1 - len(on) / len(off)
        target = "≥ 40% fewer, nothing lost" if name.startswith("short_hamilton") else "nothing lost"
        ok = not lost and (fewer >= 0.40 or not name.startswith("short_hamilton"))
        row(f"7. gating at --interval 0.5 on {name}: VLM calls on vs off",
            f"{len(on)} vs {len(off)} ({fewer:.0%} fewer), lost: {lost or 'none'}", target, ok)
    # The generated clip of the tests: a figure of 3 % of a still, noisy, textured 160x120 scene.
    clip = ClipSet(tmp / "clips").figure_crossing()
    off = selected_frames(clip.path, 0.5, 0.0)
    on = selected_frames(clip.path, 0.5, None)
    in_view = [i for i in off if clip.figure_in_view(i)]
    seen = [i for i in in_view if i in on]
    row(f"7. gating at --interval 0.5 on the moving-figure clip (tests/clips.py: {clip.figure_share:.1%} of "
        f"{clip.size[0]}x{clip.size[1]}, noisy still scene): VLM calls on vs off; the figure's due frames in view "
        "captioned",
        f"{len(on)} vs {len(off)} ({1 - len(on) / len(off):.0%} fewer); in view: {len(seen)} of {len(in_view)}",
        "all in view", len(seen) == len(in_view))


# -- 8. live staleness -------------------------------------------------------------------------

def bench_staleness(tmp: Path, seconds: float) -> None:
    from tests.fake_openai import FakeOpenAIServer
    from tests.tiny_models import build_tiny_mistral

    fps = 30.0
    count = int(seconds * fps)
    data = synthetic_video(tmp / "live.avi", count, fps).read_bytes()
    fifo = tmp / "live-pipe.avi"
    os.mkfifo(fifo)
    llm_dir = tmp / "tiny-mistral"
    if not llm_dir.exists():
        build_tiny_mistral(llm_dir)

    def writer() -> None:  # the bytes of frame k go into the pipe at (about) k / fps
        step = len(data) // count
        t0 = time.monotonic()
        try:
            with open(fifo, "wb", buffering=0) as out:
                for k in range(count):
                    out.write(data[k * step:(k + 1) * step] if k < count - 1 else data[k * step:])
                    time.sleep(max(0.0, t0 + (k + 1) / fps - time.monotonic()))
        except BrokenPipeError:
            pass

    events = tmp / "live-events.jsonl"
    with FakeOpenAIServer(reply="A bar moves.", first_chunk_delay=0.3) as srv:
        threading.Thread(target=writer, daemon=True).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
        subprocess.run([sys.executable, str(REPO / "real_time_summarizer.py"), "--source", str(fifo), "--live",
                        "--interval", "0", "--min-change", "0", "--no-faces", "--max-inflight", "2",
                        "--vlm-base-url", srv.base_url, "--llm-model", str(llm_dir),
                        "--events", str(events), "--trace-log", str(tmp / "live-trace.jsonl")],
                       cwd=REPO, env=env, capture_output=True, timeout=seconds + 120, check=True)
    ages = [json.loads(line)["frame_age_ms"] for line in events.read_text().splitlines()
            if json.loads(line)["type"] == "caption"]
    p50, p95 = percentile(ages, 50), percentile(ages, 95)
    limit = 1000 / fps + 50
    row(f"8. live staleness, 30 fps pipe, 300 ms VLM, 2 in flight ({len(ages)} captions): frame age at VLM start",
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms", f"p95 ≤ {limit:.0f} ms", p95 <= limit)


# -- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and frames")
    ap.add_argument("--only", default="", help="comma-separated row numbers, e.g. 1,7")
    ap.add_argument("--models", default=os.environ.get("SUMMARIZER_REALSIZE_MODELS"),
                    help="row 23: folder of real-size models (../shared/tools/realsize_models.py); absent: skipped")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",") if x}
    want = lambda n: not only or n in only  # noqa: E731
    reps = 1 if args.quick else 3
    if not (DATA / "videos").is_dir() and any(want(n) for n in (3, 4)):
        print(f"shared data not found at {DATA} (set SUMMARIZER_TEST_DATA); rows 3 and 4 need it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="summarizer-bench-") as d:
        tmp = Path(d)
        if want(1):
            bench_efficiency(tmp, reps)
        if want(2):
            from bench import bench_tracing

            for r in bench_tracing.rows(quick=args.quick, which={2}):
                row(*r)
        if want(3):
            bench_throughput(tmp, reps, repeat=20 if args.quick else 40)
        if want(4):
            from bench import bench_faces

            for r in bench_faces.rows(quick=args.quick):
                row(*r)
        if want(5):
            from bench import bench_tracing

            for r in bench_tracing.rows(quick=args.quick, which={5}):
                row(*r)
        if want(6):
            bench_memory(tmp, 3000 if args.quick else 10000)
        if want(7):
            bench_gating(tmp)
        if want(8):
            bench_staleness(tmp, 10 if args.quick else 20)
        if want(9):
            from bench import bench_vlm_backends

            for r in bench_vlm_backends.rows(quick=args.quick):
                row(*r)
        for n, module in ((10, "bench_batch"), (11, "bench_soak"), (12, "bench_index"), (13, "bench_motion")):
            if want(n):  # batch efficiency and Ray scaling; a day on a camera; the search index
                for r in importlib.import_module(f"bench.{module}").rows(quick=args.quick):
                    row(*r)
        if want(24):  # alerts: entry to the first and the described notification; the rule checks' cost
            from bench import bench_alerts

            for r in bench_alerts.rows(quick=args.quick):
                row(*r)
        if want(23) and (only or args.models):  # the real architectures on this CPU: many minutes, opt-in
            from bench import bench_cpu_models

            for r in bench_cpu_models.rows(args.models, quick=args.quick):
                row(*r)
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
