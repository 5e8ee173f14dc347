"""--index, --search and --ask through the CLI, as a user runs them: a generated clip captioned by
the local OpenAI-compatible server (a caption with known words per frame), a real LanceDB folder,
a tiny random BERT loaded by sentence-transformers, answers from the same kind of server, and the
traces received by the local Langfuse stand-in."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import CLI, REPO, TEST_SECRET_KEY, cli_env, read_events, run_cli, sent_image
from tests.clip_server import ClipServer
from tests.clips import read_number
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from tests.tiny_models import build_tiny_bert

pytestmark = pytest.mark.slow

WORDS = ["An empty stage before the talk.", "A man at a podium speaks to the crowd.",
         "A red car drives past the window.", "A dog sleeps on the sofa.", "Snow falls on an empty parking lot."]
SUMMARY = "A talk at a podium, then a car and a dog [00:01]."


def caption_reply(body: dict) -> str:
    """Frame n of a numbered clip gets WORDS[n // 10]; the summary model's request gets SUMMARY."""
    image = sent_image(body)
    if image is None:
        return SUMMARY
    n = read_number(image)
    return f"Frame {n}: {WORDS[n // 10 % len(WORDS)]}"


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _run_args(srv: FakeOpenAIServer, source: str, tmp: Path, bert: Path, *more: str) -> list[str]:
    return [sys.executable, CLI, "--source", source, "--vlm-base-url", srv.base_url, "--vlm-model", "qwen3",
            "--llm-base-url", srv.base_url, "--llm-model", "qwen3", "--no-faces", "--interval", "1",
            "--min-change", "0", "--summary-interval", "2", "--index", str(tmp / "idx"),
            "--embed-model", str(bert), "--trace-log", str(tmp / "trace.jsonl"), *more]


def _rows(index: Path) -> list[dict]:
    from video_summarizer.search.index import open_table

    return open_table(str(index)).search().limit(1000).to_list()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, clips, bert):
    """One run over a 5 s numbered clip, one caption a second: frames 0, 10, 20, 30, 40."""
    tmp = tmp_path_factory.mktemp("indexed")
    source = tmp / "talk.avi"
    shutil.copy(clips.numbered(seconds=5.0).path, source)
    with FakeOpenAIServer(reply_fn=caption_reply) as srv:
        run = run_cli(_run_args(srv, str(source), tmp, bert, "--events", str(tmp / "events.jsonl")), cli_env(tmp))
    assert run.returncode == 0, run.stderr
    return {"tmp": tmp, "source": source, "events": read_events(tmp / "events.jsonl"), "run": run}


def test_a_run_indexes_every_caption_and_summary(indexed):
    captions = [e for e in indexed["events"] if e["type"] == "caption"]
    summaries = [e for e in indexed["events"] if e["type"] == "summary"]
    # Caption events come as captions complete: two frames in flight can finish out of order.
    assert sorted(c["frame"] for c in captions) == [0, 10, 20, 30, 40] and summaries
    rows = _rows(indexed["tmp"] / "idx")
    assert len(rows) == len(captions) + len(summaries)
    by_trace = {(r["kind"], r["trace_id"]): r for r in rows}
    for c in captions:
        row = by_trace[("caption", c["trace_id"])]
        assert (row["source"], row["frame"], row["time_s"], row["text"]) == ("talk", c["frame"], c["video_time"],
                                                                            c["caption"])
    assert {r["text"] for r in rows if r["kind"] == "summary"} == {s["text"] for s in summaries}
    assert f"Index: {len(captions)} captions and {len(summaries)} summaries written" in indexed["run"].stderr
    assert "WARN" not in indexed["run"].stderr  # lance's own logger stays quiet


def test_search_prints_the_best_moment_first_with_its_trace(indexed, bert):
    tmp = indexed["tmp"]
    podium = next(e for e in indexed["events"] if e["type"] == "caption" and e["frame"] == 10)
    run = run_cli([sys.executable, CLI, "search", "podium", "--index", str(tmp / "idx"), "--embed-model", str(bert),
                   "--limit", "3"], cli_env(tmp))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    # a caption covers its clip: the line gives the clip's span (from the frame after the last caption)
    assert podium["span"]["start"] < podium["video_time"] == 1.0
    assert lines[0].startswith("1. talk [00:00-00:01] Frame 10: A man at a podium speaks to the crowd.  | faces: - "
                               "| score ")
    assert lines[0].endswith(f"| trace {podium['trace_id']}")


def test_a_rerun_over_the_same_file_adds_nothing(indexed, bert):
    tmp = indexed["tmp"]
    before = {r["id"] for r in _rows(tmp / "idx")}
    with FakeOpenAIServer(reply_fn=caption_reply) as srv:
        run = run_cli(_run_args(srv, str(indexed["source"]), tmp, bert, "--events", str(tmp / "again.jsonl")),
                      cli_env(tmp))
    assert run.returncode == 0, run.stderr
    rows = _rows(tmp / "idx")
    assert {r["id"] for r in rows} == before and len(rows) == len(before)
    again = {e["trace_id"] for e in read_events(tmp / "again.jsonl") if e["type"] == "caption"}
    assert {r["trace_id"] for r in rows if r["kind"] == "caption"} == again  # the newest traces


def test_ask_answers_with_checked_citations_traced_as_one_question(indexed, bert):
    tmp = indexed["tmp"]
    answer = "A man speaks at a podium [talk 00:01]. Then he leaves the stage [talk 09:59]."
    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply=answer, models=("mistral",), first_chunk_delay=0.05) as llm:
        run = run_cli([sys.executable, CLI, "ask", "Who is at the podium?", "--index", str(tmp / "idx"),
                       "--embed-model", str(bert), "--limit", "3", "--llm-base-url", llm.base_url,
                       "--llm-model", "mistral", "--json"], cli_env(tmp, langfuse_url=lf.base_url))
        assert run.returncode == 0, run.stderr
        assert lf.wait_for(n_spans=3, n_scores=1, timeout=10)
        request = llm.requests[-1]
        spans, scores = list(lf.spans), list(lf.scores)
    out = json.loads(run.stdout)
    assert out["answer"] == "A man speaks at a podium [talk 00:01]. Then he leaves the stage."
    assert (out["grounding"], out["citations_dropped"]) == (0.5, 1)
    assert out["sentences"][1]["dropped_citations"] == ["talk 09:59"]
    podium = next(r for r in _rows(tmp / "idx") if r["kind"] == "caption" and r["frame"] == 10)  # the newest run's
    assert [c["trace_id"] for c in out["sentences"][0]["cites"]] == [podium["trace_id"]]
    prompt = " ".join(m["content"] for m in request["messages"])
    assert '1. [talk 00:01] caption: "Frame 10: A man at a podium speaks to the crowd."' in prompt
    root = next(s for s in spans if s["name"] == "video_question")
    assert root["parent_span_id"] is None and out["trace_id"] == root["trace_id"]
    retrieval = next(s for s in spans if s["name"] == "retrieval")
    assert podium["trace_id"] in json.dumps(retrieval["attributes"])
    gen = next(s for s in spans if s["name"] == "llm_answer")
    assert gen["trace_id"] == root["trace_id"] and gen["attributes"]["langfuse.observation.type"] == "generation"
    from datetime import datetime

    raw = gen["attributes"]["langfuse.observation.completion_start_time"]
    first_token = datetime.fromisoformat(json.loads(raw).replace("Z", "+00:00")).timestamp()
    assert gen["start_ns"] / 1e9 + 0.04 < first_token < gen["end_ns"] / 1e9  # opened before the call
    grounding = [s for s in scores if s["name"] == "llm_grounding"]
    assert [g["value"] for g in grounding] == [0.5] and grounding[0]["observationId"] == gen["span_id"]


def test_bad_index_and_embedding_model_are_one_line_exit_2(tmp_path, clips, bert):
    env = cli_env(tmp_path)
    missing = run_cli([sys.executable, CLI, "search", "podium", "--index", str(tmp_path / "none"),
                       "--embed-model", str(bert)], env)
    assert missing.returncode == 2 and missing.stderr_lines() == [
        f"Error: --index: no index at {tmp_path / 'none'} (make one with --source ... --index {tmp_path / 'none'})"]
    bad_model = run_cli([sys.executable, CLI, "--source", str(clips.numbered().path), "--vlm-base-url",
                         "http://127.0.0.1:9/v1", "--index", str(tmp_path / "idx"),
                         "--embed-model", str(tmp_path / "no-model")], env)
    assert bad_model.returncode == 2 and len(bad_model.stderr_lines()) == 1, bad_model.stderr
    assert bad_model.stderr.startswith("Error: --embed-model: The embedding model folder"), bad_model.stderr


def test_without_index_nothing_of_it_is_imported():
    code = ("import sys, real_time_summarizer, video_summarizer.runner, video_summarizer.pipeline; "
            "print(sorted(m for m in ('lancedb', 'pyarrow', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_search_finds_a_live_runs_moments_while_it_runs(tmp_path, clips, bert):
    from video_summarizer.search.index import find
    from video_summarizer.options import IndexOptions, QueryOptions

    clip = clips.pipe_stream(container="mkv", seconds=2.0).path.read_bytes()
    with ClipServer(clip, good=10_000) as server, FakeOpenAIServer(reply_fn=caption_reply) as srv:
        args = _run_args(srv, server.url, tmp_path, bert, "--reconnect-attempts", "-1", "--interval", "0.2",
                         "--events", str(tmp_path / "events.jsonl"))
        proc = subprocess.Popen(args, env=cli_env(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            hits, deadline = [], time.monotonic() + 90
            index, query = IndexOptions(index=str(tmp_path / "idx"), embed_model=str(bert)), QueryOptions("podium", limit=5)
            while not hits and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(1.0)
                try:
                    hits = find(index, query, "search")
                except Exception:  # noqa: BLE001 - no table or no row yet
                    hits = []
            running = proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
    assert running and hits, err
    assert all(h.live and h.source == "127.0.0.1-live" for h in hits)
    assert hits[0].time_s > 1e9  # wall-clock time, epoch seconds
    traces = {e["trace_id"] for e in read_events(tmp_path / "events.jsonl") if e["type"] in ("caption", "summary")}
    assert {h.trace_id for h in hits} <= traces
