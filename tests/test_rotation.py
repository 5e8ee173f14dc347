"""Bounded logs: --trace-log-max-mb and --events-max-mb rotate PATH to PATH.1 ... PATH.5 at a line
boundary; every file stays valid JSON lines, the total stays bounded, trace_report.py reads them all."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from langfuse_tracker import LangfuseTracker
from tests.cli_runner import cli_args, cli_env, image_digest_reply, run_here
from tests.fake_openai import FakeOpenAIServer
from trace_report import compute_report
from video_summarizer.options import SourceOptions
from video_summarizer.outputs import EventWriter
from video_summarizer.rotation import BACKUPS, MB, RotatingLines, rotated_paths
from video_summarizer.tracing.trace_log import TraceLog

REPO = Path(__file__).resolve().parent.parent


def _files(path: Path) -> list[Path]:
    return rotated_paths(path)


def _rows(paths: list[Path]) -> list[dict]:
    rows = []
    for p in paths:
        data = p.read_bytes()
        assert data.endswith(b"\n"), p  # cut at a line boundary
        rows += [json.loads(line) for line in data.decode("utf-8").split("\n") if line]
    return rows


def test_rotation_keeps_whole_lines_the_newest_ones_and_a_bounded_total(tmp_path):
    path, max_bytes = tmp_path / "log.jsonl", 2000
    writer = RotatingLines(path, max_bytes)
    for i in range(1000):
        # U+2028 inside a string: JSON keeps it as it is, and it must not split the line
        writer.write(json.dumps({"i": i, "text": "caption\u2028é" * (i % 5)}, ensure_ascii=False) + "\n")
    writer.close()
    files = _files(path)
    assert [p.name for p in files] == [f"log.jsonl.{n}" for n in range(BACKUPS, 0, -1)] + ["log.jsonl"]
    assert not (tmp_path / f"log.jsonl.{BACKUPS + 1}").exists()
    assert all(p.stat().st_size <= max_bytes for p in files)
    assert sum(p.stat().st_size for p in files) <= (BACKUPS + 1) * max_bytes
    numbers = [row["i"] for row in _rows(files)]
    assert numbers == list(range(numbers[0], 1000)) and numbers[0] > 0  # oldest dropped, order kept


def test_a_rotated_trace_log_is_reported_whole(tmp_path):
    path = tmp_path / "traces.jsonl"
    tracker = LangfuseTracker(trace_log=TraceLog(path, max_bytes=4000))  # no keys: trace log only
    for i in range(60):
        with tracker.create_trace("frame_processing", user_id="cam0", session_id="s") as trace:
            with tracker.start_generation(trace.id, "vlm_caption", model="qwen3") as gen:
                gen.update(output=f"caption {i}")
            tracker.log_score(trace.id, "vlm_success", 1.0, observation_id=gen.id)
    tracker.close()
    files = _files(path)
    assert len(files) == BACKUPS + 1 and all(p.stat().st_size <= 4000 for p in files)
    rows = _rows(files)
    traces = [r for r in rows if r["type"] == "trace"]
    report = compute_report(files)
    assert report["counts"]["traces"] == len(traces) and 0 < len(traces) < 60
    out = subprocess.run([sys.executable, str(REPO / "trace_report.py"), str(path), "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["files"] == [str(p) for p in files]
    assert json.loads(out.stdout)["counts"]["traces"] == len(traces)


def test_events_rotate_and_stdout_never_does(tmp_path):
    path = tmp_path / "events.jsonl"
    events = EventWriter(str(path), max_bytes=1500)
    for i in range(200):
        events.emit("caption", seq=i, caption="A man speaks at a podium.")
    events.close()
    files = _files(path)
    assert len(files) == BACKUPS + 1 and all(p.stat().st_size <= 1500 for p in files)
    seqs = [r["seq"] for r in _rows(files)]
    assert seqs == list(range(seqs[0], 200))


def test_default_bounds_live_sources_only():
    assert SourceOptions(sources=("cam0",)).log_max_bytes(None) == 100 * MB
    assert SourceOptions(sources=("rtsp://cam.local/stream",)).log_max_bytes(None) == 100 * MB
    assert SourceOptions(sources=("clip.mp4",)).log_max_bytes(None) == 0
    assert SourceOptions(sources=("clip.mp4",), live=True).log_max_bytes(None) == 100 * MB
    assert SourceOptions(sources=("cam0",)).log_max_bytes(0) == 0
    assert SourceOptions(sources=("clip.mp4",)).log_max_bytes(0.5) == MB // 2


def test_the_cli_bounds_both_logs(tmp_path, clips, tiny_llm):
    clip = clips.still_noisy(seconds=3.0, fps=20.0)  # 12 frames at 0.25 s
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        run = run_here(cli_args(vlm.base_url, tiny_llm, "--source", str(clip.path), "--no-faces",
                                "--interval", "0.25", "--min-change", "0",
                                "--trace-log", str(tmp_path / "trace.jsonl"), "--trace-log-max-mb", "0.004",
                                "--events", str(tmp_path / "events.jsonl"), "--events-max-mb", "0.001"),
                       cli_env(tmp_path))
    assert run.returncode == 0, run.stderr
    for name, bound in (("trace.jsonl", 0.004 * MB), ("events.jsonl", 0.001 * MB)):
        files = _files(tmp_path / name)
        assert len(files) >= 2, files  # it rotated
        rows = _rows(files)  # every line of every file is JSON
        assert rows and sum(p.stat().st_size for p in files) <= (BACKUPS + 1) * bound + 2000
    captions = [r for r in _rows(_files(tmp_path / "events.jsonl")) if r["type"] == "caption"]
    times = [c["video_time"] for c in captions]
    # the newest kept, each once (two captions in flight may end out of frame order)
    assert captions and len(set(times)) == len(times) and max(times) >= 2.5, times
    stats = [r for r in _rows(_files(tmp_path / "events.jsonl")) if r["type"] == "stats"]
    assert stats  # the last events are in PATH
