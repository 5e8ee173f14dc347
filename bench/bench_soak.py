"""Soak: a simulated day on a camera with Langfuse down for a sixth of it.

17,280 processed frames (one every 5 s for 24 h), time compressed: each frame is captioned by
the real VLMClient against the fake OpenAI server and traced by the real LangfuseTracker (SDK
over HTTP) to the fake Langfuse receiver, with the trace log and the events file rotating
(1 MB each here, 100 MB by default) and the outbox on. The receiver answers 503 from 1/3 to
1/2 of the day. Measured: RSS growth after warm-up, threads, open files, disk used by the logs
and the outbox, and whether the receiver holds every span and score id of the day exactly once
(ids collected as the trace log writes them, since the rotated log keeps only its newest part).

    python -m bench.bench_soak [--quick]
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DAY_FRAMES = 17_280
QUICK_FRAMES = 1_440  # two hours
LOG_MB = 1.0


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1024 / 1024


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _disk(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _stand_ins(conn) -> None:
    """The fake Langfuse receiver and the fake VLM, in a child process: what they record of
    the day (every span, score and request) must not count as the summarizer's memory.
    Commands on ``conn``: ("mode", m), ("ids",) -> what the receiver kept, ("stop",)."""
    from tests.fake_langfuse import FakeLangfuseServer
    from tests.fake_openai import FakeOpenAIServer

    with FakeLangfuseServer(public_key="pk-soak", secret_key="sk-soak") as lf, \
            FakeOpenAIServer(reply="A person walks past the door.") as vlm_srv:
        conn.send((lf.base_url, vlm_srv.base_url))
        while True:
            command = conn.recv()
            if command[0] == "mode":
                lf.mode = command[1]
                conn.send(None)
            elif command[0] == "ids":
                conn.send((lf.kept_span_ids(), lf.kept_score_ids(),
                           sum(n - 1 for n in lf.span_receipts.values()),
                           sum(n - 1 for n in lf.score_receipts.values())))
            else:
                return


class StandIns:
    """The child process of ``_stand_ins``, stopped by its pid."""

    def __enter__(self) -> "StandIns":
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.conn, there = ctx.Pipe()
        self.process = ctx.Process(target=_stand_ins, args=(there,), daemon=True)
        self.process.start()
        self.langfuse_url, self.vlm_url = self.conn.recv()
        return self

    def ask(self, *command):
        self.conn.send(command)
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        import signal

        os.kill(self.process.pid, signal.SIGTERM)
        self.process.join(10)


def soak(frames: int) -> dict:
    """Run the simulated day; the figures as a dict."""
    from langfuse_tracker import LangfuseTracker
    from tests.fake_langfuse import wait_until
    from video_summarizer.outputs import EventWriter
    from video_summarizer.rotation import MB, rotated_paths
    from video_summarizer.tracing.outbox import Outbox
    from video_summarizer.tracing.trace_log import TraceLog
    from vlm_client_module import VLMClient

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    id_file = (tmp / "ids.txt").open("a")  # on disk, not in this process's memory

    class Tap(TraceLog):  # every id the trace log records, before rotation drops old ones
        def write(self, record: dict) -> None:
            kind = "scores" if record["type"] == "score" else "spans"
            id_file.write(f"{kind} {record['observation_id'] if record['type'] == 'trace' else record['id']}\n")
            super().write(record)

    down = range(frames // 3, frames // 3 + frames // 6)
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    figures: dict = {"frames": frames}
    os.environ.setdefault("LANGFUSE_FLUSH_INTERVAL", "1")
    with StandIns() as stand_ins:
        vlm = VLMClient(stand_ins.vlm_url, "none", "qwen3", timeout_s=5.0)
        outbox = Outbox(tmp / "outbox", 500, timeout_s=2.0, retry_s=5.0, max_retry_s=30.0)
        tracker = LangfuseTracker(public_key="pk-soak", secret_key="sk-soak", base_url=stand_ins.langfuse_url,
                                  trace_log=Tap(tmp / "traces.jsonl", int(LOG_MB * MB)),
                                  flush_at=256, timeout_s=2.0, outbox=outbox)
        events = EventWriter(str(tmp / "events.jsonl"), int(LOG_MB * MB))
        started, outbox_peak = time.monotonic(), 0
        for i in range(frames):
            if i == down.start:
                stand_ins.ask("mode", "503")
            elif i == down.stop:
                outbox_peak = _disk(list((tmp / "outbox").glob("*/*.batch")))
                stand_ins.ask("mode", "ok")
            if i == frames // 10:
                warm = {"rss": _rss_mb(), "threads": threading.active_count(), "fds": _open_files()}
            with tracker.create_trace("frame_processing", user_id="cam0", session_id="soak") as trace:
                with tracker.create_span(trace.id, "face_recognition"):
                    pass
                with tracker.start_generation(trace.id, "vlm_caption", model="qwen3",
                                              input="Describe the frame.") as gen:
                    result = vlm.generate_caption(image, "Describe the frame.")
                    gen.update(output=result.text,
                               completion_start_time=getattr(result, "completion_start_time", None))
                tracker.log_score(trace.id, "vlm_success", 1.0 if result.text else 0.0,
                                  observation_id=gen.id)
                tracker.log_score(trace.id, "caption_length", float(len(result.text)),
                                  observation_id=gen.id)
                tracker.log_score(trace.id, "overall_quality", 0.8, score_trace=True)
            events.emit("caption", seq=i, caption=result.text)
        figures["loop_s"] = time.monotonic() - started
        end = {"rss": _rss_mb(), "threads": threading.active_count(), "fds": _open_files()}
        wait_until(lambda: not any(outbox.waiting().values()), timeout=300)
        report = tracker.close(deadline_s=30.0)
        events.close()
        vlm.close()
        id_file.close()
        ids = {"spans": set(), "scores": set()}
        for line in (tmp / "ids.txt").read_text().splitlines():
            kind, value = line.split()
            ids[kind].add(value)
        kept_spans, kept_scores, span_dupes, score_dupes = stand_ins.ask("ids")
        logs = rotated_paths(tmp / "traces.jsonl") + rotated_paths(tmp / "events.jsonl")
        figures.update(
            rss_growth_mb=end["rss"] - warm["rss"], rss_end_mb=end["rss"],
            threads=(warm["threads"], end["threads"]), fds=(warm["fds"], end["fds"]),
            logs_mb=_disk(logs) / MB, log_files=len(logs), outbox_peak_mb=outbox_peak / MB,
            outbox_left=outbox.waiting(), resent=dict(outbox.resent),
            spans=len(ids["spans"]), scores=len(ids["scores"]),
            spans_kept_once=kept_spans == ids["spans"], scores_kept_once=kept_scores == ids["scores"],
            span_dupes=span_dupes, score_dupes=score_dupes, exit_line=report.message)
    return figures


def rows(quick: bool) -> list[tuple[str, str, str, str]]:
    """Benchmark rows (figure, measured, target, met) of the soak."""
    f = soak(QUICK_FRAMES if quick else DAY_FRAMES)
    day = f"{f['frames']} frames ({f['frames'] * 5 / 3600:.0f} h at 5 s), {f['loop_s']:.0f} s"
    once = f["spans_kept_once"] and f["scores_kept_once"] and not any(f["outbox_left"].values())
    bound = (6 * LOG_MB) * 2 + 0.1
    return [
        (f"soak {day}: RSS growth after warm-up", f"{f['rss_growth_mb']:+.1f} MB (end {f['rss_end_mb']:.0f} MB)",
         "< 50 MB", f["rss_growth_mb"] < 50),
        ("soak: threads (warm-up -> end)", f"{f['threads'][0]} -> {f['threads'][1]}", "no growth",
         f["threads"][1] <= f["threads"][0] + 1),
        ("soak: open files (warm-up -> end)", f"{f['fds'][0]} -> {f['fds'][1]}", "no growth",
         f["fds"][1] <= f["fds"][0] + 2),
        ("soak: disk used by trace log + events (1 MB bound each)",
         f"{f['logs_mb']:.1f} MB in {f['log_files']} files", f"<= {bound:.0f} MB", f["logs_mb"] <= bound),
        ("soak: outbox at the end of the outage (1/6 of the day)", f"{f['outbox_peak_mb']:.1f} MB",
         "< 500 MB (the bound)", f["outbox_peak_mb"] < 500),
        ("soak: receiver holds every span and score id of the day once",
         f"{f['spans']} spans, {f['scores']} scores: {'all, once' if once else 'NO'}; "
         f"re-sent {f['resent']['spans']}+{f['resent']['scores']}; "
         f"duplicate receipts {f['span_dupes']}+{f['score_dupes']}", "all, once", once),
    ]


if __name__ == "__main__":
    for row in rows("--quick" in sys.argv):
        print(" | ".join(map(str, row)))
