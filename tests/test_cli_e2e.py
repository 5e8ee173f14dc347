"""End-to-end: the CLI against the local OpenAI-streaming server, a tiny local Mistral summarizer,
and the local Langfuse receiver; in this process (tests/cli_runner.invoke_cli), in a subprocess
only where the process is the point (a video piped on its stdin, SIGTERM).

Everything runs on generated clips (tests/clips.py) with known frame counts, rates and cuts;
only the recognized names need the real Hamilton clip and faces in ../shared/data (they skip
without it)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest

from tests.cli_runner import (
    TEST_SECRET_KEY,
    cli_args,
    cli_env,
    image_digest_reply,
    invoke_cli,
    invoke_env,
    numbered_reply,
    read_events,
    run_cli,
    selected_frames,
    unique_public_key,
)
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer



def _args(vlm_url: str, llm_dir, *more: str) -> list[str]:
    """cli_args for invoke_cli: the same options, without the program."""
    return cli_args(vlm_url, llm_dir, *more)[2:]

SCORES = {"vlm_success", "vlm_latency_score", "vlm_quality", "llm_success", "llm_processing_score",
          "llm_quality", "overall_quality"}
# short_hamilton_clip.mp4: lin-manuel-miranda matches at tolerance 0.6 in these frames (data README)
LMM_FRAMES_06 = {0, *range(2, 15), *range(82, 116), *range(120, 211)}


STAGE_INTERVAL = 1.0


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory, clips, tiny_llm):
    """One full run on a generated clip (a figure crossing a room): every second of video,
    summaries every 4 s, Langfuse on, faces detected with a known-faces folder that holds only a
    corrupt and a faceless image (the fault case that needs no real face)."""
    import cv2
    import numpy as np

    tmp = tmp_path_factory.mktemp("stage")
    faces = tmp / "faces"
    faces.mkdir()
    (faces / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(faces / "landscape.png"), np.full((120, 160, 3), 90, np.uint8))
    clip = clips.figure_crossing()
    source = tmp / "stage.mp4"  # a plain name: the trace's user id and the summary's title
    shutil.copy(clip.path, source)
    key = unique_public_key()
    with FakeLangfuseServer(public_key=key, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.05, chunk_delay=0.002) as vlm:
        args = _args(vlm.base_url, tiny_llm, "--source", str(source), "--known-faces", str(faces),
                        "--interval", str(STAGE_INTERVAL), "--min-change", "0", "--summary-interval", "4",
                        "--events", str(tmp / "events.jsonl"), "--trace-log", str(tmp / "trace.jsonl"),
                        "--summary-out", str(tmp / "summary.md"))
        run = invoke_cli(args, env=invoke_env(tmp, langfuse_url=lf.base_url, public_key=key))
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
        yield {"run": run, "tmp": tmp, "lf": lf, "faces": faces, "vlm_requests": vlm.requests, "clip": clip,
               "expected": selected_frames(clip.fps, clip.frame_count, STAGE_INTERVAL),
               "events": read_events(tmp / "events.jsonl")}


def test_one_caption_per_selected_frame(stage_run):
    captions = [e for e in stage_run["events"] if e["type"] == "caption"]
    frames = [c["frame"] for c in captions]
    clip, expected = stage_run["clip"], stage_run["expected"]
    # 10 fps, one frame per second of video: frames 0, 10, ..., 50
    assert expected == [k * round(clip.fps) for k in range(round(clip.duration))]
    assert sorted(frames) == expected, frames
    for c in captions:
        assert c["caption"].startswith("Scene ") and c["trace_id"] and c["ttft_ms"] >= 40
        assert c["faces"] == []  # no usable known face: nobody is named
        assert c["video_time"] == pytest.approx(clip.time_of(c["frame"]), abs=0.002)
    assert len(stage_run["vlm_requests"]) == len(expected)  # one request a frame, none retried


def test_known_faces_of_only_corrupt_and_faceless_images_are_said_once(stage_run):
    stderr = stage_run["run"].stderr
    assert stderr.count("broken.jpg") == 1 and stderr.count("landscape.png") == 1, stderr
    assert f"known-faces folder {stage_run['faces']} has no usable face images" in stderr, stderr
    assert "Traceback" not in stderr


def test_langfuse_gets_one_trace_per_frame_with_spans_generations_scores(stage_run):
    lf = stage_run["lf"]
    captions = [e for e in stage_run["events"] if e["type"] == "caption"]
    roots = [s for s in lf.spans if s["parent_span_id"] is None]
    frame_roots = [s for s in roots if s["name"] == "frame_processing"]
    assert len(frame_roots) == len(captions) == len(stage_run["expected"])
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
        assert root["attributes"].get("user.id") == "stage"
    llm_gens = [s for s in lf.spans if s["name"] == "llm_summary"]
    assert len(llm_gens) >= 2  # 4 s windows over 6 s, plus the final summary
    names = {s["name"] for s in lf.scores}
    assert names == SCORES | {"llm_grounding"}  # the tiny random model cites nothing: 0.0 each
    grounding = [s for s in lf.scores if s["name"] == "llm_grounding"]
    assert len(grounding) == len(llm_gens) and all(s["value"] == 0.0 for s in grounding)
    trace_scores = [s for s in lf.scores if s["name"] == "overall_quality"]
    assert all(not s.get("observationId") for s in trace_scores)
    assert all(s.get("observationId") for s in lf.scores if s["name"] != "overall_quality")
    assert len([s for s in lf.scores if s["name"] == "vlm_success"]) == len(stage_run["expected"])


def test_ttft_lies_inside_each_generation(stage_run):
    from datetime import datetime

    gens = [s for s in stage_run["lf"].spans
            if s["attributes"].get("langfuse.observation.type") == "generation"]
    assert gens
    for g in gens:
        raw = g["attributes"]["langfuse.observation.completion_start_time"]
        cst = datetime.fromisoformat(json.loads(raw).replace("Z", "+00:00")).timestamp()
        assert g["start_ns"] / 1e9 < cst < g["end_ns"] / 1e9


def test_trace_log_and_summary_written(stage_run):
    tmp, clip, expected = stage_run["tmp"], stage_run["clip"], stage_run["expected"]
    log = read_events(tmp / "trace.jsonl")
    assert len([r for r in log if r.get("type") == "trace" and r.get("name") == "frame_processing"]) == len(expected)
    assert (tmp / "summary.md").read_text().startswith("# Summary of stage")
    assert stage_run["run"].stdout.strip()
    stats = [e for e in stage_run["events"] if e["type"] == "stats"]
    assert stats[0]["captioned"] == len(expected) and stats[0]["frames_read"] == clip.frame_count


def test_no_secret_anywhere(stage_run):
    tmp, run = stage_run["tmp"], stage_run["run"]
    for text in (run.stdout, run.stderr, (tmp / "events.jsonl").read_text(), (tmp / "trace.jsonl").read_text()):
        assert TEST_SECRET_KEY not in text


# -- names: the real Hamilton clip and faces (../shared/data) ------------------------------------

@pytest.fixture(scope="module")
def hamilton_run(tmp_path_factory, data_dir, tiny_llm):
    """One run on the Hamilton clip with the known faces: every second of video."""
    tmp = tmp_path_factory.mktemp("hamilton")
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        args = _args(vlm.base_url, tiny_llm,
                     "--source", str(data_dir / "videos" / "short_hamilton_clip.mp4"),
                     "--known-faces", str(data_dir / "faces"),
                     "--interval", "1", "--min-change", "0", "--summary-interval", "4",
                     "--events", str(tmp / "events.jsonl"), "--trace-log", str(tmp / "trace.jsonl"))
        run = invoke_cli(args, env=invoke_env(tmp))
        assert run.returncode == 0, run.stderr
        yield {"run": run, "vlm_requests": vlm.requests, "events": read_events(tmp / "events.jsonl")}


def test_hamilton_captions_name_lin_manuel_miranda_where_he_is(hamilton_run):
    captions = [e for e in hamilton_run["events"] if e["type"] == "caption"]
    # 29.97 fps, one frame per second of video: frames 0, 30, ..., 270
    assert sorted(c["frame"] for c in captions) == [k * 30 for k in range(10)]
    named = {c["frame"]: c["faces"] for c in captions}
    assert all(set(names) <= {"lin-manuel-miranda"} for names in named.values()), named
    lmm = {f for f, names in named.items() if names}
    assert lmm <= LMM_FRAMES_06, lmm
    assert len(lmm & {90, 150, 210}) >= 2, named  # frames inside the README's 0.5-tolerance ranges


def test_prompt_names_the_recognized_faces(hamilton_run):
    prompts_with_name = [r for r in hamilton_run["vlm_requests"] if "lin-manuel-miranda" in json.dumps(r)]
    captions_with_name = [e for e in hamilton_run["events"] if e["type"] == "caption" and e["faces"]]
    assert len(prompts_with_name) == len(captions_with_name) > 0


# -- sources, selection, batch, bad input, signals (generated clips) -----------------------------

@pytest.mark.slow  # a video piped on the child's stdin
def test_stdin_pipe_gives_the_same_captions_as_the_file(tmp_path, clips, tiny_llm):
    clip = clips.pipe_stream(container="ts", seconds=10.0)  # MPEG-TS: FFmpeg reads every frame from a pipe
    results = {}
    with FakeOpenAIServer(reply_fn=numbered_reply) as vlm:
        for name, source in (("file", str(clip.path)), ("pipe", "-")):
            events = tmp_path / f"{name}.jsonl"
            args = cli_args(vlm.base_url, tiny_llm, "--source", source, "--no-faces", "--interval", "2",
                            "--min-change", "0", "--events", str(events), "--trace-log", str(tmp_path / "t.jsonl"))
            with open(clip.path, "rb") as fh:
                run = run_cli(args, cli_env(tmp_path), stdin=fh if source == "-" else None)
            assert run.returncode == 0, run.stderr
            results[name] = [(e["frame"], e["video_time"], e["caption"])
                             for e in read_events(events) if e["type"] == "caption"]
    expected = selected_frames(clip.fps, clip.frame_count, 2.0)
    assert expected == [0, 20, 40, 60, 80]  # 10 s at 10 fps, one frame every 2 s
    assert sorted(f for f, _, _ in results["file"]) == expected
    for frame, video_time, caption in results["file"]:  # the frame sent is the frame named, at its time
        assert caption.startswith(f"Frame {frame}. Scene "), (frame, caption)
        assert video_time == pytest.approx(clip.time_of(frame), abs=0.002)
    assert sorted(results["pipe"]) == sorted(results["file"])


def test_interval_and_change_gating_select_expected_frames(tmp_path, clips, tiny_llm):
    clip = clips.hard_cuts()  # still noisy scenes, hard cuts at 1.5 s, 3 s and 4.5 s
    frames = {}
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        for name, gating in (("off", ["--min-change", "0"]), ("on", [])):
            events = tmp_path / f"{name}.jsonl"
            args = _args(vlm.base_url, tiny_llm, "--source", str(clip.path), "--no-faces", "--interval", "0.5",
                         *gating, "--events", str(events), "--trace-log", str(tmp_path / "t.jsonl"))
            run = invoke_cli(args, env=invoke_env(tmp_path))
            assert run.returncode == 0, run.stderr
            frames[name] = sorted(e["frame"] for e in read_events(events) if e["type"] == "caption")
    assert frames["off"] == selected_frames(clip.fps, clip.frame_count, 0.5) == list(range(0, clip.frame_count, 5))
    assert set(frames["on"]) < set(frames["off"])
    for cut in clip.cuts:  # the first candidate after each hard cut is still captioned
        assert min(f for f in frames["off"] if f >= cut) in frames["on"], (cut, frames["on"])
    # Between cuts nothing but noise changes: besides the first frame and the cuts, only a frame
    # the max gap forces (the default for this interval) after the last one captioned.
    from video_summarizer.selection import default_max_gap

    gap, expected, last = default_max_gap(0.5), [], None
    for f in frames["off"]:
        scene = sum(f >= c for c in clip.cuts)
        if last is None or scene != sum(last >= c for c in clip.cuts) or clip.time_of(f - last) >= gap - 1e-6:
            expected.append(f)
            last = f
    assert frames["on"] == expected, (frames["on"], expected)


def test_batch_mode_skips_done_files_on_second_run(tmp_path, clips, tiny_llm):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    room, counter = clips.still_noisy(seconds=1.0), clips.numbered(seconds=1.0)
    shutil.copy(room.path, inbox / "room.mp4")
    shutil.copy(counter.path, inbox / "counter.avi")
    out = tmp_path / "out"
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        args = _args(vlm.base_url, tiny_llm, "--source", str(inbox), "--no-faces", "--interval", "0.5",
                     "--min-change", "0", "--output-dir", str(out))
        first = invoke_cli(args, env=invoke_env(tmp_path))
        assert first.returncode == 0, first.stderr
        assert sorted(p.name for p in out.glob("*.summary.*")) == [
            "counter.summary.json", "counter.summary.md", "room.summary.json", "room.summary.md"]
        doc = json.loads((out / "room.summary.json").read_text())
        assert [c["frame"] for c in doc["captions"]] == selected_frames(room.fps, room.frame_count, 0.5) == [0, 5]
        calls = len(vlm.requests)
        assert calls == 4  # two frames of each input
        second = invoke_cli(args, env=invoke_env(tmp_path))
        assert second.returncode == 0, second.stderr
        assert len(vlm.requests) == calls  # nothing redone
        assert second.stderr.count("skipping") == 2
        (inbox / "counter.avi").write_bytes(clips.numbered(seconds=2.0).path.read_bytes())
        third = invoke_cli(args, env=invoke_env(tmp_path))
        assert third.returncode == 0 and len(vlm.requests) > calls  # changed content is redone
        assert third.stderr.count("skipping") == 1  # the room is still up to date


@pytest.mark.parametrize("make_bad, option", [
    (lambda c, t: ["--source", str(t / "missing.mp4")], "--source"),
    (lambda c, t: ["--source", str(t / "README.md")], "--source"),
    (lambda c, t: ["--source", str(c.still_noisy(seconds=1.0).path), "--known-faces", str(t / "nope")],
     "--known-faces"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, clips, tiny_llm, make_bad, option):
    (tmp_path / "README.md").write_text("# Test data\n\nNot a video.\n" * 20)
    with FakeOpenAIServer() as vlm:
        run = invoke_cli(_args(vlm.base_url, tiny_llm, *make_bad(clips, tmp_path)), env=invoke_env(tmp_path))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr_lines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    if "missing" in errors[0] or "not found" in errors[0]:
        assert "Loading summary model" not in run.stderr  # failed before any model was loaded


def test_unreachable_vlm_is_one_line_and_exit_2(tmp_path, clips, tiny_llm):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    run = invoke_cli(_args(f"http://127.0.0.1:{port}/v1", tiny_llm, "--source",
                           str(clips.still_noisy(seconds=1.0).path)), env=invoke_env(tmp_path))
    assert run.returncode == 2
    errors = [line for line in run.stderr_lines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--vlm-base-url" in errors[0] and str(port) in errors[0], run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow  # a signal to the process
def test_sigterm_mid_run_leaves_valid_outputs(tmp_path, clips, tiny_llm):
    clip = clips.long_static()  # 60 s at 5 fps: far from done when the signal comes
    events = tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.4) as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(clip.path),
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
    stats = [e for e in lines if e["type"] == "stats"]
    assert stats and stats[0]["frames_read"] < clip.frame_count  # it stopped reading
    assert out.strip(), err  # a final summary was printed
    assert "Traceback" not in err
