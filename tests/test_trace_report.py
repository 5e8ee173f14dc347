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
from video_summarizer.errors import InputError
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


# Two runs appended to one log, as the CLI does: run A (sources cam0 and nvr-cam1, killed while
# writing a score of a trace whose line never came) and run B (cam0), whose first line was
# appended right after A's cut one.
TWO_RUNS = Path(__file__).parent / "fixtures" / "trace_log_two_runs.jsonl"
RUN_A, RUN_B = "20261201T091200Z-abc123", "20261201T101500Z-def456"


def test_whole_log_of_two_runs_counts_both_and_the_cut_line_once():
    report = compute_report(TWO_RUNS)
    assert report["schema_version"] == 1
    assert report["selection"] == {"session": None, "last_run": False, "run_id": None,
                                   "sessions": []}
    # b1's trace line survives although it shares a line with A's cut score.
    assert report["counts"] == {"traces": 6, "spans": 2, "generations": 8, "scores": 12,
                                "bad_lines": 1}
    assert report["latency_max_ms_by_user"] == pytest.approx(
        {"cam0": 2000.0, "nvr-cam1": 2000.0})


def test_last_run_reports_only_the_newest_run_with_its_observations_and_scores():
    report = compute_report(TWO_RUNS, last_run=True)
    assert report["selection"] == {"session": None, "last_run": True, "run_id": RUN_B,
                                   "sessions": [f"{RUN_B}-cam0"]}
    assert report["counts"] == {"traces": 3, "spans": 0, "generations": 4, "scores": 7,
                                "bad_lines": 1}
    # vlm_caption TTFTs 100, 400 (b2 never had a first token); llm_summary 200.
    assert report["ttft_avg_ms_by_name"] == pytest.approx({"vlm_caption": 250.0,
                                                           "llm_summary": 200.0})
    assert report["ttft_p95_ms_by_model"] == pytest.approx({"qwen3": 385.0, "mistral": 200.0})
    # qwen3 latencies 400, 600, 1000: position 1.9 -> 600 + 0.9 * 400.
    assert report["latency_p95_ms_by_model"] == pytest.approx({"qwen3": 960.0,
                                                               "mistral": 1000.0})
    assert report["latency_max_ms_by_user"] == pytest.approx({"cam0": 2000.0})
    assert report["scores"]["vlm_success"]["count"] == 3
    assert report["scores"]["vlm_success"]["mean"] == pytest.approx(2 / 3)
    assert report["scores"]["overall_quality"]["mean"] == pytest.approx(1.9 / 3)
    assert report["scores"]["llm_success"] == {"count": 1, "mean": 1.0}
    assert report["errors"] == {"total": 1, "by_name": {"vlm_caption": 1}}


def test_session_prefix_selects_a_run_or_one_source_of_it():
    run_a = compute_report(TWO_RUNS, session=RUN_A)
    assert run_a["selection"]["sessions"] == [f"{RUN_A}-cam0", f"{RUN_A}-nvr-cam1"]
    # a4's generation has no trace line (A was killed), so it belongs to no session.
    assert run_a["counts"] == {"traces": 3, "spans": 2, "generations": 3, "scores": 5,
                               "bad_lines": 1}
    assert run_a["ttft_avg_ms_by_name"] == pytest.approx({"vlm_caption": 1000 / 3})
    assert run_a["latency_p95_ms_by_model"] == pytest.approx({"qwen3": 1900.0})
    assert run_a["latency_max_ms_by_user"] == pytest.approx({"cam0": 1500.0, "nvr-cam1": 2000.0})
    assert run_a["errors"]["total"] == 0
    cam0 = compute_report(TWO_RUNS, session=f"{RUN_A}-cam0")
    assert cam0["counts"] == {"traces": 2, "spans": 2, "generations": 2, "scores": 4,
                              "bad_lines": 1}
    assert cam0["scores"]["overall_quality"]["mean"] == pytest.approx(0.7)
    nvr = compute_report(TWO_RUNS, session=f"{RUN_A}-nvr-cam1")
    assert nvr["counts"]["traces"] == 1 and nvr["counts"]["generations"] == 1
    assert nvr["scores"] == {"vlm_success": {"count": 1, "mean": 0.0}}
    # a prefix shared by both runs: both, less a4's orphan generation
    both = compute_report(TWO_RUNS, session="20261201T")
    assert both["counts"] == {"traces": 6, "spans": 2, "generations": 7, "scores": 12,
                              "bad_lines": 1}
    # --session narrows first, --last-run then takes the newest run among what is left
    newest_nvr = compute_report(TWO_RUNS, session=f"{RUN_A}-nvr", last_run=True)
    assert newest_nvr["selection"]["run_id"] == RUN_A
    assert newest_nvr["counts"]["traces"] == 1
    assert compute_report(TWO_RUNS, session="20261201T", last_run=True)["selection"]["run_id"] == RUN_B


def test_newest_run_is_the_one_that_started_last_not_the_one_written_last(tmp_path):
    # Two processes sharing one log: the older run's last trace is written after the newer's.
    def trace(tid: str, session: str, start: str, end: str) -> str:
        return json.dumps({"type": "trace", "trace_id": tid, "name": "frame_processing",
                           "start": start, "end": end, "user_id": "cam0", "session_id": session})
    log = tmp_path / "shared.jsonl"
    log.write_text("\n".join([
        trace("1" * 32, "20261201T080000Z-aaaaaa-cam0", "2026-12-01T08:00:01Z", "2026-12-01T08:00:02Z"),
        trace("2" * 32, "20261201T080500Z-bbbbbb-cam1", "2026-12-01T08:05:01Z", "2026-12-01T08:05:02Z"),
        trace("3" * 32, "20261201T080000Z-aaaaaa-cam0", "2026-12-01T08:09:00Z", "2026-12-01T08:09:01Z"),
    ]) + "\n")
    report = compute_report(log, last_run=True)
    assert report["selection"]["run_id"] == "20261201T080500Z-bbbbbb"
    assert report["counts"]["traces"] == 1
    # Session ids of another shape are each their own run (the fixture's "run-1").
    assert compute_report(FIXTURE, last_run=True)["selection"]["run_id"] == "run-1"


def test_cli_session_and_last_run(tmp_path):
    runner = CliRunner()
    last = runner.invoke(main, [str(TWO_RUNS), "--last-run"])
    assert last.exit_code == 0, last.output
    assert last.output.splitlines()[0] == (
        f"Trace log {TWO_RUNS}, run {RUN_B} (sessions {RUN_B}-cam0): 3 traces, 0 spans, "
        "4 generations, 7 scores; 1 unreadable line skipped (not UTF-8, not JSON or cut short)")
    as_json = json.loads(runner.invoke(main, [str(TWO_RUNS), "--session", RUN_A, "--json"]).output)
    assert as_json["schema_version"] == 1 and as_json["counts"]["traces"] == 3
    assert as_json["selection"]["session"] == RUN_A
    missing = runner.invoke(main, [str(TWO_RUNS), "--session", "20250101"])
    assert missing.exit_code == 2
    assert missing.output.strip() == (
        f"Error: --session: no trace in {TWO_RUNS} has a session id starting with '20250101' "
        f"(sessions there: {RUN_A}-cam0, {RUN_A}-nvr-cam1, {RUN_B}-cam0)")
    assert runner.invoke(main, [str(TWO_RUNS), "--session", " "]).exit_code == 2
    no_sessions = tmp_path / "nosession.jsonl"
    no_sessions.write_text(json.dumps({"type": "trace", "trace_id": "f" * 32, "name": "t",
                                       "start": "2026-12-01T08:00:01Z",
                                       "end": "2026-12-01T08:00:02Z"}) + "\n")
    none = runner.invoke(main, [str(no_sessions), "--last-run"])
    assert none.exit_code == 2 and none.output.startswith("Error: --last-run: no trace in")
    helped = runner.invoke(main, ["--help"])
    assert helped.exit_code == 0
    for words in ("--session ID", "--last-run", "<run_id>-<source label>", "schema_version"):
        assert words in " ".join(helped.output.split()), words


def test_non_utf8_and_cut_lines_are_skipped_and_counted_once(tmp_path):
    good = (FIXTURE.read_bytes().splitlines(keepends=True))
    log = tmp_path / "mixed.jsonl"
    # a Latin-1 caption in metadata, and a line cut short by a kill at the end of the file
    latin1 = '{"type": "span", "trace_id": "x", "name": "caf\u00e9"}\n'.encode("latin-1")
    log.write_bytes(b"".join(good[:8]) + latin1 + b"".join(good[8:]) + good[0][:40])
    report = compute_report(log)
    assert report["counts"] == {"traces": 4, "spans": 2, "generations": 5, "scores": 11,
                                "bad_lines": 3}
    assert report["ttft_p95_ms_by_model"] == compute_report(FIXTURE)["ttft_p95_ms_by_model"]
    out = CliRunner().invoke(main, [str(log)])
    assert out.exit_code == 0, out.output
    assert "3 unreadable lines skipped" in out.output.splitlines()[0]
    assert out.output.count("unreadable") == 1


@pytest.mark.parametrize("content, lines", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff\xe0", 3),  # binary, not UTF-8
    ("caf\u00e9 au lait\nplain text\n".encode("latin-1"), 2),  # text of another encoding
    (b'{"a": 1}\n[1, 2]\n\n{"type": "log", "msg": "x"}\n', 3),  # JSON, no trace records
])
def test_a_file_that_is_not_a_trace_log_is_one_line_and_exit_2(tmp_path, content, lines):
    path = tmp_path / "not_traces.jsonl"
    path.write_bytes(content)
    result = CliRunner().invoke(main, [str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        f"Error: PATH: {path} is not a trace log: none of its {lines} lines is a trace, span, "
        "generation or score record (written with --trace-log PATH)"]


def test_empty_log_is_an_empty_report_and_paths_are_read_oldest_first(tmp_path):
    empty = tmp_path / "traces.jsonl"
    empty.write_bytes(b"")
    report = compute_report(empty)
    assert report["counts"] == {"traces": 0, "spans": 0, "generations": 0, "scores": 0,
                                "bad_lines": 0}
    # The reader takes several files (rotated logs later): figures over all of them.
    both = compute_report([FIXTURE, TWO_RUNS])
    assert both["files"] == [str(FIXTURE), str(TWO_RUNS)] and both["file"] == str(TWO_RUNS)
    assert both["counts"] == {"traces": 10, "spans": 4, "generations": 13, "scores": 23,
                              "bad_lines": 2}
    assert compute_report([FIXTURE, TWO_RUNS], last_run=True)["counts"]["traces"] == 3
    with pytest.raises(InputError, match="trace log not found"):
        compute_report([FIXTURE, tmp_path / "traces.jsonl.1"])
