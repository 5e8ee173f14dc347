"""trace_report.py: hand-computed figures on a small fixture, and agreement with what the
Langfuse server would compute from the spans the SDK actually sent."""
from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from langfuse_tracker import LangfuseTracker
from tests.fake_langfuse import FakeLangfuseServer
from trace_report import compute_report, main
from video_summarizer.stats import percentile

FIXTURE = Path(__file__).parent / "fixtures" / "trace_log_small.jsonl"


def test_figures_on_the_fixture_match_hand_computed_values():
    report = compute_report(FIXTURE)
    assert report["counts"] == {"traces": 4, "spans": 2, "generations": 5, "scores": 11,
                                "bad_lines": 1}
    # vlm_caption TTFTs 300, 500, 200 ms; llm_summary 100 ms (the failed one has none).
    assert report["ttft_avg_ms_by_name"] == pytest.approx({"vlm_caption": 1000 / 3,
                                                           "llm_summary": 100.0})
    # qwen3 TTFTs sorted 200, 300, 500: position 1.9 -> 300 + 0.9 * 200.
    assert report["ttft_p95_ms_by_model"] == pytest.approx(
        {"qwen3": 480.0, "mistralai/Mistral-7B-Instruct-v0.3": 100.0})
    # qwen3 latencies 800, 1000, 2500 -> 1000 + 0.9 * 1500; mistral 100, 500 -> 100 + 0.95 * 400.
    assert report["latency_p95_ms_by_model"] == pytest.approx(
        {"qwen3": 2350.0, "mistralai/Mistral-7B-Instruct-v0.3": 480.0})
    # cam1's trace ends at 3.0 s but a span in it runs to 3.5 s: Langfuse counts the latter.
    assert report["latency_max_ms_by_user"] == pytest.approx(
        {"cam0": 2000.0, "cam1": 3500.0, "(none)": 250.0})
    assert report["scores"]["vlm_success"] == {"count": 3, "mean": 1.0}
    assert report["scores"]["llm_success"] == {"count": 2, "mean": 0.5}
    assert report["scores"]["overall_quality"]["count"] == 3
    assert report["scores"]["overall_quality"]["mean"] == pytest.approx(0.7)
    assert report["scores"]["quality_level"] == {"count": 3, "mean": None,
                                                 "values": {"high": 2, "low": 1}}
    assert report["errors"] == {"total": 1, "by_name": {"llm_summary": 1}}


def test_cli_prints_tables_and_json():
    runner = CliRunner()
    text = runner.invoke(main, [str(FIXTURE)])
    assert text.exit_code == 0, text.output
    assert "P95 time to first token by model" in text.output
    assert "qwen3" in text.output and "480.0" in text.output and "2350.0" in text.output
    assert "high=2, low=1" in text.output
    as_json = runner.invoke(main, [str(FIXTURE), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["latency_max_ms_by_user"]["cam1"] == pytest.approx(3500.0)
    missing = runner.invoke(main, ["/nonexistent/trace.jsonl"])
    assert missing.exit_code == 2 and "trace log not found" in missing.output


def test_report_agrees_with_what_langfuse_computes_from_the_sent_spans(tmp_path):
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "trace.jsonl"
    with FakeLangfuseServer(public_key=key, secret_key="sk-lf-report-secret") as srv:
        tracker = LangfuseTracker(public_key=key, secret_key="sk-lf-report-secret",
                                  base_url=srv.base_url, trace_log=path)
        for i, user in enumerate(["cam0", "cam1", "cam0"]):
            with tracker.create_trace("frame_processing", user_id=user) as trace:
                for name, model, delay in (("vlm_caption", "qwen3", 0.01 * (i + 1)),
                                           ("llm_summary", "mistral", 0.005)):
                    with tracker.start_generation(trace_id=trace.id, name=name, model=model) as g:
                        time.sleep(delay)
                        g.update(output="x", completion_start_time=time.time())
                        time.sleep(0.003)
                tracker.log_score(trace.id, "overall_quality", 0.5 + i / 10, score_trace=True)
        tracker.flush()
        assert srv.wait_for(n_spans=9, n_scores=3)
        spans = list(srv.spans)
        tracker.close()
    # The server's view: TTFT = completion_start_time - start, latency = end - start.
    ttft_name, ttft_model, lat_model = defaultdict(list), defaultdict(list), defaultdict(list)
    trace_span: dict[str, list] = {}
    user_of = {}
    for s in spans:
        a = s["attributes"]
        lo_hi = trace_span.setdefault(s["trace_id"], [s["start_ns"], s["end_ns"]])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], s["start_ns"]), max(lo_hi[1], s["end_ns"])
        if s["parent_span_id"] is None:
            user_of[s["trace_id"]] = a["user.id"]
        if a.get("langfuse.observation.type") == "generation":
            cst = datetime.fromisoformat(
                json.loads(a["langfuse.observation.completion_start_time"]).replace("Z", "+00:00"))
            ttft = cst.timestamp() * 1000 - s["start_ns"] / 1e6
            ttft_name[s["name"]].append(ttft)
            ttft_model[a["langfuse.observation.model.name"]].append(ttft)
            lat_model[a["langfuse.observation.model.name"]].append((s["end_ns"] - s["start_ns"]) / 1e6)
    max_by_user: dict[str, float] = {}
    for trace_id, (lo, hi) in trace_span.items():
        user = user_of[trace_id]
        max_by_user[user] = max(max_by_user.get(user, 0), (hi - lo) / 1e6)

    report = compute_report(path)
    tol = 0.01  # ms: the log keeps microseconds, the wire nanoseconds
    assert report["ttft_avg_ms_by_name"] == pytest.approx(
        {k: sum(v) / len(v) for k, v in ttft_name.items()}, abs=tol)
    assert report["ttft_p95_ms_by_model"] == pytest.approx(
        {k: percentile(v, 95) for k, v in ttft_model.items()}, abs=tol)
    assert report["latency_p95_ms_by_model"] == pytest.approx(
        {k: percentile(v, 95) for k, v in lat_model.items()}, abs=tol)
    assert report["latency_max_ms_by_user"] == pytest.approx(max_by_user, abs=tol)
    assert set(max_by_user) == {"cam0", "cam1"}
    assert report["ttft_avg_ms_by_name"]["vlm_caption"] > 15  # the sleeps are visible
    assert report["scores"]["overall_quality"] == {"count": 3,
                                                   "mean": pytest.approx(0.6)}
