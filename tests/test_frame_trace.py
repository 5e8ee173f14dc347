"""One pair of stamps per generation: the events, the trace log and Langfuse read the same TTFT.

A real loop (SourceRun over a decoded clip), the real model clients against the fake OpenAI
server and the real tracker sending to the fake Langfuse receiver: for every generation,
Langfuse's completion_start − start equals the event's ttft_ms, and so does the trace log's.
The generations recorded from the results' stamps keep their place (under their stage span,
under the frame's root) and the trace's user, session and tags.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime

from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer



def _iso_ns(value: str) -> int:
    """The completion_start_time attribute (JSON-quoted ISO-8601) as epoch ns, to the microsecond."""
    stamp = datetime.fromisoformat(json.loads(value).replace("Z", "+00:00"))
    return round(stamp.timestamp() * 1_000_000) * 1000


def _run(clips, tmp_path, key: str):
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source
    from vlm_client_module import VLMClient

    # A large frame: the caption client's image preparation takes ms, inside what used to be the gap.
    clip = clips.numbered(seconds=3.0, size=(1280, 720))
    events: list[tuple[str, dict]] = []
    PK, SK = f"pk-{key}", f"sk-{key}"  # the SDK keeps one client per public key and process
    with FakeLangfuseServer(public_key=PK, secret_key=SK) as lf, \
            FakeOpenAIServer(reply="A wall [00:00].", first_chunk_delay=0.02) as srv:
        tracker = LangfuseTracker(public_key=PK, secret_key=SK, base_url=lf.base_url,
                                  trace_log=tmp_path / "trace.jsonl")
        writer = EventWriter(None)
        writer.add_listener(lambda kind, record: events.append((kind, record)))
        stages = Stages(tracker=tracker, vlm=VLMClient(srv.base_url, None, "qwen3"),
                        summarizer=LLMSummarizer("qwen3", base_url=srv.base_url), faces=None, events=writer)
        source = open_source(str(clip.path))
        try:
            SourceRun(source, FrameSelector(interval=0.5, min_change=0.0), stages,
                      PipelineConfig(summary_interval=1.0), session_id="sess-ft",
                      stop_event=threading.Event()).run()
        finally:
            source.close()
        report = tracker.close(deadline_s=10)
        spans = list(lf.spans)
    log = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    return events, spans, log, report


def test_every_generation_has_one_ttft_in_events_trace_log_and_langfuse(clips, tmp_path, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST"):
        monkeypatch.delenv(key, raising=False)
    events, spans, log, _report = _run(clips, tmp_path, "ft-ttft")
    by_trace: dict[tuple[str, str], float] = {}
    for kind, record in events:
        if kind in ("caption", "summary") and record.get("ttft_ms") is not None:
            name = "vlm_caption" if kind == "caption" else "llm_summary"
            by_trace[(record["trace_id"], name)] = record["ttft_ms"]
    gens = [s for s in spans if s["attributes"].get("langfuse.observation.type") == "generation"]
    captions = [g for g in gens if g["name"] == "vlm_caption"]
    summaries = [g for g in gens if g["name"] == "llm_summary"]
    assert len(captions) >= 5 and len(summaries) >= 2
    assert len(by_trace) == len(gens)
    for gen in gens:
        cst = _iso_ns(gen["attributes"]["langfuse.observation.completion_start_time"])
        langfuse_ttft = (cst - gen["start_ns"]) / 1e6
        assert abs(langfuse_ttft - by_trace[(gen["trace_id"], gen["name"])]) <= 0.1, gen["name"]
    logged = [g for g in log if g["type"] == "generation"]
    assert len(logged) == len(gens)
    for gen in logged:
        assert abs(gen["ttft_ms"] - by_trace[(gen["trace_id"], gen["name"])]) <= 0.1, gen["name"]


def test_recorded_generations_keep_their_parent_and_the_trace_attributes(clips, tmp_path, monkeypatch):
    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST"):
        monkeypatch.delenv(key, raising=False)
    _events, spans, _log, report = _run(clips, tmp_path, "ft-nest")
    by_id = {s["span_id"]: s for s in spans}
    parent_of = {"vlm_caption": "vlm_caption", "llm_summary": "llm_summarization"}
    gens = [s for s in spans if s["attributes"].get("langfuse.observation.type") == "generation"]
    assert gens
    for gen in gens:
        parent = by_id[gen["parent_span_id"]]
        assert parent["name"] == parent_of[gen["name"]] and parent["trace_id"] == gen["trace_id"]
        root = by_id[parent["parent_span_id"]]
        assert root["parent_span_id"] is None and root["name"] in ("frame_processing", "video_summary")
        attrs = gen["attributes"]
        assert attrs["session.id"] == "sess-ft" and attrs["user.id"] == root["attributes"]["user.id"]
        assert attrs["langfuse.trace.name"] == root["name"]
        assert list(attrs["langfuse.trace.tags"]) == list(root["attributes"]["langfuse.trace.tags"])
        assert attrs["langfuse.observation.model.name"] == "qwen3"
        assert gen["start_ns"] >= parent["start_ns"] and gen["end_ns"] <= parent["end_ns"]
    frames = {s["trace_id"] for s in spans if s["name"] == "frame_processing"}
    assert frames <= {g["trace_id"] for g in gens if g["name"] == "vlm_caption"}
    assert report.observations_lost == 0
