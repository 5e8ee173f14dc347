"""Captions never wait on a summary; a slow summarizer's windows merge; the final summary covers every caption.

The real loop (SourceRun, the real selector, the real tracker writing its trace log) over a
live source fed from a list at a camera's pace, with a caption model that takes 0.1 s and a
summary model three times slower than its window. Each frame's image carries its index, and
each caption names it, so the summaries' inputs can be checked caption by caption.
"""
from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np

from video_summarizer.backends import CaptionModel, SummaryModel
from video_summarizer.results import CaptionResult, SummaryResult
from video_summarizer.sources import Frame

FRAME_GAP_S = 0.05  # a 20 fps camera
INTERVAL_S = 0.2  # a caption every 0.2 s asked for
SUMMARY_INTERVAL_S = 0.6
SUMMARY_S = 1.8  # three summary windows per summary


def _image(index: int) -> np.ndarray:
    image = np.full((8, 8, 3), 10 * (index % 20), np.uint8)  # the selector sees each frame change
    image[0, 0, 0], image[0, 0, 1] = index // 256, index % 256
    return image


class ListCamera:
    """A live source: the listed frames, one every FRAME_GAP_S of wall time, stamped with the wall clock."""

    live = True
    label = "cam"
    spec = "list"

    def __init__(self, count: int) -> None:
        self.count = count

    def __iter__(self):
        for i in range(self.count):
            now = time.time()
            yield Frame(i, now, now, _image(i))
            time.sleep(FRAME_GAP_S)


class TimedCaptions(CaptionModel):
    """Names the frame it was given; takes `seconds`; notes when each caption started."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.starts: list[float] = []

    def generate_caption(self, frame, prompt):
        start = time.time()
        self.starts.append(start)
        time.sleep(self.seconds)
        index = int(frame[0, 0, 0]) * 256 + int(frame[0, 0, 1])
        return CaptionResult(text=f"frame {index}", success=True, model="cap", start_time=start,
                             end_time=time.time(), completion_start_time=start + self.seconds / 2)


class SlowSummaries(SummaryModel):
    """Takes `seconds` a summary; notes each call's captions and how many calls ran at once."""

    def __init__(self, seconds: float = SUMMARY_S) -> None:
        self.seconds = seconds
        self.windows: list[list[str]] = []
        self.starts: list[float] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def build_messages(self, captions, previous_summary, **kw):
        self.windows.append([c.text for c in captions])
        return super().build_messages(captions, previous_summary, **kw)

    def generate(self, messages):
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        start = time.time()
        self.starts.append(start)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return SummaryResult(text="Things happen.", success=True, model="sum", start_time=start,
                             end_time=time.time(), completion_start_time=start + 0.1)


def _run(tmp_path, frames: int, vlm: CaptionModel, llm: SummaryModel, *, summary_interval: float,
         interval: float = INTERVAL_S, observe=None, stop: threading.Event | None = None):
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
    from video_summarizer.selection import FrameSelector

    events: list[tuple[str, dict]] = []
    writer = EventWriter(None)
    writer.add_listener(lambda kind, record: events.append((kind, record)))
    tracker = LangfuseTracker(public_key="", secret_key="", trace_log=tmp_path / "trace.jsonl")
    stages = Stages(tracker=tracker, vlm=vlm, summarizer=llm, faces=None, events=writer,
                    source_observers=[observe] if observe else [])
    run = SourceRun(ListCamera(frames), FrameSelector(interval=interval, min_change=0.0), stages,
                    PipelineConfig(summary_interval=summary_interval, max_inflight=1), session_id="s",
                    stop_event=stop or threading.Event())
    try:
        doc = run.run()
    finally:
        tracker.close(deadline_s=5)
    return run, doc, events


def test_a_slow_summarizer_neither_slows_captions_nor_loses_one(tmp_path, caplog, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    caplog.set_level(logging.INFO, logger="video_summarizer.pipeline")
    vlm, llm = TimedCaptions(0.1), SlowSummaries()
    frames = 90
    camera_s = frames * FRAME_GAP_S  # 4.5 s
    run, doc, events = _run(tmp_path, frames, vlm, llm, summary_interval=SUMMARY_INTERVAL_S)

    # Captions keep their pace: one about every 0.2 s while 1.8 s summaries run beside them.
    gaps = [b - a for a, b in zip(vlm.starts, vlm.starts[1:])]
    assert len(vlm.starts) >= 15 and max(gaps) < 0.6, gaps
    assert doc.stats["dropped_busy"] <= len(vlm.starts) // 3  # the slot was mostly free when a frame came due

    # Windows merge: a window due while one waited was folded into the next, said once.
    merged = [r for r in caplog.records if "windows merged" in r.getMessage()]
    assert len(merged) == 1 and doc.stats["summaries_merged"] >= 1 and llm.most_running == 1
    # Nothing queued: one call per SUMMARY_S of camera (and one started last), the one waiting at the
    # end and the final; a queue of every window would have made one call per window (7 here).
    windows_due = int(camera_s / SUMMARY_INTERVAL_S)
    assert len(llm.windows) <= camera_s / SUMMARY_S + 3 < windows_due

    # Every caption is in exactly one summary's input, in order.
    captions = [r["caption"] for kind, r in events if kind == "caption"]
    fed = [text for window in llm.windows for text in window]
    assert fed == captions and len(set(fed)) == len(fed) == doc.stats["captioned"]
    summaries = [r for kind, r in events if kind == "summary"]
    assert [s["captions_used"] for s in summaries] == [len(w) for w in llm.windows]
    # the final summary (when captions came after the last window) comes last, after the lane drained
    assert not any(s["final"] for s in summaries[:-1]) and doc.summary == "Things happen."
    # A merged window is larger than one window's worth (3 captions): it covers all since the last summary.
    assert max(len(w) for w in llm.windows[:-1]) > SUMMARY_INTERVAL_S / INTERVAL_S
    assert doc.stats["summaries"] == len(llm.windows)

    # The rolling summaries' spans stay on the trace of the frame that made them due.
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    frame_traces = {r["id"] for r in lines if r["type"] == "trace" and r["name"] == "frame_processing"}
    rolling = [s["trace_id"] for s in summaries if not s["final"]]
    gens = [r for r in lines if r["type"] == "generation" and r["name"] == "llm_summary"]
    assert rolling and set(rolling) <= frame_traces
    assert sorted(g["trace_id"] for g in gens if g["trace_id"] in frame_traces) == sorted(rolling)
    overall = [r["trace_id"] for r in lines if r["type"] == "score" and r["name"] == "overall_quality"]
    assert sorted(t for t in overall if t in frame_traces) == sorted(frame_traces)  # once each, none lost


def test_stopping_leaves_a_running_summary_and_the_final_one_covers_its_captions(tmp_path, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    vlm, llm, stop = TimedCaptions(0.1), SlowSummaries(), threading.Event()
    timer = threading.Timer(1.5, stop.set)  # Ctrl-C while the first summary (0.6 s to 2.4 s) is written
    timer.start()
    try:
        run, doc, events = _run(tmp_path, 200, vlm, llm, summary_interval=SUMMARY_INTERVAL_S, stop=stop)
    finally:
        timer.cancel()
    ended = time.time()
    captions = [r["caption"] for kind, r in events if kind == "caption"]
    assert doc.interrupted and len(llm.windows) == 2  # the one left running, then the final
    assert llm.windows[-1] == captions  # the final one has them all, those of the summary left included
    # the one left running still ends (and says so) while the final is written beside it
    assert [r["final"] for kind, r in events if kind == "summary"] in ([False, True], [True])
    assert llm.starts[1] - llm.starts[0] < SUMMARY_S  # the final did not wait for the one left running
    assert ended - llm.starts[1] < SUMMARY_S + 1.0


def test_a_live_source_says_once_what_the_caption_pace_allows(tmp_path, caplog, monkeypatch):
    from video_summarizer.watch.metrics import RunMetrics

    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    caplog.set_level(logging.INFO, logger="video_summarizer.pipeline")
    metrics = RunMetrics(interval_s=0.1)
    scraped: list[bytes] = []

    class Scraping(TimedCaptions):  # /metrics read while the source runs, after the first captions
        def generate_caption(self, frame, prompt):
            if len(self.starts) == 5:
                scraped.append(metrics.exposition())
            return super().generate_caption(frame, prompt)

    vlm = Scraping(0.3)
    run, doc, _events = _run(tmp_path, 50, vlm, SlowSummaries(0.0), summary_interval=1000.0, interval=0.1,
                             observe=metrics.on_source)
    said = [r.getMessage() for r in caplog.records if "captions take" in r.getMessage()]
    assert said == ["cam: captions take ~0.3 s here: one frame in 0.3 s is captioned "
                    "(--interval asks for one in 0.1 s)"]
    assert 0.28 <= run.pace.estimate < 0.45
    gauge = [line for line in scraped[0].decode().splitlines()
             if line.startswith('summarizer_caption_seconds_estimate{source="cam"}')]
    assert len(gauge) == 1 and 0.28 <= float(gauge[0].split()[-1]) < 0.45


def test_pace_in_words_for_a_fast_model_and_for_several_slots():
    from video_summarizer.loop.pacing import CaptionPace
    from video_summarizer.results import CaptionOutcome

    def outcome(seconds: float, ok: bool = True) -> CaptionOutcome:
        result = CaptionResult(text="x" if ok else "", success=ok, model="m", start_time=0.0, end_time=seconds)
        return CaptionOutcome(result, "p", None, None, {}, 100.0, 100.0 + seconds, model="m")

    fast = CaptionPace("cam", live=True, interval=5.0, slots=1)
    fast.observe(outcome(9.0, ok=False))  # a failure is not timed
    for seconds in (2.0, 0.4, 0.5):  # the median leaves the first call's warm-up out
        fast.observe(outcome(seconds))
    assert fast.estimate == 0.5
    assert fast.sentence() == "captions take ~0.5 s here: one frame every 5 s (--interval) is captioned"
    fast.observe(outcome(1.5))
    assert abs(fast.estimate - 0.7) < 1e-9  # later captions move it a fifth of the way
    served = CaptionPace("cam", live=True, interval=2.0, slots=2)
    for seconds in (8.0, 8.0, 8.0):
        served.observe(outcome(seconds))
    assert served.sentence() == ("captions take ~8 s here (2 at a time): one frame in 4.0 s is captioned "
                                 "(--interval asks for one in 2.0 s)")
