"""The stage base classes: one required method each, the rest defaults the loop relies on.

A stage that writes only its required method runs through the real loop (SourceRun, a real
decoded clip, the real tracker writing its trace log); a stage without it cannot be built.
The face split: the known-faces library loads and caches real photos with the real encoder,
and the identity tracker carries a real face to the next close frame and no further.
"""
from __future__ import annotations

import ast
import inspect
import io
import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from video_summarizer.backends import CaptionModel, FaceModel, FrameObserver, SummaryModel
from video_summarizer.faces import FaceMatch, IdentityReuse, IdentityTracker, KnownFaces
from video_summarizer.faces.known import UnreadableImage
from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE, SYSTEM_PROMPT, render_prompt
from video_summarizer.results import CaptionResult, SummaryResult

REPO = Path(__file__).resolve().parent.parent
BOX = (10, 60, 50, 20)  # top, right, bottom, left


class OnlyCaptions(CaptionModel):
    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def generate_caption(self, frame, prompt):
        with self._lock:
            self.prompts.append(prompt)
        return CaptionResult(text="Ada stands by a wall.", success=True, model="x", start_time=1.0,
                             end_time=1.5, completion_start_time=1.1)


class OnlySummaries(SummaryModel):
    def __init__(self) -> None:
        self.messages: list[list[dict]] = []

    def generate(self, messages):
        self.messages.append(messages)
        return SummaryResult(text="Ada stands by a wall [00:00].", success=True, model="x", start_time=2.0,
                             end_time=2.5, completion_start_time=2.1)


class OnlyFaces(FaceModel):
    def recognize(self, frame, timestamp=None):
        return [FaceMatch("ada", 0.3, BOX)]


class Seen(FrameObserver):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def __call__(self, image, record, matches):
        self.records.append({**record, "matches": [m.name for m in matches], "shape": image.shape})


def _run_loop(clip_path, stages, *, summary_interval: float):
    """The real loop (SourceRun) over a clip at 0.5 s a frame; the tracker is closed after it."""
    from video_summarizer.pipeline import PipelineConfig, SourceRun
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source

    source = open_source(str(clip_path))
    try:
        return SourceRun(source, FrameSelector(interval=0.5, min_change=0.0), stages,
                         PipelineConfig(summary_interval=summary_interval), session_id="s",
                         stop_event=threading.Event()).run()
    finally:
        source.close()
        stages.tracker.close(deadline_s=5)


def test_a_stage_with_only_its_required_method_runs_the_loop(clips, tmp_path, monkeypatch):
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import Stages

    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)  # the trace log only: no SDK client
    clip = clips.numbered()
    vlm, llm, seen = OnlyCaptions(), OnlySummaries(), Seen()
    tracker = LangfuseTracker(trace_log=tmp_path / "trace.jsonl")
    stages = Stages(tracker=tracker, vlm=vlm, summarizer=llm, faces=OnlyFaces(), events=EventWriter(None),
                    frame_observers=[seen])
    for stage in (vlm, llm, stages.faces):  # the start-up steps the CLI calls: defaults, no error
        stage.check(), stage.load(), stage.close()
    doc = _run_loop(clip.path, stages, summary_interval=1.0)

    captioned = doc.stats["captioned"]
    assert captioned == len(vlm.prompts) == len(seen.records) >= 5
    # build_prompt's default: the default template, naming the faces the face model found
    assert set(vlm.prompts) == {render_prompt(DEFAULT_PROMPT_TEMPLATE, ["ada"])}
    # build_messages' default: the shared prompt, with the built-in system prompt
    assert llm.messages and all(m[0] == {"role": "system", "content": SYSTEM_PROMPT} for m in llm.messages)
    assert doc.stats["summaries"] == len(llm.messages)
    # name's default: the class name, in the traces and in what observers are told
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    models = {(g["name"], g["model"]) for g in lines if g["type"] == "generation"}
    assert models == {("vlm_caption", "OnlyCaptions"), ("llm_summary", "OnlySummaries")}
    assert {(r["model"], tuple(r["matches"])) for r in seen.records} == {("OnlyCaptions", ("ada",))}
    assert (vlm.stats, llm.stats, OnlyFaces().counts(), OnlyFaces().format_stats(), seen.format_stats()) == \
        (None, None, None, "", None)


@pytest.mark.parametrize(("base", "method"), [
    (CaptionModel, "generate_caption"), (SummaryModel, "generate"), (FaceModel, "recognize"),
    (FrameObserver, "__call__"),
])
def test_the_required_method_is_enforced(base, method):
    lacking = type(f"No{base.__name__}", (base,), {})
    with pytest.raises(TypeError, match=method):
        lacking()


def test_name_is_the_model_else_the_class():
    assert OnlyCaptions().name == "OnlyCaptions"
    named = OnlyCaptions()
    named.model = "qwen3"
    assert named.name == "qwen3"


def test_the_project_stages_are_their_base_classes(tmp_path):
    from llm_summarizer import LLMSummarizer
    from video_summarizer.evals.datasets import DatasetWriter, LocalDataset
    from video_summarizer.faces import FaceRecognizer
    from video_summarizer.models.local_vlm import LocalVLM
    from video_summarizer.watch.server import PageState
    from vlm_client_module import VLMClient

    assert isinstance(VLMClient(model="m"), CaptionModel) and isinstance(LocalVLM("unused"), CaptionModel)
    served, local = LLMSummarizer("m", base_url="http://127.0.0.1:1/v1"), LLMSummarizer("unused/model")
    assert isinstance(served, SummaryModel) and isinstance(local, SummaryModel)
    # the inner backends' defaults: a server has no device, tokenizer or model of its own
    assert (served.device, served.tokenizer, served.hf_model) == ("server", None, None)
    assert (local.device, local.tokenizer, local.hf_model) == ("auto", None, None)
    faces = FaceRecognizer(None, cache_dir=tmp_path)
    assert isinstance(faces, FaceModel) and faces.counts() == faces.stats and faces.counts()["frames"] == 0
    writer = DatasetWriter(LocalDataset(tmp_path / "ds"), name="ds", max_side=64, quality=80, session_id="s",
                           where="folder ds/")
    assert isinstance(writer, FrameObserver) and writer.format_stats().startswith("Dataset folder ds/: 0 frames")
    assert isinstance(PageState(), FrameObserver)


def test_the_tracker_protocol_covers_what_the_loop_calls():
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.tracing.protocol import Tracker

    declared = {n for n in vars(Tracker) if not n.startswith("_")}
    # the loop's tracing is made beside it, in tracing/frame_trace.py (self.tracker.X there)
    tree = ast.parse((REPO / "video_summarizer" / "tracing" / "frame_trace.py").read_text())
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Attribute) and n.value.attr == "tracker"}
    assert called and called <= declared | set(Tracker.__annotations__), called - declared  # + recording
    # and LangfuseTracker takes every argument the Protocol promises
    for name in declared - {"enabled"}:
        ours = inspect.signature(getattr(LangfuseTracker, name)).parameters
        for param in inspect.signature(getattr(Tracker, name)).parameters.values():
            if param.kind is not param.VAR_KEYWORD:
                assert param.name in ours or any(p.kind is p.VAR_KEYWORD for p in ours.values()), (name, param)
    assert isinstance(inspect.getattr_static(LangfuseTracker, "enabled"), property)


# -- the known-faces library and the identity tracker, on real photos ------------------------------

@pytest.fixture(scope="module")
def fr():
    return pytest.importorskip("face_recognition")


def _encoder(fr, calls: list[str]):
    """The real encoder, as the recognizer hands it in (detect, then encode one face); a file named
    undecodable.* fails to decode (face_recognition makes Pillow decode even cut files, so no real
    file here does; the recognizer turns Pillow's errors into UnreadableImage the same way)."""
    def encode(path: Path, data: bytes) -> dict:
        calls.append(path.name)
        if path.stem == "undecodable":
            raise UnreadableImage("OSError: broken data stream")
        image = fr.load_image_file(io.BytesIO(data))
        boxes = fr.face_locations(image)
        if len(boxes) != 1:
            return {"faces": len(boxes)}
        return {"faces": 1, "encoding": [float(v) for v in fr.face_encodings(image, boxes)[0]]}
    return encode


def test_known_faces_loads_a_folder_and_reads_its_cache_the_second_time(data_dir, fr, tmp_path):
    lib, cache = tmp_path / "lib", tmp_path / "cache"
    lib.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(data_dir / "faces" / name, lib / name)
    shutil.copy(data_dir / "images" / "two_people.jpg", lib / "pair.jpg")
    (lib / "broken.jpg").write_bytes(b"not a JPEG at all")  # refused from its header: never decoded
    shutil.copy(data_dir / "images" / "obama_small.jpg", lib / "undecodable.jpg")
    calls: list[str] = []
    first = KnownFaces(lib, cache_dir=cache, cache_key="hog-u1", encode=_encoder(fr, calls))
    first.load()
    assert sorted(calls) == ["biden.jpg", "obama.jpg", "pair.jpg", "undecodable.jpg"]
    assert first.names == ["biden", "obama"] and first.encodings_per_name == {"biden": 1, "obama": 1}
    assert first.counts == {"images": 5, "encoded": 3, "from_cache": 0, "skipped": 3}
    assert {Path(s.path).name: s.reason for s in first.skipped} == {
        "broken.jpg": "unreadable image (not a JPEG, PNG, BMP, WebP or TIFF image)",
        "pair.jpg": "2 faces found (need exactly one face per image)",
        "undecodable.jpg": "unreadable image (OSError: broken data stream)"}
    assert len(list(cache.glob("*-v1-hog-u1.json"))) == 3  # what could not be decoded is not cached

    calls.clear()
    second = KnownFaces(lib, cache_dir=cache, cache_key="hog-u1", encode=_encoder(fr, calls))
    second.load()
    assert calls == ["undecodable.jpg"]  # only what could not be cached is tried again
    assert second.counts == {"images": 5, "encoded": 0, "from_cache": 3, "skipped": 3}
    names, refs = second.references()
    assert names == first.references()[0] and refs.shape == (2, 128)
    np.testing.assert_array_equal(refs, first.references()[1])

    calls.clear()
    other = KnownFaces(lib, cache_dir=None, cache_key="cnn-u1", encode=_encoder(fr, calls))
    other.load()  # no cache: every photo encoded, nothing written
    assert len(calls) == 4 and len(list(cache.iterdir())) == 3


def test_identity_tracker_carries_a_face_to_the_next_close_frame_only(data_dir, fr):
    from video_summarizer.frames import to_rgb

    rgb = to_rgb(cv2.imread(str(data_dir / "images" / "obama_small.jpg")), require_uint8=True)
    boxes = [tuple(int(v) for v in box) for box in fr.face_locations(rgb)]
    (encoding,) = fr.face_encodings(rgb, boxes)
    references = np.array([encoding])
    ids = IdentityTracker(IdentityReuse(), None, tolerance=0.5)
    t0 = 10.0
    assert ids.carried_over(rgb, boxes, t0, references) == [None]  # nothing seen before
    first = ids.tracks(rgb, boxes, [None], [encoding], t0)
    ids.remember(rgb.shape, first, t0)

    next_frame = t0 + 1 / 30
    (carried,) = ids.carried_over(rgb, boxes, next_frame, references)
    assert carried is first[0]
    (second,) = ids.tracks(rgb, boxes, [carried], [], next_frame)
    assert (second.reuses, second.encoded_at) == (1, t0) and second.encoding is encoding
    ids.remember(rgb.shape, [second], next_frame)

    assert ids.carried_over(rgb, boxes, t0 + 1.0, references) == [None]  # a second later in the video
    assert ids.carried_over(rgb, boxes, None, references) == [None]  # adjacency unknown
    # the same place, another look (a cut to a black frame): encoded afresh
    assert ids.carried_over(np.zeros_like(rgb), boxes, next_frame + 1 / 30, references) == [None]
    (still,) = ids.carried_over(rgb, boxes, next_frame + 1 / 30, references)
    assert still is second  # while the look stays, the reuse goes on
    # without reuse nothing is carried or remembered
    off = IdentityTracker(None, None, tolerance=0.5)
    off.remember(rgb.shape, first, t0)
    assert off.carried_over(rgb, boxes, next_frame, references) == [None]


def test_identity_tracker_smooths_names_over_k_of_n_frames():
    ids = IdentityTracker(None, (2, 3), tolerance=0.5)
    ada = [FaceMatch("ada", 0.3, BOX)]
    reported = [[m.name for m in ids.smooth(frame)] for frame in (ada, ada, [], [], ada, ada)]
    assert reported == [["unknown"], ["ada"], [], [], ["unknown"], ["ada"]]
    assert ids.suppressed == 2
    plain = IdentityTracker(None, None, tolerance=0.5)
    assert plain.smooth(ada) is ada and plain.suppressed == 0


def test_the_recognizer_composes_the_library_and_the_identity_tracker(data_dir, tmp_path):
    from video_summarizer.faces import FaceRecognizer

    rec = FaceRecognizer(data_dir / "faces", cache_dir=tmp_path, smoothing=(1, 2))
    assert isinstance(rec.known, KnownFaces) and isinstance(rec.identities, IdentityTracker)
    assert (rec.known.cache_key, rec.identities.tolerance, rec.identities.smoothing) == ("hog-u1", 0.5, (1, 2))
    rec.load()
    assert rec.known_names == rec.known.names and len(rec.known.names) == 5
    image = cv2.imread(str(data_dir / "images" / "obama_small.jpg"))
    first = rec.recognize(image, timestamp=0.0)
    again = rec.recognize(image, timestamp=1 / 30)
    assert [(m.name, m.reused) for m in first + again] == [("obama", False), ("obama", True)]
    assert (rec.counts()["encoded"], rec.counts()["reused"]) == (1, 1)


class FailingFaces(FaceModel):
    """Recognizes 'ada' but on its second call, where it raises."""

    def __init__(self) -> None:
        self.calls = 0

    def recognize(self, frame, timestamp=None):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("dlib gave up")
        return OnlyFaces().recognize(frame, timestamp)


def test_a_face_model_that_raises_leaves_an_error_span_and_fails_only_its_frame(clips, tmp_path, monkeypatch):
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import Stages

    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    tracker = LangfuseTracker(trace_log=tmp_path / "trace.jsonl")
    vlm = OnlyCaptions()
    stages = Stages(tracker=tracker, vlm=vlm, summarizer=OnlySummaries(), faces=FailingFaces(),
                    events=EventWriter(None))
    doc = _run_loop(clips.numbered().path, stages, summary_interval=100.0)
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    spans = [r for r in lines if r["type"] == "span" and r["name"] == "face_recognition"]
    failed = [s for s in spans if s["level"] == "ERROR"]
    assert len(failed) == 1 and failed[0]["status_message"] == "RuntimeError: dlib gave up", failed
    assert len(spans) == stages.faces.calls  # one span a frame, the failed one included
    assert doc.stats["captioned"] == len(vlm.prompts) == stages.faces.calls - 1  # only that frame failed
