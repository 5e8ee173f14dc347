"""Fault injection: every failure the tool meets in the field, run as a user would run it: in this
process (tests/cli_runner.run_here), in a subprocess where the process is the point (a signal, a
Langfuse host that hangs the SDK's threads, a server going away mid-run).

For each case: no traceback, the right exit code and one clear message, every events line is
JSON, the final summary and stats are written where any caption succeeded, the run ends within
its deadline, and no configured secret appears in stdout, stderr, the events or the trace log.
Run alone with `pytest -m faults`.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_runner import (
    TEST_SECRET_KEY,
    cli_args,
    cli_env,
    image_digest_reply,
    run_cli,
    run_here,
    selected_frames,
)
from tests.clip_server import ClipServer
from tests.clips import Clip, ClipSet
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.faults

VLM_SECRET = "sk-vlm-secret-DO-NOT-LEAK-91be"
INTERVAL = 0.25  # _base's --interval


@pytest.fixture(scope="module")
def short(clips) -> Clip:
    """1.25 s at 20 fps (generated): five frames at --interval 0.25, short runs."""
    return clips.still_noisy(seconds=1.25, fps=20.0)


def _selected(clip: Clip) -> list[int]:
    return selected_frames(clip.fps, clip.frame_count, INTERVAL)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Outcome:
    """A finished run with its files, and the checks every case shares."""

    def __init__(self, tmp: Path, returncode: int, stdout: str, stderr: str, took: float) -> None:
        self.tmp, self.returncode, self.stdout, self.stderr, self.took = tmp, returncode, stdout, stderr, took
        path = tmp / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        self.events = [json.loads(line) for line in lines if line.strip()]  # any bad line fails here

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]

    def check_common(self, *, deadline: float) -> None:
        assert "Traceback" not in self.stderr, self.stderr
        assert self.took < deadline, (self.took, deadline)
        texts = [self.stdout, self.stderr] + [p.read_text() for p in self.tmp.glob("*.jsonl")]
        for secret in (TEST_SECRET_KEY, VLM_SECRET):
            assert not any(secret in t for t in texts), f"{secret} leaked"
        if self.of("caption"):
            assert self.stdout.strip(), "a caption succeeded but no final summary was printed"
            assert self.of("stats")


def _run(tmp: Path, args: list[str], env: dict, *, timeout: float = 120, here: bool = True) -> Outcome:
    t0 = time.monotonic()
    run = (run_here if here else run_cli)(args, env, timeout=timeout)
    return Outcome(tmp, run.returncode, run.stdout, run.stderr, time.monotonic() - t0)


def _base(vlm_url: str, llm: Path, tmp: Path, source: str, *more: str) -> list[str]:
    return cli_args(vlm_url, llm, "--source", source, "--no-faces", "--interval", str(INTERVAL), "--min-change", "0",
                    "--events", str(tmp / "events.jsonl"), "--trace-log", str(tmp / "trace.jsonl"),
                    "--vlm-timeout", "2", *more)


# -- the VLM --------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["500", "429", "cut", "garbage", "hang"])
def test_vlm_faults(tmp_path, short, tiny_llm, fault):
    n = len(_selected(short))
    assert n == 5
    with FakeOpenAIServer(reply_fn=image_digest_reply, api_key=VLM_SECRET) as srv:
        if fault == "500":
            srv.fail_next(status=500, n=1000)
        elif fault == "429":
            srv.fail_next(status=429, n=1, headers={"Retry-After": "1"})
        else:
            srv.set_mode(fault)
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, str(short.path)),
                   cli_env(tmp_path, VLM_API_KEY=VLM_SECRET))
    # 5 frames at 0.25 s (25 frames at 20 fps); a hanging server costs 2 s a frame (--vlm-timeout), 2 in flight
    out.check_common(deadline=60)
    if fault == "429":
        assert out.returncode == 0, out.stderr
        assert len(out.of("caption")) == n and not out.of("error")
        assert sorted(e["frame"] for e in out.of("caption")) == _selected(short)
    else:
        assert out.returncode == 1, out.stderr  # the input failed: nothing could be captioned
        assert not out.of("caption") and len([e for e in out.of("error") if e["stage"] == "vlm"]) == n
        kinds = {e["kind"] for e in out.of("error") if e["stage"] == "vlm"}
        expected = {"500": "server_error", "cut": "stream_broken", "garbage": "bad_response", "hang": "timeout"}
        assert kinds == {expected[fault]}, kinds
        assert f"none of {n} selected frames could be captioned" in out.stderr
        # five failed frames: one line while it lasts, not one a frame
        failing = [line for line in out.stderr.splitlines() if line.startswith("VLM: captions failing")]
        assert len(failing) == 1 and failing[0].startswith(f"VLM: captions failing ({expected[fault]}: ")


def test_a_vlm_outage_is_said_when_it_starts_and_when_it_ends(tmp_path, short, tiny_llm):
    with FakeOpenAIServer(reply_fn=image_digest_reply) as srv:
        srv.fail_next(status=500, n=8)  # the client tries each frame 4 times: frames 1 and 2 fail
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, str(short.path),
                                   "--max-inflight", "1"), cli_env(tmp_path))
    out.check_common(deadline=60)
    assert out.returncode == 0, out.stderr
    frames = _selected(short)
    assert len(out.of("caption")) == len(frames) - 2 and [e["frame"] for e in out.of("error")] == frames[:2]
    said = [line for line in out.stderr.splitlines() if line.startswith("VLM: captions")]
    assert len(said) == 2, out.stderr
    assert said[0].startswith("VLM: captions failing (server_error: HTTP 500")
    assert re.fullmatch(r"VLM: captions work again after \d+ s \(2 frames not captioned meanwhile\)",
                        said[1]), said


def test_vlm_refused_mid_run(tmp_path, short, tiny_llm):
    srv = FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.5).start()
    args = _base(srv.base_url, tiny_llm, tmp_path, str(short.path), "--max-inflight", "1")
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "events.jsonl"
    while time.monotonic() - t0 < 60 and not (events.exists() and '"caption"' in events.read_text()):
        time.sleep(0.05)
    srv.close()  # the server goes away: the next calls are refused
    out_s, err_s = proc.communicate(timeout=60)
    out = Outcome(tmp_path, proc.returncode, out_s, err_s, time.monotonic() - t0)
    out.check_common(deadline=60)
    assert out.returncode == 0  # one caption made it: the input is summarized from it
    assert len(out.of("caption")) >= 1
    kinds = {e["kind"] for e in out.of("error") if e["stage"] == "vlm"}
    # the call in flight when the server vanished may time out instead; every later one is refused
    assert "connection" in kinds and kinds <= {"connection", "timeout"}, kinds


def test_vlm_unknown_model_at_start(tmp_path, short, tiny_llm):
    with FakeOpenAIServer(models=["llava"]) as srv:
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, str(short.path)),
                   cli_env(tmp_path))
    out.check_common(deadline=30)
    assert out.returncode == 2 and len(out.errors()) == 1 and "--vlm-model" in out.errors()[0]


# -- Langfuse ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["refuse", "hang", "401", "500"])
def test_langfuse_faults_do_not_stop_or_hang_the_run(tmp_path, short, tiny_llm, mode):
    n = len(_selected(short))
    with FakeLangfuseServer(mode, public_key="pk-test-e2e", secret_key="another-secret") as lf, \
            FakeOpenAIServer(reply_fn=image_digest_reply) as srv:
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, str(short.path),
                                   "--flush-timeout", "2"),
                   cli_env(tmp_path, langfuse_url=lf.base_url), here=False)  # the SDK's threads hang with the host
    out.check_common(deadline=40)
    assert out.returncode == 0, out.stderr
    assert len(out.of("caption")) == n == 5
    trace_log = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert len([r for r in trace_log if r["type"] == "trace" and r["name"] == "frame_processing"]) == n
    # One clear line while it fails, one at exit; not the SDK's line per batch and retry.
    noise = [line for line in out.stderr.splitlines() if line.startswith(SDK_NOISE)]
    assert noise == [], noise
    failing = [line for line in out.stderr.splitlines() if line.startswith("Langfuse: cannot send to")]
    if LANGFUSE_REASON[mode] is None:  # hanging: the exit line says so, a timeout may come first
        assert len(failing) <= 1 and all("(timed out)" in line for line in failing), failing
    else:
        assert len(failing) == 1 and f"({LANGFUSE_REASON[mode]}" in failing[0], out.stderr
    exit_lines = [line for line in out.stderr.splitlines() if line.startswith("Langfuse: ")
                  and " acknowledged by " in line]
    assert len(exit_lines) == 1, out.stderr
    # What the host did not take waits in the outbox (tests/test_outbox.py), also what the SDK
    # still held at the deadline (a hanging host): nothing "may be lost".
    assert "wait in the outbox" in exit_lines[0] and "may be lost" not in exit_lines[0], exit_lines


SDK_NOISE = ("Transient error", "API error", "Failed to export", "Error while fetching prompt",
             "Internal server error occurred", "Unauthorized. Please check")
LANGFUSE_REASON = {"refuse": "Connection refused", "hang": None, "401": "HTTP 401", "500": "HTTP 500"}


# -- input --------------------------------------------------------------------------------------

def _bad_inputs(clips: ClipSet, tmp: Path) -> dict[str, str]:
    src = clips.hard_cuts().path.read_bytes()
    (tmp / "truncated.mp4").write_bytes(src[: len(src) // 2])
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    return {"truncated": str(tmp / "truncated.mp4"), "zero-byte": str(tmp / "empty.mp4"),
            "not-a-video": str(tmp / "notes.mp4"), "no-camera": "cam9"}


@pytest.mark.parametrize("case", ["truncated", "zero-byte", "not-a-video", "no-camera"])
def test_bad_inputs(tmp_path, clips, tiny_llm, case):
    source = _bad_inputs(clips, tmp_path)[case]
    with FakeOpenAIServer() as srv:
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, source), cli_env(tmp_path))
    out.check_common(deadline=30)
    assert out.returncode == 2, out.stderr
    assert len(out.errors()) == 1 and out.errors()[0].startswith("Error: --source:"), out.stderr
    if case in ("zero-byte", "no-camera"):  # known without opening it: said before any model loads
        assert "Loading" not in out.stderr, out.stderr


def test_a_lost_stream_is_reopened_as_often_as_asked_then_summarized(tmp_path, clips, tiny_llm):
    clip = clips.pipe_stream(container="mkv", seconds=1.0).path.read_bytes()  # Matroska, as WebM is
    with ClipServer(clip, good=1) as server, FakeOpenAIServer(reply_fn=image_digest_reply) as srv:
        out = _run(tmp_path, _base(srv.base_url, tiny_llm, tmp_path, server.url, "--reconnect-attempts", "2"),
                   cli_env(tmp_path))
        requests = server.requests
    out.check_common(deadline=60)
    assert out.returncode == 0, out.stderr
    assert requests == 3  # the play, then 2 reopening attempts answered 503
    said = [line for line in out.stderr.splitlines() if "reopening" in line]
    assert said == ["127.0.0.1-live: no frames, reopening (attempt 1/2)",
                    "127.0.0.1-live: no frames, reopening (attempt 2/2)"], out.stderr
    assert out.of("caption") and out.stdout.strip()  # what was captioned before the loss is summarized


def test_known_faces_with_corrupt_and_faceless_images(tmp_path, data_dir, short, tiny_llm):
    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(data_dir / "faces" / "obama.jpg", faces / "obama.jpg")
    (faces / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(data_dir / "images" / "meds-aa-S001-01.jpg", faces / "meds.jpg")  # a face: control
    landscape = faces / "landscape.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(landscape), np.full((120, 160, 3), 90, np.uint8))
    with FakeOpenAIServer(reply_fn=image_digest_reply) as srv:
        args = cli_args(srv.base_url, tiny_llm, "--source", str(short.path),
                        "--known-faces", str(faces), "--interval", "0.5", "--events", str(tmp_path / "events.jsonl"),
                        "--trace-log", str(tmp_path / "trace.jsonl"))
        out = _run(tmp_path, args, cli_env(tmp_path))
    out.check_common(deadline=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("broken.jpg") == 1 and out.stderr.count("landscape.png") == 1
    assert "known faces: 2 people" in out.stderr


# -- process ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code, shutdown", [(signal.SIGINT, 130, "2"), (signal.SIGTERM, 143, "2"),
                                                 (signal.SIGTERM, 143, "0")])
def test_signals_mid_run(tmp_path, clips, tiny_llm, sig, code, shutdown):
    """shutdown 0: in-flight calls and the final summary are abandoned at once, still running in
    their threads (the local model inside torch) when the process exits."""
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.3, api_key=VLM_SECRET) as srv, \
            FakeLangfuseServer("hang", public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf:
        clip = clips.long_static()  # 60 s at 5 fps: far from done when the signal comes
        args = _base(srv.base_url, tiny_llm, tmp_path, str(clip.path),
                     "--interval", "0", "--shutdown-timeout", shutdown, "--flush-timeout", "2")
        proc = subprocess.Popen(args, env=cli_env(tmp_path, langfuse_url=lf.base_url, VLM_API_KEY=VLM_SECRET),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events = tmp_path / "events.jsonl"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and not (events.exists() and events.read_text().count('"type": "caption"') >= 2):
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(sig)
        out_s, err_s = proc.communicate(timeout=30)
    out = Outcome(tmp_path, proc.returncode, out_s, err_s, time.monotonic() - sent)
    out.check_common(deadline=2 + 2 + 2 + 3)  # in-flight + final summary + flush deadlines, and slack
    assert out.returncode == code, out.stderr
    if shutdown == "0":  # the captions stand in for the summary the model could not finish
        assert "[00:00.0] " in out.stdout, out.stdout  # 5 fps, every frame: stamped in tenths
    assert len(out.of("caption")) >= 2
    assert out.of("stats")[0]["frames_read"] < clip.frame_count  # it stopped reading
