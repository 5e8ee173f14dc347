"""Faces stay local: blurred in what the VLM receives, named in its prompt, absent from traces."""
from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from video_summarizer.app.assembly import blur_setting as _blur_setting
from tests.cli_runner import TEST_SECRET_KEY, cli_args, keyed_cli_env, read_events, run_here, sent_image
from tests.clips import ClipSet, add_noise, numbered_frame, read_number, textured_scene
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from tests.tiny_models import build_tiny_mistral
from video_summarizer.privacy import blur_faces, is_local_endpoint


def _face_locations(bgr: np.ndarray) -> list:
    import face_recognition

    return face_recognition.face_locations(np.ascontiguousarray(bgr[:, :, ::-1]))


@pytest.fixture(scope="module")
def two_people(data_dir) -> np.ndarray:
    image = cv2.imread(str(data_dir / "images" / "two_people.jpg"))
    assert image is not None
    return image


def test_blurred_faces_cannot_be_found(two_people):
    boxes = _face_locations(two_people)
    assert len(boxes) == 2  # the data README: biden and obama
    out, count = blur_faces(two_people, boxes)
    assert count == 2 and out.shape == two_people.shape
    assert _face_locations(out) == []
    assert two_people is not out and _face_locations(two_people) == boxes  # the original is untouched
    # outside the grown boxes nothing changed
    top, right, bottom, left = boxes[0]
    assert np.array_equal(out[-50:, :50], two_people[-50:, :50])
    assert not np.array_equal(out[top:bottom, left:right], two_people[top:bottom, left:right])


def test_blur_pixelates_the_grown_box_and_nothing_else():
    """A generated frame with a known box: inside the box grown by the margin the detail is gone,
    outside it every pixel is as it was, and the frame given is left alone."""
    frame = add_noise(textured_scene(3, (160, 120)), np.random.default_rng(3))
    original = frame.copy()
    top, right, bottom, left = 30, 110, 90, 50  # 60 x 60
    out, count = blur_faces(frame, [(top, right, bottom, left)])
    assert count == 1 and out.shape == frame.shape and out.dtype == frame.dtype
    assert np.array_equal(frame, original)  # the original is untouched
    grow = int(60 * 0.3)  # MARGIN of the box size on each side
    y0, y1, x0, x1 = top - grow, bottom + grow, left - grow, right + grow
    inside = np.zeros(frame.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    assert np.array_equal(out[~inside], frame[~inside])  # outside the grown box nothing changed
    assert not np.array_equal(out[y0, x0:x1], frame[y0, x0:x1])  # its first row is inside
    assert not np.array_equal(out[y1 - 1, x0:x1], frame[y1 - 1, x0:x1])  # and its last

    def detail(img: np.ndarray) -> float:
        grey = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    assert detail(out) < 0.05 * detail(frame), (detail(out), detail(frame))  # the detail is gone
    # the region keeps its tones: pixelated and smoothed, not painted over
    assert abs(float(out[y0:y1, x0:x1].mean()) - float(frame[y0:y1, x0:x1].mean())) < 6


def test_boxes_at_the_edges_and_empty_boxes():
    frame = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out, count = blur_faces(frame, [(-10, 70, 30, 50), (5, 5, 5, 5)])
    assert count == 1 and out.shape == frame.shape
    assert np.array_equal(out[:, :40], frame[:, :40])


@pytest.mark.parametrize("url,local", [
    ("http://localhost:8000/v1", True), ("http://127.0.0.1:8000/v1", True), ("http://127.3.2.1/v1", True),
    ("http://[::1]:8000/v1", True), (None, True), ("https://api.example.com/v1", False),
    ("http://10.0.0.5:8000/v1", False), ("http://192.168.1.20:11434/v1", False),
    ("http://host.invalid/v1", False),
])
def test_endpoint_locality(url, local):
    assert is_local_endpoint(url) is local


def test_default_blur_follows_the_endpoint():
    assert _blur_setting(None, "http://127.0.0.1:8000/v1") == (
        False, "faces sent unblurred (the endpoint is on this machine)")
    assert _blur_setting(None, "http://10.0.0.5:8000/v1") == (
        True, "faces blurred before frames are sent (the endpoint is not on this machine)")
    assert _blur_setting(True, "http://127.0.0.1:8000/v1")[0] is True
    assert _blur_setting(False, "http://10.0.0.5:8000/v1") == (False, "faces sent unblurred (--no-blur-faces)")


@pytest.mark.slow
def test_cli_sends_blurred_frames_and_names_both(tmp_path, data_dir, two_people):
    """A clip of two_people.jpg through the CLI with --blur-faces."""
    clip = tmp_path / "two_people.mp4"
    h, w = two_people.shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for _ in range(10):
        writer.write(two_people)
    writer.release()
    ok, decoded = cv2.VideoCapture(str(clip)).read()
    assert ok and len(_face_locations(decoded)) == 2  # the clip itself shows both faces
    llm = build_tiny_mistral(tmp_path / "llm")
    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="Two men in suits stand with their arms crossed.") as vlm:
        args = cli_args(vlm.base_url, llm, "--source", str(clip), "--known-faces", str(data_dir / "faces"),
                        "--blur-faces", "--events", str(tmp_path / "events.jsonl"),
                        "--trace-log", str(tmp_path / "trace.jsonl"))
        run = run_here(args, keyed_cli_env(tmp_path, lf), timeout=240)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
        requests = vlm.requests
    assert "faces blurred before frames are sent (--blur-faces)" in run.stderr
    assert len(requests) == 1
    parts = requests[0]["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    sent = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    dh, dw = decoded.shape[:2]
    assert sent.shape[:2] == (round(dh * 768 / dw), 768)  # downscaled to --vlm max side, not cropped
    assert _face_locations(sent) == []
    prompt = next(p["text"] for p in parts if p["type"] == "text")
    assert "biden" in prompt and "obama" in prompt
    caption = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "caption"][0]
    assert caption["faces"] == ["biden", "obama"]
    # The trace says blurring happened; no frame or crop is in any trace.
    spans = [r for r in read_events(tmp_path / "trace.jsonl") if r.get("name") == "vlm_caption"
             and r["type"] == "span"]
    assert spans[0]["metadata"] == {"faces": ["biden", "obama"], "blur_faces": True, "faces_blurred": 2}
    vlm_spans = [s for s in lf.spans if s["name"] == "vlm_caption"]
    assert any(json.loads(s["attributes"].get("langfuse.observation.metadata.faces_blurred", "0")) == 2
               for s in vlm_spans), vlm_spans
    received = json.dumps(lf.spans) + (tmp_path / "trace.jsonl").read_text()
    assert "data:image" not in received and "/9j/" not in received  # no data URL, no JPEG base64


@pytest.mark.slow
def test_cli_blur_on_a_generated_clip_sends_the_downscaled_frame_and_no_image_in_traces(tmp_path):
    """--blur-faces on a generated clip without faces: the frame goes downscaled and untouched,
    the trace says blurring was on (0 faces blurred), and no frame is in any trace."""
    size = (1024, 576)
    clip = ClipSet(tmp_path / "clips").numbered(seconds=1.0, size=size)
    llm = build_tiny_mistral(tmp_path / "llm")
    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="A coloured band over black and white squares.") as vlm:
        args = cli_args(vlm.base_url, llm, "--source", str(clip.path), "--blur-faces",
                        "--events", str(tmp_path / "events.jsonl"), "--trace-log", str(tmp_path / "trace.jsonl"))
        run = run_here(args, keyed_cli_env(tmp_path, lf), timeout=240)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
        requests = vlm.requests
    assert "faces blurred before frames are sent (--blur-faces)" in run.stderr
    assert len(requests) == 1  # 1 s of video at the default 5 s interval: frame 0
    sent = sent_image(requests[0])
    assert sent.shape[:2] == (round(576 * 768 / 1024), 768)  # downscaled to --vlm max side, not cropped
    assert read_number(sent) == 0
    expected = cv2.resize(numbered_frame(0, size), (768, 432), interpolation=cv2.INTER_AREA)
    assert float(np.abs(sent.astype(int) - expected.astype(int)).mean()) < 4  # nothing was blurred
    caption = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "caption"][0]
    assert caption["frame"] == 0 and caption["faces"] == []
    spans = [r for r in read_events(tmp_path / "trace.jsonl") if r.get("name") == "vlm_caption"
             and r["type"] == "span"]
    assert spans[0]["metadata"] == {"faces": [], "blur_faces": True, "faces_blurred": 0}
    vlm_spans = [s for s in lf.spans if s["name"] == "vlm_caption"]
    assert any(json.loads(s["attributes"].get("langfuse.observation.metadata.blur_faces", "false")) is True
               for s in vlm_spans), vlm_spans
    received = json.dumps(lf.spans) + (tmp_path / "trace.jsonl").read_text()
    assert "data:image" not in received and "/9j/" not in received  # no data URL, no JPEG base64
