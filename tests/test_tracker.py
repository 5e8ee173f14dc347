"""LangfuseTracker against the real langfuse SDK talking HTTP to a local receiver (127.0.0.1).

Each test builds its tracker with a fresh public key: the SDK keeps one client per key.
Time-zone and exit-deadline checks run in subprocesses (TZ must be set before start-up;
exit time is only honest in a process of its own).
"""
from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from langfuse_tracker import (
    DummyGeneration,
    DummySpan,
    DummyTrace,
    LangfuseTracker,
    mask_secret,
    normalize_score,
    to_utc,
)
from tests.fake_langfuse import FakeLangfuseServer
from video_summarizer.scores import ALL_SCORE_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-lf-test-secret-0123456789"
ATTR = "langfuse.observation."
KEY_ENV = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in KEY_ENV + ("LANGFUSE_TIMEOUT", "LANGFUSE_FLUSH_AT", "LANGFUSE_TRACING_ENABLED"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lf():
    """A receiver and a tracker talking to it (fresh public key), closed afterwards."""
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url,
                                  timeout_s=2)
        yield srv, tracker
        tracker.close(deadline_s=5)


def fake_model_call(delay_first: float = 0.02, delay_rest: float = 0.02) -> tuple[str, float]:
    """Stand-in for a streamed model call: returns text and the first token's epoch time."""
    time.sleep(delay_first)
    first = time.time()
    time.sleep(delay_rest)
    return "a person stands in front of a whiteboard", first


def run_frame(tracker: LangfuseTracker, index: int, first_tokens: dict) -> str:
    """One frame as the loop does it: 1 trace, 3 spans, 2 generations, 7 scores."""
    with tracker.create_trace("frame_processing", user_id="cam0", session_id="run-1",
                              tags=["test"], metadata={"frame_index": index,
                                                       "video_time_s": index / 2}) as trace:
        with tracker.create_span(trace.id, "face_recognition") as span:
            span.update(output={"names": ["obama"]})
        with tracker.create_span(trace.id, "vlm_caption"):
            with tracker.start_generation(trace_id=trace.id, name="vlm_caption", model="qwen3",
                                          input="Describe the frame.",
                                          metadata={"faces_detected": 1}) as gen:
                text, first = fake_model_call()
                first_tokens[gen.id] = first
                gen.update(output=text, usage={"input": 12, "output": 30},
                           completion_start_time=first)
            tracker.log_score(trace.id, "vlm_success", 1.0, observation_id=gen.id)
            tracker.log_score(trace.id, "vlm_latency_score", 0.9, observation_id=gen.id)
            tracker.log_score(trace.id, "vlm_quality", 0.4, observation_id=gen.id)
        with tracker.create_span(trace.id, "llm_summary"):
            with tracker.start_generation(trace_id=trace.id, name="llm_summary",
                                          model="mistralai/Mistral-7B-Instruct-v0.3",
                                          input="Summarize.") as gen2:
                text2, first2 = fake_model_call(0.01, 0.01)
                first_tokens[gen2.id] = first2
                gen2.update(output=text2, completion_start_time=datetime.fromtimestamp(
                    first2, tz=timezone.utc))
            tracker.log_score(trace.id, "llm_success", True, data_type="BOOLEAN",
                              observation_id=gen2.id)
            tracker.log_score(trace.id, "llm_processing_score", 0.95, observation_id=gen2.id)
            tracker.log_score(trace.id, "llm_quality", 0.6, observation_id=gen2.id)
        tracker.log_score(trace.id, "overall_quality", 0.8, score_trace=True)
        return trace.id


def iso_to_ns(value: str) -> int:
    """An ISO-8601 timestamp as epoch ns (microsecond precision)."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None, value
    return round(dt.timestamp() * 1e6) * 1000


# -- disabled mode ---------------------------------------------------------------------------
def test_without_keys_everything_is_a_noop_with_the_same_types(caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.tracker")
    tracker = LangfuseTracker()
    assert tracker.enabled is False
    assert "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY not set" in tracker.disabled_reason
    disabled = [r for r in caplog.records if "disabled" in r.getMessage()]
    assert len(disabled) == 1
    with tracker.create_trace("frame_processing", user_id="cam0") as trace:
        assert isinstance(trace, DummyTrace)
        assert len(trace.id) == 32 and int(trace.id, 16) >= 0
        with tracker.create_span(trace.id, "vlm_caption") as span:
            assert isinstance(span, DummySpan)
            gen = tracker.start_generation(trace_id=trace.id, name="vlm_caption", model="qwen3",
                                           input="x", metadata={})
            gen.__enter__()
            tracker.client.update_current_generation(output="y", completion_start_time=1.0)
            gen.__exit__(None, None, None)
            assert isinstance(gen, DummyGeneration)
        tracker.log_score(trace.id, "vlm_success", 1.0)
        with pytest.raises(ValueError):  # still validated: a bug shows up without keys too
            tracker.log_score(trace.id, "vlm_success", 0.5, data_type="BOOLEAN")
    assert tracker.create_trace("x").id != trace.id
    assert tracker.client.get_trace_url() is None  # delegated names become no-ops
    assert "nothing sent" in str(tracker.close())


def test_one_key_missing_names_it_and_tracing_enabled_false_disables(monkeypatch):
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-only")
    tracker = LangfuseTracker()
    assert not tracker.enabled and tracker.disabled_reason.startswith("LANGFUSE_SECRET_KEY")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_TRACING_ENABLED", "false")
    tracker = LangfuseTracker()
    assert not tracker.enabled and tracker.disabled_reason == "LANGFUSE_TRACING_ENABLED=false"


def test_noop_mode_imports_neither_langfuse_nor_opentelemetry():
    code = ("import sys, langfuse_tracker as t; tr = t.LangfuseTracker()\n"
            "with tr.create_trace('f') as tc:\n"
            "    with tr.start_generation(tc.id, 'g', 'm') as g: g.update(completion_start_time=1.0)\n"
            "    tr.log_score(tc.id, 'vlm_success', 1.0)\n"
            "tr.close()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langfuse', 'opentelemetry', 'httpx')))")
    env = {k: v for k, v in os.environ.items() if k not in KEY_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, text=True,
                         capture_output=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_trace_log_written_when_disabled(tmp_path):
    path = tmp_path / "logs" / "trace.jsonl"
    tracker = LangfuseTracker(trace_log=path)
    first_tokens: dict = {}
    trace_id = run_frame(tracker, 3, first_tokens)
    tracker.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in rows].count("trace") == 1
    assert [r["type"] for r in rows].count("generation") == 2
    assert [r["type"] for r in rows].count("span") == 3
    assert sorted(r["name"] for r in rows if r["type"] == "score") == sorted(ALL_SCORE_NAMES)
    assert {r["trace_id"] for r in rows} == {trace_id}
    trace = next(r for r in rows if r["type"] == "trace")
    assert trace["user_id"] == "cam0" and trace["session_id"] == "run-1"
    assert trace["metadata"] == {"frame_index": 3, "video_time_s": 1.5}
    spans = {r["name"]: r for r in rows if r["type"] == "span"}
    for gen in (r for r in rows if r["type"] == "generation"):
        assert gen["parent_id"] == spans[gen["name"]]["id"]
        start, cst, end = (iso_to_ns(gen[k]) for k in ("start", "completion_start_time", "end"))
        assert start < cst < end
        assert abs(cst / 1e9 - first_tokens[gen["id"]]) < 0.001
        assert gen["ttft_ms"] == pytest.approx((cst - start) / 1e6, abs=0.002)
    assert spans["face_recognition"]["parent_id"] == trace["observation_id"]
    overall = next(r for r in rows if r["name"] == "overall_quality")
    assert overall["target"] == "trace" and overall["observation_id"] is None
    llm_success = next(r for r in rows if r["name"] == "llm_success")
    assert (llm_success["data_type"], llm_success["value"]) == ("BOOLEAN", 1.0)
    assert all(r[k].endswith("Z") for r in rows for k in ("start", "end", "timestamp")
               if r.get(k))


# -- enabled: what reaches the server ---------------------------------------------------------
def test_one_frame_is_one_trace_with_nested_spans_ttft_and_seven_scores(lf):
    srv, tracker = lf
    assert tracker.enabled
    first_tokens: dict = {}
    trace_id = run_frame(tracker, 12, first_tokens)
    assert tracker.flush()
    assert srv.wait_for(n_spans=6, n_scores=7, timeout=10)
    spans = srv.spans
    assert len(spans) == 6 and {s["trace_id"] for s in spans} == {trace_id}
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["frame_processing"]
    root = roots[0]
    by_name: dict[str, list[dict]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    assert by_name["face_recognition"][0]["parent_span_id"] == root["span_id"]
    for name, model in (("vlm_caption", "qwen3"),
                        ("llm_summary", "mistralai/Mistral-7B-Instruct-v0.3")):
        span = next(s for s in by_name[name] if s["attributes"][ATTR + "type"] == "span")
        gen = next(s for s in by_name[name] if s["attributes"][ATTR + "type"] == "generation")
        assert span["parent_span_id"] == root["span_id"]
        assert gen["parent_span_id"] == span["span_id"]
        attrs = gen["attributes"]
        assert attrs[ATTR + "model.name"] == model
        assert attrs[ATTR + "output"] == "a person stands in front of a whiteboard"
        assert attrs[ATTR + "input"] in ("Describe the frame.", "Summarize.")
        cst_ns = iso_to_ns(json.loads(attrs[ATTR + "completion_start_time"]))
        assert gen["start_ns"] < cst_ns < gen["end_ns"]
        assert abs(cst_ns / 1e9 - first_tokens[gen["span_id"]]) <= 0.005
        assert attrs["user.id"] == "cam0" and attrs["session.id"] == "run-1"
    vlm_gen = next(s for s in by_name["vlm_caption"] if s["attributes"][ATTR + "type"] == "generation")
    assert json.loads(vlm_gen["attributes"][ATTR + "usage_details"]) == {"input": 12, "output": 30}
    assert root["attributes"]["langfuse.trace.name"] == "frame_processing"
    assert root["attributes"]["langfuse.trace.tags"] == ["test"]
    assert json.loads(root["attributes"]["langfuse.trace.metadata.frame_index"]) == 12
    scores = {s["name"]: s for s in srv.scores}
    assert sorted(scores) == sorted(ALL_SCORE_NAMES)
    assert all(s["traceId"] == trace_id for s in srv.scores)
    assert "observationId" not in scores["overall_quality"]
    gen_ids = {s["span_id"] for s in spans if s["attributes"][ATTR + "type"] == "generation"}
    for name in ALL_SCORE_NAMES[:-1]:
        assert scores[name]["observationId"] in gen_ids
    assert scores["vlm_success"]["observationId"] == vlm_gen["span_id"]
    assert scores["llm_success"]["dataType"] == "BOOLEAN" and scores["llm_success"]["value"] == 1.0
    assert {s["dataType"] for n, s in scores.items() if n != "llm_success"} == {"NUMERIC"}
    report = tracker.close(deadline_s=5)
    assert report.completed and report.observations == 6 and report.observations_delivered == 6
    assert report.scores == report.scores_delivered == 7 and report.scores_lost == 0


def test_guide_pattern_explicit_enter_exit_with_update_current_generation(lf):
    srv, tracker = lf
    with tracker.create_trace("frame_processing") as trace:
        with tracker.create_span(trace.id, "vlm_caption"):
            generation_context = tracker.start_generation(
                trace_id=trace.id, name="vlm_caption", model="qwen3", input="prompt",
                metadata={"faces_detected": 0})
            generation_context.__enter__()
            try:
                _, first = fake_model_call()
                tracker.client.update_current_generation(
                    output="caption", completion_start_time=datetime.fromtimestamp(first))
            finally:
                generation_context.__exit__(None, None, None)
    tracker.flush()
    assert srv.wait_for(n_spans=3)
    gen = next(s for s in srv.spans if s["attributes"].get(ATTR + "type") == "generation")
    cst_ns = iso_to_ns(json.loads(gen["attributes"][ATTR + "completion_start_time"]))
    assert abs(cst_ns / 1e9 - first) <= 0.001  # naive local datetime read as local time
    assert gen["start_ns"] < cst_ns < gen["end_ns"]
    assert gen["attributes"][ATTR + "output"] == "caption"


def test_failed_call_marks_generation_error(lf):
    srv, tracker = lf
    with tracker.create_trace("frame_processing") as trace:
        with pytest.raises(TimeoutError):
            with tracker.start_generation(trace_id=trace.id, name="vlm_caption", model="qwen3"):
                raise TimeoutError("no answer in 30 s")
        with tracker.start_generation(trace_id=trace.id, name="llm_summary", model="m") as gen:
            gen.set_error("model_error: out of memory")
    tracker.flush()
    assert srv.wait_for(n_spans=3)
    gens = {s["name"]: s["attributes"] for s in srv.spans if s["name"] != "frame_processing"}
    assert gens["vlm_caption"][ATTR + "level"] == "ERROR"
    assert gens["vlm_caption"][ATTR + "status_message"] == "TimeoutError: no answer in 30 s"
    assert gens["llm_summary"][ATTR + "level"] == "ERROR"
    assert gens["llm_summary"][ATTR + "status_message"] == "model_error: out of memory"
    assert tracker.stats()["errors"] == 2


def test_concurrent_frames_in_worker_threads_never_mix(lf):
    srv, tracker = lf
    first_tokens: dict = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        trace_ids = list(pool.map(lambda i: run_frame(tracker, i, first_tokens), range(12)))
    tracker.flush()
    assert srv.wait_for(n_spans=72, n_scores=84)
    traces = srv.traces()
    assert set(traces) == set(trace_ids) and len(trace_ids) == 12
    for spans in traces.values():
        assert len(spans) == 6
        assert [s["name"] for s in spans if s["parent_span_id"] is None] == ["frame_processing"]
        ids = {s["span_id"] for s in spans}
        assert all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"])
        frame = {s["attributes"]["langfuse.trace.metadata.frame_index"] for s in spans}
        assert len(frame) == 1
    by_trace: dict[str, set] = {}
    for score in srv.scores:
        by_trace.setdefault(score["traceId"], set()).add(score["name"])
    assert all(names == set(ALL_SCORE_NAMES) for names in by_trace.values())


def test_generation_opened_in_another_thread_joins_the_frames_trace(lf):
    srv, tracker = lf
    with tracker.create_trace("frame_processing", user_id="cam7", session_id="s") as trace:
        result = {}

        def worker() -> None:  # a bare thread: no contextvars copied from the frame
            with tracker.create_span(trace.id, "vlm_caption") as span:
                with tracker.start_generation(trace_id=trace.id, name="vlm_caption",
                                              model="qwen3") as gen:
                    gen.update(output="ok", completion_start_time=time.time())
                tracker.log_score(trace.id, "vlm_success", 1.0)  # current = the span
            result.update(span=span.id, gen=gen.id)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    tracker.flush()
    assert srv.wait_for(n_spans=3, n_scores=1)
    root = next(s for s in srv.spans if s["name"] == "frame_processing")
    assert {s["trace_id"] for s in srv.spans} == {trace.id}
    span = next(s for s in srv.spans if s["span_id"] == result["span"])
    gen = next(s for s in srv.spans if s["span_id"] == result["gen"])
    assert span["parent_span_id"] == root["span_id"]
    assert gen["parent_span_id"] == span["span_id"]
    assert gen["attributes"]["user.id"] == "cam7"  # trace attributes propagated too
    assert "langfuse.internal.as_root" not in gen["attributes"]
    assert srv.scores[0]["observationId"] == result["span"]


def test_a_late_child_from_another_thread_joins_a_finished_trace_with_its_attributes(lf):
    srv, tracker = lf
    with tracker.create_trace("frame_processing", user_id="cam7", session_id="s", tags=["live"],
                              metadata={"frame_index": 3, "dropped": None}) as trace:
        pass
    result = {}

    def worker() -> None:  # after the trace ended, in a thread that never saw its context
        with tracker.start_generation(trace_id=trace.id, name="late_caption", model="m") as gen:
            result.update(gen=gen.id, parent=gen.parent_id)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    tracker.flush()
    assert srv.wait_for(n_spans=2)
    root = next(s for s in srv.spans if s["name"] == "frame_processing")
    gen = next(s for s in srv.spans if s["span_id"] == result["gen"])
    assert gen["trace_id"] == trace.id
    assert gen["parent_span_id"] == root["span_id"] == result["parent"]
    attrs = gen["attributes"]
    assert attrs["user.id"] == "cam7" and attrs["session.id"] == "s"
    assert attrs["langfuse.trace.name"] == "frame_processing"
    assert attrs["langfuse.trace.tags"] == ["live"]
    assert json.loads(attrs["langfuse.trace.metadata.frame_index"]) == 3
    assert "langfuse.trace.metadata.dropped" not in attrs
    # The trace already has its root: the child is neither a new root nor an app root.
    assert "langfuse.internal.as_root" not in attrs
    assert "langfuse.internal.is_app_root" not in attrs


def test_late_children_from_other_threads_join_their_traces_and_no_trace_is_kept(tmp_path):
    log_path = tmp_path / "traces.jsonl"
    tracker = LangfuseTracker(trace_log=log_path)  # keys unset: ids only, same parenting
    kept = []
    for _ in range(1500):
        with tracker.create_trace("frame_processing") as trace:
            pass
        kept.append(trace)
    parents = {}

    def worker(trace_id: str) -> None:
        with tracker.create_span(trace_id, "late") as span:
            parents[trace_id] = (span.trace_id, span.parent_id)

    for trace in (kept[0], kept[-1]):  # the oldest and the newest, both still held
        thread = threading.Thread(target=worker, args=(trace.id,))
        thread.start()
        thread.join()
    assert parents == {t.id: (t.id, t.observation_id) for t in (kept[0], kept[-1])}
    # The tracker holds no trace itself: once nothing else does, it is gone.
    probe = weakref.ref(kept[0])
    kept.clear()
    gc.collect()
    assert probe() is None
    tracker.close()


def test_counts_lose_nothing_when_threads_race(tmp_path):
    tracker = LangfuseTracker(trace_log=tmp_path / "t.jsonl")
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches as often as CPython allows

    def frames() -> None:
        for _ in range(300):
            with tracker.create_trace("frame_processing") as trace:
                with tracker.create_span(trace.id, "face_recognition"):
                    tracker.log_score(trace.id, "vlm_success", 1.0)

    try:
        threads = [threading.Thread(target=frames) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    stats = tracker.stats()
    assert (stats["traces"], stats["observations"], stats["scores"]) == (2400, 2400, 2400)
    assert stats == tracker.stats()  # reading counts nothing
    report = tracker.close()
    assert report.trace_log_lines == 7200


def test_exit_report_counts_are_exact_with_frames_in_worker_threads(lf):
    srv, tracker = lf

    def frame(index: int) -> None:
        with tracker.create_trace("frame_processing", metadata={"frame_index": index}) as trace:
            for name in ("vlm_caption", "llm_summary"):
                with tracker.create_span(trace.id, name):
                    with tracker.start_generation(trace_id=trace.id, name=name, model="m") as gen:
                        if index % 5 == 0:
                            gen.set_error("model_error")
                tracker.log_score(trace.id, f"{name}_quality", 0.5, observation_id=gen.id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(frame, range(100)))
    stats = tracker.stats()
    assert (stats["traces"], stats["observations"], stats["generations"]) == (100, 400, 200)
    assert (stats["scores"], stats["errors"]) == (200, 40)
    report = tracker.close(deadline_s=10)
    assert report.completed and report.observations == 500 and report.scores == 200
    assert report.observations_delivered == 500 and report.scores_delivered == 200
    assert report.observations_lost == 0 and report.scores_lost == 0


def test_a_new_trace_inside_another_is_a_separate_root(lf):
    srv, tracker = lf
    with tracker.create_trace("outer") as outer:
        with tracker.create_trace("inner") as inner:
            pass
    tracker.flush()
    assert srv.wait_for(n_spans=2)
    assert outer.id != inner.id
    assert all(s["parent_span_id"] is None for s in srv.spans)


def test_log_generation_legacy_keeps_given_times_and_warns_once(lf, caplog):
    srv, tracker = lf
    caplog.set_level(logging.WARNING, logger="video_summarizer.tracker")
    start = time.time() - 2.0
    with tracker.create_trace("frame_processing") as trace:
        for _ in range(2):
            tracker.log_generation(trace.id, "vlm_caption", "qwen3", "prompt", "caption",
                                   start_time=start, completion_start_time=start + 0.25,
                                   end_time=start + 1.0, usage={"input": 1, "output": 2})
    tracker.flush()
    assert srv.wait_for(n_spans=3)
    gens = [s for s in srv.spans if s["name"] == "vlm_caption"]
    root = next(s for s in srv.spans if s["name"] == "frame_processing")
    for gen in gens:
        assert abs(gen["start_ns"] / 1e9 - start) < 1e-5
        assert abs(gen["end_ns"] / 1e9 - (start + 1.0)) < 1e-5
        cst = iso_to_ns(json.loads(gen["attributes"][ATTR + "completion_start_time"]))
        assert (cst - gen["start_ns"]) / 1e6 == pytest.approx(250, abs=0.01)
        assert gen["parent_span_id"] == root["span_id"]
        assert gen["attributes"][ATTR + "type"] == "generation"
    assert sum("deprecated" in r.getMessage() for r in caplog.records) == 1


def test_scores_type_detection_and_rejections(tmp_path, caplog):
    assert normalize_score(True) == (1.0, "BOOLEAN")
    assert normalize_score(False, "boolean") == (0.0, "BOOLEAN")
    assert normalize_score(3) == (3.0, "NUMERIC")
    assert normalize_score(0.75, "NUMERIC") == (0.75, "NUMERIC")
    assert normalize_score(1, "BOOLEAN") == (1.0, "BOOLEAN")
    assert normalize_score("high") == ("high", "CATEGORICAL")
    for value, dtype in ((0.5, "BOOLEAN"), ("high", "NUMERIC"), (0.3, "CATEGORICAL"),
                         (float("nan"), None), (float("inf"), "NUMERIC"), (True, "CATEGORICAL"),
                         (None, None), (1.0, "PERCENT")):
        with pytest.raises(ValueError):
            normalize_score(value, dtype)
    caplog.set_level(logging.DEBUG, logger="video_summarizer.tracker")
    tracker = LangfuseTracker(trace_log=tmp_path / "t.jsonl")
    with tracker.create_trace("frame_processing") as trace:
        tracker.log_score(trace.id, "vlm_success", 1.0)
        with pytest.raises(ValueError, match="BOOLEAN"):
            tracker.log_score(trace.id, "vlm_success", 0.5, data_type="BOOLEAN")
    assert "Score logged: vlm_success=1.0 (type=NUMERIC)" in caplog.text
    tracker.close()
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    score = next(r for r in rows if r["type"] == "score")
    # score_trace=False inside a trace with no span: the current observation is the root.
    assert score["observation_id"] == trace.observation_id and score["target"] == "observation"
    assert sum(r["type"] == "score" for r in rows) == 1  # the rejected one left no line


def test_score_data_types_reach_the_server(lf):
    srv, tracker = lf
    with tracker.create_trace("frame_processing") as trace:
        tracker.log_score(trace.id, "is_person", True, score_trace=True)
        tracker.log_score(trace.id, "quality_level", "high", score_trace=True)
        tracker.log_score(trace.id, "count", 3, comment="three", score_trace=True)
    tracker.flush()
    assert srv.wait_for(n_scores=3)
    got = {s["name"]: (s["value"], s["dataType"]) for s in srv.scores}
    assert got == {"is_person": (1.0, "BOOLEAN"), "quality_level": ("high", "CATEGORICAL"),
                   "count": (3.0, "NUMERIC")}
    assert next(s for s in srv.scores if s["name"] == "count")["comment"] == "three"


def test_secret_never_in_logs_or_repr(caplog):
    caplog.set_level(logging.DEBUG)
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url)
        run_frame(tracker, 0, {})
        report = tracker.close()
    assert report.completed
    assert f"Langfuse tracking enabled: {srv.base_url}" in caplog.text
    assert SECRET not in caplog.text and SECRET not in repr(tracker)
    assert SECRET not in json.dumps(srv.requests)
    assert mask_secret(SECRET) == "sk-lf-****6789"


def test_rejected_keys_are_counted_as_lost():
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(mode="401") as srv:
        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url)
        run_frame(tracker, 0, {})
        report = tracker.close(deadline_s=5)
    assert report.observations == 6 and report.observations_delivered == 0
    assert report.observations_lost == 6 and report.scores_lost == 7
    assert "may be lost" in str(report)


def test_a_second_tracker_with_the_same_key_says_why_it_is_off(tmp_path, caplog):
    # The SDK keeps one client per public key and process, closed or not: a second tracker
    # would trace into the first one's host and queues, or nowhere. It says so instead.
    caplog.set_level(logging.INFO, logger="video_summarizer.tracker")
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        first = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url)
        with first.create_trace("frame_processing"):
            pass
        report = first.close()
        assert report.observations_delivered == 1 and len(srv.spans) == 1
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        second = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url,
                                 trace_log=tmp_path / "t.jsonl")
        assert not second.enabled
        assert "already has a Langfuse client in this process" in second.disabled_reason
        assert mask_secret(key) in second.disabled_reason
        run_frame(second, 0, {})
        assert second.close().trace_log_lines == 13  # the trace log still works
        assert srv.requests == []


def test_env_settings_are_parsed_leniently(monkeypatch):
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "0.5")  # the SDK's int() would crash on this
    monkeypatch.setenv("LANGFUSE_FLUSH_AT", "500")
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", f"pk-lf-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_HOST", "http://127.0.0.1:9/")
    tracker = LangfuseTracker()
    assert tracker.enabled and tracker.timeout_s == 0.5 and tracker.flush_at == 500
    assert tracker.host == "http://127.0.0.1:9"
    monkeypatch.setenv("LANGFUSE_BASE_URL", "http://127.0.0.1:10")
    assert LangfuseTracker(public_key=f"pk-lf-{uuid.uuid4().hex[:8]}").host == "http://127.0.0.1:10"
    assert tracker.close(deadline_s=3).observations == 0


def test_trace_log_times_are_exactly_the_ones_langfuse_receives(tmp_path):
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "t.jsonl"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url,
                                  trace_log=path)
        run_frame(tracker, 0, {})
        assert tracker.flush() and srv.wait_for(n_spans=6)
        tracker.close()
    sent = {s["span_id"]: s for s in srv.spans}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    observations = [r for r in rows if r["type"] != "score"]
    assert len(observations) == 6
    for row in observations:
        span = sent[row["observation_id"] if row["type"] == "trace" else row["id"]]
        assert iso_to_ns(row["start"]) == span["start_ns"] // 1000 * 1000, row["name"]
        assert iso_to_ns(row["end"]) == span["end_ns"] // 1000 * 1000, row["name"]
        assert row["latency_ms"] == (span["end_ns"] - span["start_ns"]) / 1e6


def test_first_token_before_the_generation_start_warns_whatever_its_type(lf, caplog):
    srv, tracker = lf
    caplog.set_level(logging.WARNING, logger="video_summarizer.tracker")
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    with tracker.create_trace("frame_processing") as trace:
        with tracker.start_generation(trace.id, "on_time", "m") as gen:
            gen.update(completion_start_time=time.time())
            gen.update(completion_start_time=datetime.now(timezone.utc))
        with tracker.start_generation(trace.id, "float_before", "m") as gen:
            gen.update(completion_start_time=gen.start_ns / 1e9 - 0.5)
        with tracker.start_generation(trace.id, "datetime_1us_before", "m") as gen:
            gen.update(completion_start_time=epoch + timedelta(
                microseconds=gen.start_ns // 1000 - 1))
        with tracker.start_generation(trace.id, "datetime_same_us", "m") as gen:
            gen.update(completion_start_time=epoch + timedelta(
                microseconds=gen.start_ns // 1000))
    assert tracker.stats()["warnings"]["negative-ttft"] == 2
    assert sum("before the generation started" in r.getMessage() for r in caplog.records) == 1


def test_a_trace_that_fails_to_open_leaves_nothing_open(lf, monkeypatch):
    srv, tracker = lf
    import langfuse

    def broken(**kwargs):  # the SDK failing after the root span opened
        raise RuntimeError("propagation failed")

    with monkeypatch.context() as patch:
        patch.setattr(langfuse, "propagate_attributes", broken)
        with pytest.raises(RuntimeError, match="propagation failed"):
            with tracker.create_trace("broken"):
                pass
    with tracker.create_trace("frame_processing") as trace:
        with tracker.create_span(trace.id, "face_recognition") as span:
            with pytest.raises(RuntimeError, match="entered twice"):
                span.__enter__()
    tracker.flush()
    assert srv.wait_for(n_spans=3)
    by_name = {s["name"]: s for s in srv.spans}
    assert by_name["broken"]["end_ns"] > by_name["broken"]["start_ns"]  # ended, not leaked
    assert by_name["frame_processing"]["parent_span_id"] is None  # not a child of "broken"
    assert by_name["face_recognition"]["trace_id"] == trace.id
    assert tracker.stats()["traces"] == 1 and tracker.stats()["observations"] == 1


def test_to_utc_accepts_epoch_aware_and_naive_local():
    t = 1_700_000_000.123456
    expected = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
    assert to_utc(t) == expected
    assert to_utc(datetime.fromtimestamp(t)) == expected  # naive = local wall clock
    assert to_utc(expected) == expected
    with pytest.raises(TypeError):
        to_utc("2023-11-14")
    with pytest.raises(ValueError):
        to_utc(float("nan"))


# -- subprocess checks: time zones and exit deadline --------------------------------------------
TZ_CHILD = textwrap.dedent("""
    import json, sys, time
    from datetime import datetime, timedelta, timezone
    from langfuse_tracker import LangfuseTracker
    from tests.fake_langfuse import FakeLangfuseServer
    assert time.localtime().tm_gmtoff != 0, "TZ did not take effect"
    out = {}
    with FakeLangfuseServer(public_key="pk-lf-tz", secret_key="sk-lf-tz-secret-123") as srv:
        tr = LangfuseTracker(public_key="pk-lf-tz", secret_key="sk-lf-tz-secret-123",
                             base_url=srv.base_url)
        with tr.create_trace("frame_processing") as trace:
            for kind in ("float", "naive", "aware"):
                with tr.start_generation(trace_id=trace.id, name=kind, model="m") as gen:
                    time.sleep(0.02)
                    first = time.time()
                    value = {"float": first, "naive": datetime.fromtimestamp(first),
                             "aware": datetime.fromtimestamp(first).astimezone()}[kind]
                    if kind == "naive":
                        tr.client.update_current_generation(completion_start_time=value)
                    else:
                        gen.update(completion_start_time=value)
                    time.sleep(0.01)
                out[kind] = {"first": first}
        tr.flush()
        assert srv.wait_for(n_spans=4)
        for span in srv.spans:
            if span["name"] in out:
                cst = json.loads(span["attributes"]["langfuse.observation.completion_start_time"])
                dt = datetime.fromisoformat(cst.replace("Z", "+00:00"))
                if dt.tzinfo is None:  # the server reads an offset-less time as UTC
                    dt = dt.replace(tzinfo=timezone.utc)
                cst_s = dt.timestamp()
                out[span["name"]].update(start=span["start_ns"] / 1e9, end=span["end_ns"] / 1e9,
                                         cst=cst_s)
        tr.close()
    print(json.dumps({"offset": time.localtime().tm_gmtoff, "gens": out}))
""")


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "America/New_York"])
def test_ttft_is_right_in_any_time_zone(tz):
    env = {**{k: v for k, v in os.environ.items() if k not in KEY_ENV}, "TZ": tz,
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", TZ_CHILD], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["offset"] != 0
    assert set(result["gens"]) == {"float", "naive", "aware"}
    for kind, g in result["gens"].items():
        assert g["start"] < g["cst"] < g["end"], kind
        assert abs(g["cst"] - g["first"]) <= 0.001, kind
        assert 0.015 < g["cst"] - g["start"] < 1.0, kind  # TTFT ~20 ms, not hours


EXIT_CHILD = textwrap.dedent("""
    import sys, time
    from langfuse_tracker import LangfuseTracker
    base_url, deadline = sys.argv[1], float(sys.argv[2])
    tr = LangfuseTracker(public_key="pk-lf-exit", secret_key="sk-lf-exit-secret-1",
                         base_url=base_url, timeout_s=3)
    for i in range(200):
        with tr.create_trace("frame_processing", metadata={"frame_index": i}) as trace:
            for name in ("face_recognition", "vlm_caption", "llm_summary"):
                with tr.create_span(trace.id, name):
                    if name != "face_recognition":
                        with tr.start_generation(trace_id=trace.id, name=name, model="m") as g:
                            g.update(output="x", completion_start_time=time.time())
            for s in ("vlm_success", "vlm_latency_score", "vlm_quality", "llm_success",
                      "llm_processing_score", "llm_quality"):
                tr.log_score(trace.id, s, 1.0)
            tr.log_score(trace.id, "overall_quality", 1.0, score_trace=True)
    print("CLOSING", flush=True)
    report = tr.close(deadline_s=deadline)
    print("REPORT", report.completed, report.observations, report.observations_lost,
          report.scores, report.scores_lost, flush=True)
""")


@pytest.mark.faults
@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_exit_within_deadline_when_host_is_down(mode):
    deadline = 2.0
    env = {**{k: v for k, v in os.environ.items() if k not in KEY_ENV},
           "PYTHONPATH": str(REPO_ROOT)}
    with FakeLangfuseServer(mode=mode) as srv:
        proc = subprocess.Popen([sys.executable, "-c", EXIT_CHILD, srv.base_url, str(deadline)],
                                cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            line = proc.stdout.readline()
            closing = time.monotonic()
            assert line.strip() == "CLOSING", proc.stderr.read()[-2000:]
            out, err = proc.communicate(timeout=deadline + 30)
            exited = time.monotonic() - closing
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert exited <= deadline + 1.0, f"exit took {exited:.2f} s"
    report = out.split()
    assert report[:2] == ["REPORT", "False"]
    observations, lost, scores, scores_lost = map(int, report[2:6])
    assert observations == 1200 and scores == 1400
    assert lost > 0 and scores_lost > 0
    assert "sk-lf-exit-secret-1" not in err


# -- setup_langfuse.sh ----------------------------------------------------------------------------
SHELL_SECRET = "sk-lf-shell-secret-9876"


def _source_setup(script_dir: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = ("source ./setup_langfuse.sh; echo \"rc=$?\"; "
           "echo \"pk=$LANGFUSE_PUBLIC_KEY base=$LANGFUSE_BASE_URL\"; echo alive")
    return subprocess.run(["bash", "-c", cmd], cwd=script_dir, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30,
                          env={"PATH": os.environ["PATH"], "HOME": str(script_dir), **env})


@pytest.mark.parametrize("mode, rc, verdict", [("ok", 0, "auth check OK"),
                                               ("401", 1, "rejected the keys (HTTP 401)"),
                                               ("refuse", 1, "is unreachable")])
def test_setup_script_checks_keys_from_env_without_showing_the_secret(mode, rc, verdict):
    with FakeLangfuseServer(mode=mode, public_key="pk-lf-shell-1234",
                            secret_key=SHELL_SECRET) as srv:
        proc = _source_setup(REPO_ROOT, {"LANGFUSE_PUBLIC_KEY": "pk-lf-shell-1234",
                                         "LANGFUSE_SECRET_KEY": SHELL_SECRET,
                                         "LANGFUSE_HOST": srv.base_url + "/"})
    out = proc.stdout + proc.stderr
    assert verdict in out and f"rc={rc}" in proc.stdout
    assert "alive" in proc.stdout  # sourced: it returned, the shell went on
    assert f"base={srv.base_url}\n" in proc.stdout  # exported, trailing slash dropped
    assert SHELL_SECRET not in out and "sk-lf-****9876" in out


def test_setup_script_reads_a_dotenv_and_holds_no_key(tmp_path):
    script = (REPO_ROOT / "setup_langfuse.sh").read_text()
    assert "sk-lf-" not in script.replace("sk-lf-*", "").replace("sk-lf-...", "")
    (tmp_path / "setup_langfuse.sh").write_text(script)
    with FakeLangfuseServer(public_key="pk-lf-dotenv-5678", secret_key=SHELL_SECRET) as srv:
        (tmp_path / ".env").write_text(
            f"# local keys\nexport LANGFUSE_PUBLIC_KEY=pk-lf-dotenv-5678\n"
            f"LANGFUSE_SECRET_KEY=\"{SHELL_SECRET}\"\nLANGFUSE_BASE_URL={srv.base_url}\n"
            "OTHER=$(touch pwned)\n")
        proc = _source_setup(tmp_path, {})
    assert "rc=0" in proc.stdout and "pk=pk-lf-dotenv-5678" in proc.stdout
    assert f"Langfuse keys from {tmp_path}/.env" in proc.stdout
    assert not (tmp_path / "pwned").exists()  # parsed, never executed
    assert SHELL_SECRET not in proc.stdout + proc.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "setup_langfuse.sh").write_text(script)
    no_keys = _source_setup(bare, {})  # no env, no .env, no terminal to prompt on
    assert "rc=1" in no_keys.stdout and "alive" in no_keys.stdout
    assert "no keys in the environment" in no_keys.stderr
