"""End-to-end: the CLI in a subprocess on real clips, against the local OpenAI-streaming server,
a tiny local Mistral summarizer, and the local Langfuse receiver."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_runner import (
    TEST_SECRET_KEY,
    cli_args,
    cli_env,
    image_digest_reply,
    read_events,
    run_cli,
)
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from tests.tiny_models import build_tiny_mistral

pytestmark = pytest.mark.slow

SCORES = {"vlm_success", "vlm_latency_score", "vlm_quality", "llm_success", "llm_processing_score",
          "llm_quality", "overall_quality"}
# short_hamilton_clip.mp4: lin-manuel-miranda matches at tolerance 0.6 in these frames (data README)
LMM_FRAMES_06 = {0, *range(2, 15), *range(82, 116), *range(120, 211)}


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="module")
def hamilton_run(tmp_path_factory, data_dir, tiny_llm):
    """One full run on the Hamilton clip: every second of video, summaries every 4 s."""
    tmp = tmp_path_factory.mktemp("hamilton")
    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.05, chunk_delay=0.002) as vlm:
        args = cli_args(vlm.base_url, tiny_llm,
                        "--source", str(data_dir / "videos" / "short_hamilton_clip.mp4"),
                        "--known-faces", str(data_dir / "faces"),
                        "--interval", "1", "--min-change", "0", "--summary-interval", "4",
                        "--events", str(tmp / "events.jsonl"), "--trace-log", str(tmp / "trace.jsonl"),
                        "--summary-out", str(tmp / "summary.md"))
        run = run_cli(args, cli_env(tmp, langfuse_url=lf.base_url), timeout=300)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
        yield {"run": run, "tmp": tmp, "lf": lf, "vlm_requests": vlm.requests,
               "events": read_events(tmp / "events.jsonl")}


def test_one_caption_per_selected_frame_with_names(hamilton_run):
    captions = [e for e in hamilton_run["events"] if e["type"] == "caption"]
    frames = [c["frame"] for c in captions]
    # 29.97 fps, one frame per second of video: frames 0, 30, ..., 270
    assert sorted(frames) == [k * 30 for k in range(10)], frames
    named = {c["frame"]: c["faces"] for c in captions}
    assert all(set(names) <= {"lin-manuel-miranda"} for names in named.values()), named
    lmm = {f for f, names in named.items() if names}
    assert lmm <= LMM_FRAMES_06, lmm
    assert len(lmm & {90, 150, 210}) >= 2, named  # frames inside the README's 0.5-tolerance ranges
    for c in captions:
        assert c["caption"].startswith("Scene ") and c["trace_id"] and c["ttft_ms"] >= 40


def test_prompt_names_the_recognized_faces(hamilton_run):
    prompts_with_name = [r for r in hamilton_run["vlm_requests"] if "lin-manuel-miranda" in json.dumps(r)]
    captions_with_name = [e for e in hamilton_run["events"] if e["type"] == "caption" and e["faces"]]
    assert len(prompts_with_name) == len(captions_with_name) > 0


def test_langfuse_gets_one_trace_per_frame_with_spans_generations_scores(hamilton_run):
    lf = hamilton_run["lf"]
    captions = [e for e in hamilton_run["events"] if e["type"] == "caption"]
    roots = [s for s in lf.spans if s["parent_span_id"] is None]
    frame_roots = [s for s in roots if s["name"] == "frame_processing"]
    assert len(frame_roots) == len(captions) == 10
    assert {s["trace_id"] for s in frame_roots} == {c["trace_id"] for c in captions}
    by_trace = lf.traces()
    for root in frame_roots:
        spans = {s["name"]: s for s in by_trace[root["trace_id"]]}
        assert {"face_recognition", "vlm_caption"} <= set(spans)
        gens = [s for s in by_trace[root["trace_id"]]
                if s["attributes"].get("langfuse.observation.type") == "generation"]
        vlm_gen = [g for g in gens if g["name"] == "vlm_caption"][0]
        assert vlm_gen["parent_span_id"] == [s for s in by_trace[root["trace_id"]]
                                             if s["name"] == "vlm_caption" and s is not vlm_gen][0]["span_id"]
        assert vlm_gen["attributes"]["langfuse.observation.model.name"] == "qwen3"
        assert root["attributes"].get("user.id") == "short_hamilton_clip"
    llm_gens = [s for s in lf.spans if s["name"] == "llm_summary"]
    assert len(llm_gens) >= 2  # 4 s windows over 9 s, plus the final summary
    names = {s["name"] for s in lf.scores}
    assert names == SCORES | {"llm_grounding"}  # the tiny random model cites nothing: 0.0 each
    grounding = [s for s in lf.scores if s["name"] == "llm_grounding"]
    assert len(grounding) == len(llm_gens) and all(s["value"] == 0.0 for s in grounding)
    trace_scores = [s for s in lf.scores if s["name"] == "overall_quality"]
    assert all(not s.get("observationId") for s in trace_scores)
    assert all(s.get("observationId") for s in lf.scores if s["name"] != "overall_quality")
    assert len([s for s in lf.scores if s["name"] == "vlm_success"]) == 10


def test_ttft_lies_inside_each_generation(hamilton_run):
    from datetime import datetime

    gens = [s for s in hamilton_run["lf"].spans
            if s["attributes"].get("langfuse.observation.type") == "generation"]
    assert gens
    for g in gens:
        raw = g["attributes"]["langfuse.observation.completion_start_time"]
        cst = datetime.fromisoformat(json.loads(raw).replace("Z", "+00:00")).timestamp()
        assert g["start_ns"] / 1e9 < cst < g["end_ns"] / 1e9


def test_trace_log_and_summary_written(hamilton_run):
    tmp = hamilton_run["tmp"]
    log = read_events(tmp / "trace.jsonl")
    assert len([r for r in log if r.get("type") == "trace" and r.get("name") == "frame_processing"]) == 10
    assert (tmp / "summary.md").read_text().startswith("# Summary of short_hamilton_clip")
    assert hamilton_run["run"].stdout.strip()
    stats = [e for e in hamilton_run["events"] if e["type"] == "stats"]
    assert stats[0]["captioned"] == 10 and stats[0]["frames_read"] == 275


def test_no_secret_anywhere(hamilton_run):
    tmp, run = hamilton_run["tmp"], hamilton_run["run"]
    for text in (run.stdout, run.stderr, (tmp / "events.jsonl").read_text(), (tmp / "trace.jsonl").read_text()):
        assert TEST_SECRET_KEY not in text


def test_stdin_pipe_gives_the_same_captions_as_the_file(tmp_path, data_dir, tiny_llm):
    clip = data_dir / "videos" / "clip_02_caminandes.mp4"
    results = {}
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        for name, source in (("file", str(clip)), ("pipe", "-")):
            events = tmp_path / f"{name}.jsonl"
            args = cli_args(vlm.base_url, tiny_llm, "--source", source, "--no-faces", "--interval", "2",
                            "--min-change", "0", "--events", str(events), "--trace-log", str(tmp_path / "t.jsonl"))
            with open(clip, "rb") as fh:
                run = run_cli(args, cli_env(tmp_path), stdin=fh if source == "-" else None)
            assert run.returncode == 0, run.stderr
            results[name] = [(e["frame"], e["video_time"], e["caption"])
                             for e in read_events(events) if e["type"] == "caption"]
    assert len(results["file"]) == 5  # 10 s at 24 fps, one frame every 2 s
    assert sorted(results["pipe"]) == sorted(results["file"])


def test_interval_and_change_gating_select_expected_frames(tmp_path, data_dir, tiny_llm):
    clip = data_dir / "videos" / "clip_01_tears_of_steel.mp4"
    frames = {}
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        for name, gating in (("off", ["--min-change", "0"]), ("on", [])):
            events = tmp_path / f"{name}.jsonl"
            args = cli_args(vlm.base_url, tiny_llm, "--source", str(clip), "--no-faces", "--interval", "0.5",
                            *gating, "--events", str(events), "--trace-log", str(tmp_path / "t.jsonl"))
            run = run_cli(args, cli_env(tmp_path))
            assert run.returncode == 0, run.stderr
            frames[name] = sorted(e["frame"] for e in read_events(events) if e["type"] == "caption")
    assert frames["off"] == list(range(0, 240, 12))
    assert set(frames["on"]) < set(frames["off"])
    for cut in (21, 65, 185):  # the first candidate after each hard cut is still captioned
        assert min(f for f in frames["off"] if f >= cut) in frames["on"], (cut, frames["on"])


def test_batch_mode_skips_done_files_on_second_run(tmp_path, data_dir, tiny_llm):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("h264_aac.mp4", "vp8_opus.webm"):
        shutil.copy(data_dir / "videos" / name, inbox / name)
    out = tmp_path / "out"
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(inbox), "--no-faces", "--interval", "0.5",
                        "--min-change", "0", "--output-dir", str(out))
        first = run_cli(args, cli_env(tmp_path))
        assert first.returncode == 0, first.stderr
        assert sorted(p.name for p in out.glob("*.summary.*")) == [
            "h264_aac.summary.json", "h264_aac.summary.md", "vp8_opus.summary.json", "vp8_opus.summary.md"]
        doc = json.loads((out / "h264_aac.summary.json").read_text())
        assert [c["frame"] for c in doc["captions"]] == [0, 15, 30]
        calls = len(vlm.requests)
        second = run_cli(args, cli_env(tmp_path))
        assert second.returncode == 0, second.stderr
        assert len(vlm.requests) == calls  # nothing redone
        assert second.stderr.count("skipping") == 2
        (inbox / "vp8_opus.webm").write_bytes((data_dir / "videos" / "video_01.mp4").read_bytes())
        third = run_cli(args, cli_env(tmp_path))
        assert third.returncode == 0 and len(vlm.requests) > calls  # changed content is redone


@pytest.mark.parametrize("make_bad, option", [
    (lambda d, t: ["--source", str(t / "missing.mp4")], "--source"),
    (lambda d, t: ["--source", str(d / "README.md")], "--source"),
    (lambda d, t: ["--source", str(d / "videos" / "video_01.mp4"), "--known-faces", str(t / "nope")],
     "--known-faces"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, data_dir, tiny_llm, make_bad, option):
    with FakeOpenAIServer() as vlm:
        run = run_cli(cli_args(vlm.base_url, tiny_llm, *make_bad(data_dir, tmp_path)), cli_env(tmp_path))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr_lines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    if "missing" in errors[0] or "not found" in errors[0]:
        assert "Loading summary model" not in run.stderr  # failed before any model was loaded


def test_unreachable_vlm_is_one_line_and_exit_2(tmp_path, data_dir, tiny_llm):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    run = run_cli(cli_args(f"http://127.0.0.1:{port}/v1", tiny_llm, "--source",
                           str(data_dir / "videos" / "video_01.mp4")), cli_env(tmp_path))
    assert run.returncode == 2
    errors = [line for line in run.stderr_lines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--vlm-base-url" in errors[0] and str(port) in errors[0], run.stderr
    assert "Traceback" not in run.stderr


def test_sigterm_mid_run_leaves_valid_outputs(tmp_path, data_dir, tiny_llm):
    events = tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.4) as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(data_dir / "videos" / "clip_01_tears_of_steel.mp4"),
                        "--no-faces", "--interval", "0", "--min-change", "0", "--events", str(events),
                        "--trace-log", str(tmp_path / "t.jsonl"), "--shutdown-timeout", "3")
        proc = subprocess.Popen(args, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if events.exists() and '"caption"' in events.read_text():
                break
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    assert proc.returncode == 143, err
    assert took < 3 + 5 + 2, took  # shutdown timeout + tracker deadline + slack
    lines = read_events(events)
    assert any(e["type"] == "caption" for e in lines)
    assert any(e["type"] == "stats" for e in lines)
    assert out.strip(), err  # a final summary was printed
    assert "Traceback" not in err
