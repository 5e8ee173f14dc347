"""--trace-frames: the JPEG the caption model got, on its vlm_caption generation as Langfuse media.

The real SDK talks to the fake receiver over HTTP: each traced frame is asked an upload URL
for, uploaded once (PUT) and patched, and the generation's input carries its reference.
Without the option no media request is made and no pixel is in any span. Blurred faces stay
blurred in the uploaded bytes. Without keys the trace log keeps the frame's size and hash.
"""
from __future__ import annotations

import hashlib
import json
import threading

import cv2
import numpy as np
import pytest

from tests.cli_runner import TEST_PUBLIC_KEY, TEST_SECRET_KEY, cli_args, cli_env, keyed_cli_env, read_events, run_here
from tests.clips import ClipSet, add_noise, read_number, textured_scene
from tests.fake_langfuse import FakeLangfuseServer, wait_until
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.frames import from_jpeg_bytes, to_jpeg_bytes

REFERENCE = "@@@langfuseMedia:type=image/jpeg|id={}|source=bytes@@@"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ClipSet(tmp_path_factory.mktemp("clips")).numbered(seconds=2.0)  # 10 fps, 20 frames


def _gen_spans(lf: FakeLangfuseServer) -> list[dict]:
    return [s for s in lf.spans_named("vlm_caption")
            if s["attributes"].get("langfuse.observation.type") == "generation"]


def _run(tmp_path, clip, tiny_llm, *more, keys=True):
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="A coloured band over black and white squares.") as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(clip.path), "--interval", "1", "--clip-frames", "1",
                        "--events", str(tmp_path / "events.jsonl"), "--trace-log", str(tmp_path / "trace.jsonl"),
                        *more)
        run = run_here(args, keyed_cli_env(tmp_path, lf) if keys else cli_env(tmp_path), timeout=240)
        assert run.returncode == 0, run.stderr
        if keys:
            assert wait_until(lambda: len(_gen_spans(lf)) >= 2, timeout=10)
        captions = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "caption"]
        return run, lf, vlm.requests, captions


def test_each_traced_frame_is_uploaded_once_and_referenced_from_its_generation(tmp_path, clip, tiny_llm):
    run, lf, vlm_requests, captions = _run(tmp_path, clip, tiny_llm, "--trace-frames")
    assert sorted(c["frame"] for c in captions) == [0, 10]  # 2 s at 1 s interval (two in flight)
    assert "Frames traced" in run.stderr and "faces NOT blurred in them" in run.stderr  # loopback VLM
    gens = _gen_spans(lf)
    assert len(gens) == 2
    links = lf.data.media_links()
    assert len(links) == 2 and len(lf.data.uploads) == 2 and len(lf.data.patches) == 2
    assert {m for m, _ in lf.data.uploads} == {link["media_id"] for link in links}
    by_span = {g["span_id"]: g for g in gens}
    for link in links:
        gen = by_span[link["observation_id"]]  # uploaded for this generation, as its input
        assert link["trace_id"] == gen["trace_id"] and link["field"] == "input"
        assert REFERENCE.format(link["media_id"]) in gen["attributes"]["langfuse.observation.input"]
        jpeg = lf.data.media_bytes(link["media_id"])
        assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < 100_000
        assert hashlib.sha256(jpeg).digest() == __import__("base64").b64decode(
            next(r["sha256Hash"] for r in lf.data.upload_url_requests
                 if r["observationId"] == link["observation_id"]))
        frame_no = gen["attributes"]["langfuse.observation.metadata.frame_index"]
        frame_no = json.loads(frame_no) if isinstance(frame_no, str) else frame_no  # SDK 5: JSON, 4: int
        assert read_number(from_jpeg_bytes(jpeg)) == frame_no  # the very frame of that generation
    # the prompt is still there, beside the frame
    assert all("Describe" in g["attributes"]["langfuse.observation.input"]
               or "describe" in g["attributes"]["langfuse.observation.input"] for g in gens)
    assert len(vlm_requests) == 2


def test_without_trace_frames_no_pixel_leaves_but_to_the_caption_model(tmp_path, clip, tiny_llm):
    run, lf, vlm_requests, captions = _run(tmp_path, clip, tiny_llm)
    assert len(captions) == 2 and len(vlm_requests) == 2  # the caption model got its frames
    assert "Frames traced" not in run.stderr
    assert lf.data.upload_url_requests == [] and lf.data.uploads == [] and lf.data.patches == []
    assert not [r for r in lf.requests if "/media" in r["path"] or r["method"] in ("PUT", "PATCH")]
    sent = json.dumps(lf.spans)
    assert "langfuseMedia" not in sent and "data:image" not in sent and "/9j/" not in sent
    assert {r["path"].split("?")[0] for r in lf.requests} <= {
        "/api/public/otel/v1/traces", "/api/public/scores", "/api/public/ingestion",  # scores: SDK 5, 4
        "/api/public/v2/prompts/video-caption",
        "/api/public/v2/prompts/video-summary", "/api/public/projects"}
    lines = read_events(tmp_path / "trace.jsonl")
    assert all(line.get("frame") is None for line in lines if line["type"] == "generation")


def test_offline_trace_log_keeps_size_and_hash_not_pixels(tmp_path, clip, tiny_llm):
    run, _lf, _requests, captions = _run(tmp_path, clip, tiny_llm, "--trace-frames", keys=False)
    assert "no keys: the trace log keeps size and hash" in run.stderr
    lines = read_events(tmp_path / "trace.jsonl")
    gens = [r for r in lines if r["type"] == "generation" and r["name"] == "vlm_caption"]
    assert len(gens) == 2
    first = cv2.VideoCapture(str(clip.path)).read()[1]
    expected = to_jpeg_bytes(first, 768, 75)  # the defaults, on frame 0 as decoded
    trace0 = next(r["trace_id"] for r in lines if r["type"] == "trace" and r["metadata"]["frame_index"] == 0)
    frame0 = next(g for g in gens if g["trace_id"] == trace0)
    assert frame0["frame"] == {"bytes": len(expected), "sha256": hashlib.sha256(expected).hexdigest()}
    text = (tmp_path / "trace.jsonl").read_text()
    assert "/9j/" not in text and "data:image" not in text


class _BoxFaces:
    """A face detector stand-in that finds one face in a fixed box (no real face in a generated frame)."""

    box = (30, 110, 90, 50)  # top, right, bottom, left

    def recognize(self, frame, timestamp=None):
        from video_summarizer.faces import FaceMatch

        return [FaceMatch("unknown", None, self.box)]


def test_blurred_faces_stay_blurred_in_the_uploaded_frame(tmp_path):
    """Blurring happens before the frame is traced: the uploaded JPEG's box has no detail left."""
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source
    from vlm_client_module import VLMClient

    frame = add_noise(textured_scene(3, (160, 120)), np.random.default_rng(3))
    path = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    original = cv2.VideoCapture(str(path)).read()[1]
    with FakeLangfuseServer(public_key="pk-blur", secret_key="sk-blur") as lf, \
            FakeOpenAIServer(reply="A textured wall.") as srv:
        tracker = LangfuseTracker(public_key="pk-blur", secret_key="sk-blur", base_url=lf.base_url)
        stages = Stages(tracker=tracker, vlm=VLMClient(srv.base_url, None, "qwen3"),
                        summarizer=LLMSummarizer("qwen3", base_url=srv.base_url), faces=_BoxFaces(),
                        events=EventWriter(None), blur_faces=True, trace_frames=(768, 90))
        source = open_source(str(path))
        try:
            SourceRun(source, FrameSelector(interval=10.0), stages, PipelineConfig(),
                      session_id="blur", stop_event=threading.Event()).run()
        finally:
            source.close()
        tracker.close(deadline_s=10)
        assert len(lf.data.uploads) == 1
        uploaded = from_jpeg_bytes(lf.data.uploads[0][1])
    top, right, bottom, left = _BoxFaces.box
    assert uploaded.shape == original.shape

    def detail(img):
        grey = cv2.cvtColor(img[top:bottom, left:right], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    assert detail(uploaded) < 0.2 * detail(original), (detail(uploaded), detail(original))
    outside = np.ones(original.shape[:2], bool)
    outside[max(0, top - 20):bottom + 20, max(0, left - 20):right + 20] = False
    assert float(np.abs(uploaded[outside].astype(int) - original[outside].astype(int)).mean()) < 4


@pytest.mark.slow
def test_real_faces_are_not_found_in_the_uploaded_frame(tmp_path, data_dir, tiny_llm):
    """two_people.jpg through the CLI with --blur-faces --trace-frames: face_recognition finds both
    faces in the clip and none in what was uploaded."""
    import face_recognition

    image = cv2.imread(str(data_dir / "images" / "two_people.jpg"))
    h, w = image.shape[:2]
    clip = tmp_path / "two_people.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for _ in range(5):
        writer.write(image)
    writer.release()
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="Two men in suits.") as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(clip), "--known-faces", str(data_dir / "faces"),
                        "--blur-faces", "--trace-frames")
        run = run_here(args, keyed_cli_env(tmp_path, lf), timeout=300)
        assert run.returncode == 0, run.stderr
        assert "faces blurred in them" in run.stderr
        assert len(lf.data.uploads) == 1
        uploaded = from_jpeg_bytes(lf.data.uploads[0][1])
    decoded = cv2.VideoCapture(str(clip)).read()[1]
    assert len(face_recognition.face_locations(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))) == 2
    assert face_recognition.face_locations(cv2.cvtColor(uploaded, cv2.COLOR_BGR2RGB)) == []
