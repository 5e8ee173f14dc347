"""Clips, not stills (issue 22 items 2-4): a caption covers the frames since the last one.

A generated numbered clip (tests/clips.py: each frame shows its number) runs through the CLI
in this process against the fake OpenAI server, the fake Langfuse receiver and a tiny index.
Which frames a request carried is read back from its images; the caption events' spans, the
summary's citations, the index rows and the traced media must all name the same frames.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import threading

import cv2
import numpy as np
import pytest

from tests.cli_runner import TEST_PUBLIC_KEY, TEST_SECRET_KEY, numbered_reply, read_events, sent_images
from tests.clips import numbered_frame, read_number
from tests.fake_langfuse import FakeLangfuseServer, wait_until
from tests.fake_openai import FakeOpenAIServer
from video_summarizer import defaults as D
from video_summarizer.clips import ClipCollector, frame_budget
from video_summarizer.frames import from_jpeg_bytes
from video_summarizer.results import Clip, ClipFrame

FPS = 10.0  # numbered clips: frame i at i / 10 s
LABEL = re.compile(r"^Frame (\d+) at (\d\d:\d\d\.\d):$")


def _summary_reply(body: dict) -> str:
    # 00:00.3 is no caption's key frame time: only the span of the clip ending at frame 10 covers it.
    return "Something moves [00:00.3]. It goes on [00:01.2-00:01.4]."


def _invoke(args: list[str], langfuse_url: str | None = None):
    """The CLI in this process (click's CliRunner), with the fake Langfuse's keys when given."""
    from click.testing import CliRunner

    import real_time_summarizer

    env = {k: None for k in os.environ if k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_"))}
    if langfuse_url:
        env.update(LANGFUSE_PUBLIC_KEY=TEST_PUBLIC_KEY, LANGFUSE_SECRET_KEY=TEST_SECRET_KEY,
                   LANGFUSE_BASE_URL=langfuse_url)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return CliRunner().invoke(real_time_summarizer.cli, args, env=env, catch_exceptions=False)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _run(tmp_path, clip, *more, langfuse_url=None, llm_reply=_summary_reply):
    events = tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=numbered_reply) as vlm, \
            FakeOpenAIServer(reply_fn=llm_reply, models=("mistral-test",)) as llm:
        result = _invoke(["--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3", "--llm-base-url", llm.base_url,
                          "--llm-model", "mistral-test", "--no-faces", "--max-inflight", "1",
                          "--source", str(clip.path), "--interval", "1", "--min-change", "0",
                          "--events", str(events), "--trace-log", str(tmp_path / "trace.jsonl"), "--json", *more],
                         langfuse_url)
        assert result.exit_code == 0, result.output
        return vlm.requests, llm.requests, read_events(events), json.loads(result.stdout.splitlines()[0])


def _labels(body: dict) -> list[tuple[int, str]]:
    parts = body["messages"][0]["content"]
    return [(int(m.group(1)), m.group(2)) for p in parts if p["type"] == "text" and (m := LABEL.match(p["text"]))]


@pytest.fixture(scope="module")
def clip(clips):
    return clips.numbered(seconds=3.0)  # frames 0-29; captions at 0, 10, 20 with --interval 1


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from tests.tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, clip, bert):
    """One run at the server defaults with the index and --trace-frames on."""
    tmp = tmp_path_factory.mktemp("clip-run")
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        vlm, llm, events, doc = _run(tmp, clip, "--index", str(tmp / "idx"), "--embed-model", str(bert),
                                     "--trace-frames", langfuse_url=lf.base_url)
        assert wait_until(lambda: len(lf.data.media_links()) >= 1 + 2 * D.CLIP_FRAMES_SERVER, timeout=10)
        return {"vlm": vlm, "llm": llm, "events": events, "doc": doc, "lf": lf, "index": tmp / "idx"}


def test_a_request_carries_the_clip_frames_in_order_with_their_times(clip_run):
    requests = clip_run["vlm"]
    numbers = [[read_number(image) for image in sent_images(r)] for r in requests]
    assert [len(n) for n in numbers] == [1, D.CLIP_FRAMES_SERVER, D.CLIP_FRAMES_SERVER]  # the first has no past
    assert numbers[0] == [0]
    for n, key in zip(numbers[1:], (10, 20)):
        assert n[-1] == key and n == sorted(set(n)) and key - 10 < n[0]  # in order, since the last caption
        labels = _labels(requests[numbers.index(n)])
        assert [k for k, _ in labels] == list(range(1, len(n) + 1))
        assert [t for _, t in labels] == [f"00:{i / FPS:04.1f}" for i in n]  # each frame's own time
    prompt = requests[1]["messages"][0]["content"][-1]["text"]
    assert prompt.startswith(f"These {D.CLIP_FRAMES_SERVER} frames come from one stretch of video, in time order")
    assert _labels(requests[0]) == [] and "this video frame" in requests[0]["messages"][0]["content"][-1]["text"]


def test_spans_agree_across_events_summary_index_and_trace(clip_run):
    sent = {read_number(images[-1]): [read_number(i) for i in images]
            for images in (sent_images(r) for r in clip_run["vlm"])}
    captions = [e for e in clip_run["events"] if e["type"] == "caption"]
    assert [c["frame"] for c in captions] == [0, 10, 20]
    for c in captions:
        frames = sent[c["frame"]]
        assert c["span"] == {"first_frame": frames[0], "last_frame": frames[-1],
                             "start": frames[0] / FPS, "end": frames[-1] / FPS}
        assert c["video_time"] == c["span"]["end"]  # the key frame is the clip's last
    # The summary prompt stamps a clip's caption with its span, and a time inside it cites it.
    prompt = clip_run["llm"][-1]["messages"][-1]["content"]
    assert '[00:00-00:01] "Frame 10.' in prompt
    doc = clip_run["doc"]
    assert [[c["frame"] for c in s["cites"]] for s in doc["sentences"]] == [[10], [20]]
    assert doc["sentences"][0]["cites"][0]["span"] == captions[1]["span"]
    assert doc["stats"]["citations_dropped"] == 0
    # The index keeps each caption's span start beside its key frame time.
    from video_summarizer.search.index import open_table

    rows = {r["frame"]: r for r in open_table(str(clip_run["index"])).search().limit(100).to_list()
            if r["kind"] == "caption"}
    assert {f: (r["start_s"], r["time_s"]) for f, r in rows.items()} == {
        c["frame"]: (c["span"]["start"], c["span"]["end"]) for c in captions}
    # --trace-frames: each vlm_caption generation carries every frame of its clip, in order.
    lf = clip_run["lf"]
    gens = {g["span_id"]: g for g in lf.spans_named("vlm_caption")
            if g["attributes"].get("langfuse.observation.type") == "generation"}
    by_gen: dict[str, list] = {}
    for link in lf.data.media_links():
        by_gen.setdefault(link["observation_id"], []).append(link["media_id"])
    traced = {}
    for gid, media in by_gen.items():
        text = gens[gid]["attributes"]["langfuse.observation.input"]
        ordered = sorted(media, key=lambda m: text.index(m))  # as the input lists them
        traced_numbers = [read_number(from_jpeg_bytes(lf.data.media_bytes(m))) for m in ordered]
        traced[traced_numbers[-1]] = traced_numbers
    assert traced == sent


def test_clip_frames_1_sends_one_still_per_request(tmp_path, clip):
    vlm, _llm, events, _doc = _run(tmp_path, clip, "--clip-frames", "1")
    assert [[read_number(i) for i in sent_images(r)] for r in vlm] == [[0], [10], [20]]
    assert all(_labels(r) == [] for r in vlm)
    spans = [e["span"] for e in events if e["type"] == "caption"]
    assert [(s["first_frame"], s["last_frame"]) for s in spans] == [(0, 0), (10, 10), (20, 20)]


def test_clip_as_video_sends_one_video_part(tmp_path, clip):
    vlm, _llm, _events, _doc = _run(tmp_path, clip, "--clip-as", "video", "--clip-frames", "4")
    parts = vlm[1]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"]
    url = parts[0]["video_url"]["url"]
    assert url.startswith("data:video/jpeg;base64,")  # vLLM: comma-separated base64 JPEG frames
    frames = [cv2.imdecode(np.frombuffer(base64.b64decode(b), np.uint8), cv2.IMREAD_COLOR)
              for b in url.split(",", 1)[1].split(",")]
    numbers = [read_number(f) for f in frames]
    assert len(numbers) == 4 and numbers[-1] == 10 and numbers == sorted(numbers)
    assert len({f.shape for f in frames}) == 1  # vLLM stacks them
    assert ", ".join(f"00:{n / FPS:04.1f}" for n in numbers) in parts[1]["text"]


# -- the collector -------------------------------------------------------------------------------------
class _Frame:
    def __init__(self, index: int, image: np.ndarray) -> None:
        self.index, self.timestamp, self.image = index, index / 30.0, image


def test_collector_memory_is_bounded_and_the_clip_ends_at_the_key_frame():
    collector = ClipCollector(6, max_pixels=D.CLIP_MAX_PIXELS_SERVER)
    still, first, second = (np.full((720, 1280, 3), 90, np.uint8), numbered_frame(100, (1280, 720)),
                            numbered_frame(350, (1280, 720)))
    peak = 0
    for i in range(600):  # 20 s at 30 fps since the last caption; the scene changes at 100 and 350
        collector.add(_Frame(i, still if i < 100 else first if i < 350 else second))
        peak = max(peak, collector.nbytes)
        assert len(collector) <= D.CLIP_CANDIDATES
    per_frame = frame_budget(D.CLIP_MAX_PIXELS_SERVER, 6)
    assert peak <= D.CLIP_CANDIDATES * per_frame * 3 < 25_000_000
    clip = collector.take(_Frame(600, second))
    indices = [f.index for f in clip.frames]
    assert len(indices) == 6 and indices == sorted(indices) and indices[-1] == 600 and clip.key == 5
    shown = {read_number(f.image) for f in clip.frames if f.image.std() > 0}
    assert shown == {100, 350}  # each change is in the clip, the first frames after it chosen
    assert all(f.image.shape[0] * f.image.shape[1] <= per_frame for f in clip.frames)
    assert len(collector) == 0 and len(collector.take(_Frame(601, still)).frames) == 1  # the next starts afresh


def test_motion_picks_the_moving_frame_and_unseen_frames_are_not_decoded():
    collector = ClipCollector(4, max_pixels=D.CLIP_MAX_PIXELS_LOCAL)
    still = np.full((360, 640, 3), 90, np.uint8)
    for i in range(300):  # one caption's span: sizes the buckets of the next (300 / 32 = 9 frames each)
        collector.add(_Frame(i, still))
    collector.take(_Frame(300, still))
    decoded = []

    class Lazy(_Frame):  # a file's frame: decoded when its pixels are read
        @property
        def image(self):
            decoded.append(self.index)
            return numbered_frame(self.index, (640, 360)) if self.index == 455 else still

        @image.setter
        def image(self, value):
            pass

    for i in range(301, 600):
        collector.add(Lazy(i, still), motion_area=0.2 if i == 455 else None)
    clip = collector.take(_Frame(600, still))
    assert 455 in [f.index for f in clip.frames] and read_number(clip.frames[[f.index for f in clip.frames].index(455)]
                                                                 .image) == 455
    assert len(decoded) <= 300 // 9 + 2  # the first of each bucket, and the moving one


def test_one_frame_clips_keep_nothing():
    collector = ClipCollector(1)
    for i in range(50):
        collector.add(_Frame(i, np.zeros((360, 640, 3), np.uint8)))
    assert len(collector) == 0
    clip = collector.take(_Frame(50, np.zeros((360, 640, 3), np.uint8)))
    assert [f.index for f in clip.frames] == [50] and clip.frames[0].image.shape == (360, 640, 3)


# -- in process ----------------------------------------------------------------------------------------
def test_the_in_process_model_takes_a_multi_image_clip(tmp_path_factory):
    from tests.tiny_models import build_tiny_llava
    from video_summarizer.models.local_vlm import LocalVLM

    vlm = LocalVLM(str(build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))), device="cpu", max_new_tokens=4)
    vlm.load()
    frames = tuple(ClipFrame(i, i / 10.0, numbered_frame(i)) for i in (3, 6, 9))
    seen: list = []
    real = vlm.processor.__call__

    def spy(*args, **kwargs):
        seen.append(len(kwargs.get("images") or []))
        return real(*args, **kwargs)

    vlm.processor.__class__.__call__ = lambda self, *a, **k: spy(*a, **k)
    try:
        still = vlm.generate_clip(Clip(frames[-1:], 0), "Describe.")
        clip = vlm.generate_clip(Clip(frames, 2), "Describe.")
    finally:
        del vlm.processor.__class__.__call__
    assert still.success and clip.success, (still.error, clip.error)
    assert seen == [1, 3]
    assert clip.metadata["clip_frames"] == 3 and "clip_frames" not in still.metadata
    assert clip.input_tokens - still.input_tokens >= 2 * 16  # two more images of 16 tokens, plus their times


# -- faces across the clip ------------------------------------------------------------------------------
class _ClipCaptions:
    """A caption model (the stage boundary) that keeps the clips it was asked about."""

    def __init__(self) -> None:
        from video_summarizer.backends import CaptionModel
        from video_summarizer.results import CaptionResult

        outer = self

        class Model(CaptionModel):
            def generate_caption(self, frame, prompt):
                raise AssertionError("the loop captions clips")

            def generate_clip(self, clip, prompt):
                outer.clips.append(clip)
                return CaptionResult(text="Ada walks.", success=True, model="x", start_time=1.0, end_time=1.5)

        self.clips: list = []
        self.model = Model()


class _Faces:
    """A face model that finds one face on every frame: recognize() names it, boxes() only finds it."""

    def __init__(self, detects: bool) -> None:
        from video_summarizer.backends import FaceModel
        from video_summarizer.faces import FaceMatch

        outer = self
        self.recognized: list[float] = []
        self.boxed: list[tuple] = []

        class Model(FaceModel):
            def recognize(self, frame, timestamp=None):
                outer.recognized.append(timestamp)
                return [FaceMatch("ada", 0.3, (10, 60, 50, 20))]

            if detects:
                def boxes(self, frame):
                    outer.boxed.append(frame.shape)
                    return [(10, 60, 50, 20)]

        self.model = Model()


def _loop(clip_path, tmp_path, faces, *, blur: bool):
    from functools import partial

    from langfuse_tracker import LangfuseTracker
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source

    captions = _ClipCaptions()
    llm = _one_summary()
    stages = Stages(tracker=LangfuseTracker(trace_log=tmp_path / "trace.jsonl"), vlm=captions.model, summarizer=llm,
                    faces=faces.model, events=EventWriter(None), blur_faces=blur,
                    clips=partial(ClipCollector, 4, max_pixels=D.CLIP_MAX_PIXELS_SERVER))
    source = open_source(str(clip_path))
    try:
        doc = SourceRun(source, FrameSelector(interval=1.0, min_change=0.0), stages,
                        PipelineConfig(summary_interval=60), session_id="s", stop_event=threading.Event()).run()
    finally:
        source.close()
        stages.tracker.close(deadline_s=5)
    return doc, captions.clips


def _one_summary():
    """A summary model (the stage boundary) with one fixed answer."""
    from video_summarizer.backends import SummaryModel
    from video_summarizer.results import SummaryResult

    class Model(SummaryModel):
        def generate(self, messages):
            return SummaryResult(text="Ada walks [00:01].", success=True, model="x", start_time=2.0, end_time=2.5)

    return Model()


def test_faces_are_recognized_on_the_key_frame_only_and_blurred_on_every_frame_sent(tmp_path, clip, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    faces = _Faces(detects=True)
    doc, sent = _loop(clip.path, tmp_path, faces, blur=True)
    keys = [c["video_time"] for c in doc.captions]
    assert [len(c.frames) for c in sent] == [1, 4, 4]
    assert faces.recognized == keys  # one recognition a caption, on its key frame: about one frame of face work
    others = [f.image.shape for c in sent for f in c.frames if f is not c.key_frame]
    assert faces.boxed == others  # the other frames only detected (no names, no identities), to be blurred
    assert [c["faces"] for c in doc.captions] == [["ada"]] * 3  # the key frame's names cover the clip


def test_without_a_detector_a_blurred_clip_is_its_key_frame_alone(tmp_path, clip, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    doc, sent = _loop(clip.path, tmp_path, _Faces(detects=False), blur=True)
    assert [[f.index for f in c.frames] for c in sent] == [[0], [10], [20]]  # nothing unblurred leaves
    doc, sent = _loop(clip.path, tmp_path, _Faces(detects=False), blur=False)
    assert [len(c.frames) for c in sent] == [1, 4, 4]


# -- the watch page ------------------------------------------------------------------------------------
def test_the_watch_page_serves_the_clip_frames_as_thumbnails():
    from video_summarizer.watch.server import CLIP_THUMB_SIDE, PageState, _frame_json

    page = PageState()
    frames = tuple(ClipFrame(i, i / FPS, numbered_frame(i, (640, 480))) for i in (4, 7, 10))
    page(frames[-1].image, {"source": "cam", "frame": 10, "video_time": 1.0, "caption": "x", "clip": Clip(frames, 2)},
         [])
    listed = _frame_json(page._sources["cam"])["clip"]
    assert [(f["frame"], f["at"]) for f in listed] == [(4, "00:00"), (7, "00:00"), (10, "00:01")]
    thumbs = [from_jpeg_bytes(page.frame_jpeg("cam", k)) for k in range(3)]
    assert [read_number(t) for t in thumbs] == [4, 7, 10] and max(thumbs[0].shape[:2]) == CLIP_THUMB_SIDE
    assert page.frame_jpeg("cam", 3) is None


# -- an index made before spans ----------------------------------------------------------------------------
def test_an_index_made_before_spans_is_still_written_and_searched(tmp_path, bert):
    import pyarrow as pa
    from lancedb.index import FTS

    from video_summarizer.options import IndexOptions
    from video_summarizer.search.index import (
        TABLE, Embedder, Query, _schema, connect, open_indexer, open_table, search,
    )

    location = str(tmp_path / "old-idx")
    new = _schema(Embedder(str(bert)).load().dim, str(bert))
    old = pa.schema([f for f in new if f.name != "start_s"], metadata=new.metadata)  # as indexes were made
    table = connect(location, create=True).create_table(TABLE, schema=old)
    table.create_index("text", config=FTS(), replace=True)

    class Live:
        spec, label, shown = "rtsp://cam", "cam", "rtsp://cam"

    indexer = open_indexer(IndexOptions(index=location, embed_model=str(bert)), [Live()], live=True)
    indexer.listen("caption", {"type": "caption", "source": "cam", "frame": 10, "video_time": 1.0,
                               "span": {"first_frame": 4, "last_frame": 10, "start": 0.4, "end": 1.0},
                               "faces": [], "caption": "A man at a podium speaks.", "trace_id": "t1"})
    indexer.close()
    assert indexer.stats.failures == 0 and indexer.stats.captions == 1
    table = open_table(location)
    assert "start_s" not in table.schema.names  # left as it was made
    hits = search(table, Embedder(str(bert)).load(), Query("podium"))
    assert [(h.frame, h.time_s, h.start_s) for h in hits] == [(10, 1.0, None)]


def test_a_citation_inside_a_span_or_a_range_overlapping_it_cites_the_clip():
    from video_summarizer.citations import CitableCaption, ground_summary

    captions = [CitableCaption(5.0, {"frame": 50}), CitableCaption(10.0, {"frame": 100}, 6.2)]  # still; clip 6.2-10
    grounded = ground_summary("He waits [00:05]. He walks in [00:08]. He leaves [00:09-00:12]. "
                              "Nobody [00:06.0]. Later [00:11].", captions)
    assert [[c["frame"] for c in s.cites] for s in grounded.sentences] == [[50], [100], [100], [], []]
    assert grounded.dropped == 2  # 6.0-6.09 s ends before the clip starts; 11 s is after it
