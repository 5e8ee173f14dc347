"""Outputs that cannot be written: a full disk (/dev/full gives ENOSPC on every write), a path
taken by a folder, a pipe nobody reads. Each is one line naming its option when it fails, the
run goes on without it, exits 1 and names it again at the end; nothing hangs, and SIGTERM ends
such a run within --shutdown-timeout and --flush-timeout. The CLI runs in a subprocess against
the local OpenAI-streaming server (captions and summaries), on generated clips."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_runner import CLI, cli_env, read_events, sent_image
from tests.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.slow

FULL = "/dev/full"
NO_SPACE = os.strerror(28)  # ENOSPC: "No space left on device"
RUN_BOUND_S = 90.0  # a 3-frame run takes a few seconds; the old code never ended


def _args(srv: FakeOpenAIServer, source: Path, *more: str) -> list[str]:
    return [sys.executable, CLI, "--source", str(source), "--vlm-base-url", srv.base_url, "--vlm-model", "qwen3",
            "--llm-base-url", srv.base_url, "--llm-model", "qwen3", "--no-faces", "--interval", "1",
            "--min-change", "0", *more]


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """The CLI with stderr to a file (read while it runs), its own process group."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen(args, env=cli_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=fh, text=True, cwd=tmp_path, start_new_session=True)
    return proc, err


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """Its exit status and stdout; None when it had to be killed (it hung)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def _lines(err: Path) -> list[str]:
    return [line for line in err.read_text().splitlines() if line.strip()]


def _naming(lines: list[str], option: str) -> list[str]:
    return [line for line in lines if option in line]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(reply_fn=lambda body: "A figure walks across a small room.") as srv:
        yield srv


def test_events_on_a_full_disk_are_said_once_and_the_run_ends_with_exit_1(tmp_path, clips, server):
    clip = clips.numbered(seconds=3.0)  # frames 0, 10, 20 at one a second
    trace = tmp_path / "trace.jsonl"
    t0 = time.monotonic()
    proc, err = _start(_args(server, clip.path, "--summary-interval", "2", "--events", FULL,
                             "--trace-log", str(trace)), tmp_path)
    code, out = _finish(proc, RUN_BOUND_S)
    took = time.monotonic() - t0
    lines = _lines(err)
    assert code == 1, (code, took, lines[-20:])
    assert "Traceback" not in err.read_text()
    assert _naming(lines, "--events") == [
        f"--events: cannot write {FULL} ({NO_SPACE}); the run goes on without it",
        f"Not written: --events ({NO_SPACE})"], lines
    assert lines[-1] == f"Not written: --events ({NO_SPACE})"
    # the run went on without its events: every frame captioned and traced, the summary printed
    captions = [r for r in read_events(trace) if r["type"] == "generation" and r["name"] == "vlm_caption"]
    assert len(captions) == 3 and all(c["level"] == "DEFAULT" for c in captions), captions
    assert out.strip(), lines


def test_sigterm_ends_a_run_whose_events_fail_within_its_bounds(tmp_path, clips):
    """The first caption comes back (its event fails on the full disk); the others hang at the VLM,
    so the run waits for them with the source read: SIGTERM must end it within the shutdown and
    flush deadlines. (Before, the failed frame's job was never resolved: no signal ended it.)"""
    release = threading.Event()
    served = []

    def reply(body: dict) -> str:
        if sent_image(body) is None:
            return "A summary."
        served.append(1)
        if len(served) > 1:
            release.wait(60)  # longer than the test waits
        return "A figure in a room."

    with FakeOpenAIServer(reply_fn=reply) as srv:
        clip = clips.numbered(seconds=3.0)
        proc, err = _start(_args(srv, clip.path, "--max-inflight", "3", "--vlm-timeout", "120",
                                 "--shutdown-timeout", "2", "--flush-timeout", "2", "--events", FULL,
                                 "--trace-log", str(tmp_path / "trace.jsonl")), tmp_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not ("--events" in err.read_text() or "Traceback" in err.read_text()):
                time.sleep(0.1)
            time.sleep(0.5)  # the source is read by now: the run waits for the hanging captions
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, _out = _finish(proc, 30)
            took = time.monotonic() - sent
        finally:
            release.set()
    lines = _lines(err)
    assert code == 143, (code, lines[-20:])
    assert took < 2 + 2 + 2 + 3, took  # drain + final summary + flush deadlines, and slack
    assert "Traceback" not in err.read_text()
    assert len([line for line in lines if line.startswith("--events:")]) == 1, lines
    assert lines[-1] == f"Not written: --events ({NO_SPACE})", lines


def test_a_trace_log_on_a_full_disk_is_said_once_and_the_run_goes_on(tmp_path, clips, server):
    clip = clips.numbered(seconds=3.0)
    events = tmp_path / "events.jsonl"
    proc, err = _start(_args(server, clip.path, "--trace-log", FULL, "--events", str(events)), tmp_path)
    code, out = _finish(proc, RUN_BOUND_S)
    lines = _lines(err)
    assert code == 1, (code, lines[-20:])
    assert "Traceback" not in err.read_text()
    assert _naming(lines, "--trace-log") == [
        f"--trace-log: cannot write {FULL} ({NO_SPACE}); the run goes on without it after 0 lines",
        f"Not written: --trace-log ({NO_SPACE})"], lines
    assert lines[-1] == f"Not written: --trace-log ({NO_SPACE})"
    assert sorted(e["frame"] for e in read_events(events) if e["type"] == "caption") == [0, 10, 20]
    assert out.strip()


def test_summaries_that_cannot_be_written_fail_their_input_and_are_named(tmp_path, clips, server):
    """--output-dir: the summary's name is taken by a folder (EISDIR, whoever runs the test);
    --summary-out: a pipe nobody reads (ENXIO). Both named once, then at the end; exit 1; the next
    run redoes the input."""
    clip = clips.numbered(seconds=2.0)
    out = tmp_path / "out"
    (out / "clip.summary.md").mkdir(parents=True)
    source = tmp_path / "clip.avi"
    source.write_bytes(clip.path.read_bytes())
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    proc, err = _start(_args(server, source, "--output-dir", str(out), "--summary-out", str(fifo)), tmp_path)
    code, _ = _finish(proc, RUN_BOUND_S)
    lines = _lines(err)
    assert code == 1, (code, lines[-20:])
    assert "Traceback" not in err.read_text()
    assert [line for line in lines if line.startswith("--output-dir:")] == [
        f"--output-dir: cannot write the summaries in {out} ({os.strerror(21)}); the inputs without "
        "them are redone by the next run"], lines
    assert [line for line in lines if line.startswith("--summary-out:")] == [
        f"--summary-out: cannot write {fifo} ({os.strerror(6)}); the summary is on stdout above"], lines
    assert lines[-1] == f"Not written: --output-dir ({os.strerror(21)}), --summary-out ({os.strerror(6)})"
    assert f"  {source}: summary not written ({os.strerror(21)})" in err.read_text().splitlines()
    assert fifo.exists() and not fifo.is_file()  # written in place, never replaced by a file
    assert not (out / "clip.summary.json").exists()  # not marked done: the next run redoes it
