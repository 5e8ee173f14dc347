"""The Langfuse outbox: nothing lost and nothing twice across an outage, a kill and a restart.

Against the fake Langfuse receiver (tests/fake_langfuse.py) switched between 503 and 200,
with the real SDK (5 in .venv, 4 in .venv-sdk4) and the real CLI. "Kept" is what Langfuse
keeps: one observation per span id, one score per score id (``kept_*_ids``); ``*_receipts``
count every arrival by id, so "received once" is checked too where nothing can land twice.
"""
from __future__ import annotations

import gzip
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langfuse_tracker import LangfuseTracker
from tests.cli_runner import (
    CLI,
    TEST_PUBLIC_KEY,
    TEST_SECRET_KEY,
    cli_args,
    cli_env,
    image_digest_reply,
    run_cli,
)
from tests.fake_langfuse import FakeLangfuseServer, decode_otlp, wait_until
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.tracing.outbox import (
    SUFFIX,
    Outbox,
    basic_auth,
    fingerprint,
    read_batch,
    send_outbox_command,
)

SK = "sk-lf-outbox-DO-NOT-LEAK"
FAST_SDK = {"LANGFUSE_FLUSH_AT": "5", "LANGFUSE_FLUSH_INTERVAL": "0.2", "LANGFUSE_TIMEOUT": "1"}


def _ids(trace_log: Path | list[Path]) -> tuple[set[str], set[str]]:
    """(span ids, score ids) the trace log records: root spans, spans, generations; scores."""
    spans, scores = set(), set()
    for path in trace_log if isinstance(trace_log, list) else [trace_log]:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["type"] == "score":
                scores.add(row["id"])
            else:
                spans.add(row["observation_id"] if row["type"] == "trace" else row["id"])
    return spans, scores


def _outbox_files(root: Path) -> list[Path]:
    """The batches kept: not a .tmp- file a kill cut off before its rename (pathlib globs dot files)."""
    return sorted(p for p in root.glob(f"*/*{SUFFIX}") if not p.name.startswith("."))


def _trace_frames(tracker: LangfuseTracker, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with tracker.create_trace("frame_processing", user_id="cam0", session_id="s1") as trace:
            with tracker.start_generation(trace.id, "vlm_caption", model="qwen3", input="Describe.") as gen:
                gen.update(output=f"caption {i}", usage={"input": 3, "output": 4})
            tracker.log_score(trace.id, "vlm_success", 1.0, observation_id=gen.id)
            tracker.log_score(trace.id, "overall_quality", 0.5, score_trace=True)


def _pk(tmp_path: Path) -> str:
    """A public key of this test's own: the SDK keeps one client per key and process."""
    return f"pk-lf-{tmp_path.name}"


def _tracker(srv: FakeLangfuseServer, tmp_path: Path, outbox: Outbox) -> LangfuseTracker:
    return LangfuseTracker(public_key=_pk(tmp_path), secret_key=SK, base_url=srv.base_url,
                           trace_log=tmp_path / "traces.jsonl", flush_at=5, timeout_s=1.0,
                           outbox=outbox)


def _check_every_id_kept_once(srv: FakeLangfuseServer, trace_log: Path, *, received_once: bool) -> None:
    spans, scores = _ids(trace_log)
    assert spans and scores
    assert srv.kept_span_ids() == spans, (len(srv.kept_span_ids()), len(spans))
    assert srv.kept_score_ids() == scores, (len(srv.kept_score_ids()), len(scores))
    if received_once:
        assert max(srv.span_receipts.values()) == 1 and max(srv.score_receipts.values()) == 1


# -- in the run ---------------------------------------------------------------------------------

def test_an_outage_is_resent_in_the_run_once_langfuse_answers(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with FakeLangfuseServer("503", public_key=_pk(tmp_path), secret_key=SK) as srv:
        # The default settle time: a score file is sent once the SDK's own three tries of that
        # batch are over (its backoff waits up to 1 + 2 s); 2 s let CI receive 5 scores twice.
        outbox = Outbox(tmp_path / "outbox", timeout_s=1.0, retry_s=0.5)
        tracker = _tracker(srv, tmp_path, outbox)
        _trace_frames(tracker, 10)
        assert wait_until(lambda: outbox.waiting()["spans"] >= 20 and outbox.waiting()["scores"] >= 15,
                          timeout=30), outbox.waiting()
        kept_files = _outbox_files(tmp_path / "outbox")
        assert kept_files and all(f.parent.name == fingerprint(srv.base_url, _pk(tmp_path)) for f in kept_files)
        assert not any(SK in f.read_bytes().decode("latin-1") for f in kept_files)  # no secret on disk
        srv.mode = "ok"
        _trace_frames(tracker, 3, start=10)  # the host answers again: the outbox follows
        assert wait_until(lambda: not any(outbox.waiting().values()), timeout=30), outbox.waiting()
        report = tracker.close(deadline_s=5.0)
    assert report.observations == report.observations_delivered == 26
    assert report.scores == report.scores_delivered == 26
    assert report.observations_lost == report.scores_lost == 0
    assert "of them sent from the outbox after the outage" in report.message
    assert "may be lost" not in report.message
    assert _outbox_files(tmp_path / "outbox") == []
    _check_every_id_kept_once(srv, tmp_path / "traces.jsonl", received_once=True)
    failing = [r.getMessage() for r in caplog.records if "cannot send to" in r.getMessage()]
    assert len(failing) == 1 and "waits in the outbox" in failing[0], failing


def test_a_batch_that_landed_but_was_not_answered_is_kept_once(tmp_path):
    """The first send lands, its answer comes too late: sent again, and Langfuse keeps it once."""
    with FakeLangfuseServer("503", public_key=_pk(tmp_path), secret_key=SK) as srv:
        outbox = Outbox(tmp_path / "outbox", timeout_s=1.0, retry_s=3600, settle_s=0.0)
        tracker = _tracker(srv, tmp_path, outbox)
        _trace_frames(tracker, 4)
        report = tracker.close(deadline_s=5.0)  # host still failing: nothing sent at close
        held = outbox.waiting()
        assert held == {"spans": 8, "scores": 8} and report.observations_lost == report.scores_lost == 0
        assert "8 observations and 8 scores wait in the outbox" in report.message
        srv.mode, srv.reply_delay_s = "ok", 1.5
        late = outbox.send(srv.base_url, basic_auth(_pk(tmp_path), SK), deadline_s=30)
        assert late.stopped == "timed out" and outbox.waiting() == held  # kept: no answer came
        srv.reply_delay_s = 0.0
        assert wait_until(lambda: len(srv.span_receipts) + len(srv.score_receipts) >= 1)
        done = outbox.send(srv.base_url, basic_auth(_pk(tmp_path), SK), deadline_s=30)
    assert done.stopped is None and not any(outbox.waiting().values())
    _check_every_id_kept_once(srv, tmp_path / "traces.jsonl", received_once=False)
    twice = [i for i, n in {**srv.span_receipts, **srv.score_receipts}.items() if n == 2]
    assert twice and all(n <= 2 for n in srv.span_receipts.values())  # the late batch, and only it


def test_the_outbox_is_bounded_and_says_what_it_dropped(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with FakeLangfuseServer("503", public_key=_pk(tmp_path), secret_key=SK) as srv:
        outbox = Outbox(tmp_path / "outbox", max_mb=0.004, timeout_s=1.0, retry_s=3600)  # ~4 KB
        tracker = _tracker(srv, tmp_path, outbox)
        _trace_frames(tracker, 30)
        report = tracker.close(deadline_s=8.0)
    size = sum(f.stat().st_size for f in _outbox_files(tmp_path / "outbox"))
    biggest = max(f.stat().st_size for f in _outbox_files(tmp_path / "outbox"))
    assert size <= 0.004 * 1024 * 1024 + biggest
    assert outbox.dropped["spans"] + outbox.dropped["scores"] > 0
    said = [r.getMessage() for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(said) == 1, said
    assert "dropped from the outbox" in report.message and "may be lost" in report.message
    # Lost: only what was dropped; what the SDK still held at the deadline is kept (the journal).
    lost = report.observations_lost + report.scores_lost
    dropped = outbox.dropped["spans"] + outbox.dropped["scores"]
    assert lost == dropped, (lost, dropped)


_KILLED_WRITER = r"""
import os, signal, sys
from pathlib import Path
from opentelemetry.sdk.trace import TracerProvider
from video_summarizer.tracing.journal import SCORE, SPAN, Journal, span_id
from video_summarizer.tracing.outbox import Outbox, score_item

folder = Path(sys.argv[1])
journal = Journal(folder, "run-killed", {"x-langfuse-ingestion-version": "4"}, max_segment_bytes=300)
outbox = Outbox(folder.parent)  # keeps a refused batch as the run does; killed before its settle record
outbox.run, outbox.folder = "run-killed", folder
tracer = TracerProvider(shutdown_on_exit=False).get_tracer("langfuse-sdk")
spans = []
for i in range(3):
    span = tracer.start_span(f"span-{i}", attributes={"langfuse.observation.type": "span"})
    span.end()
    journal.add_span(span)
    spans.append(span_id(span))
items = [score_item(5, score_id=f"s{i:02d}", trace_id="a" * 32, observation_id=None, name="q",
                    value=float(i), data_type="NUMERIC", comment=None,
                    timestamp="2024-05-01T00:00:00.000000Z") for i in range(12)]
for item in items:
    journal.add_score(item)
outbox.keep("scores", items[8:9])
journal.settle(SCORE, ["s00", "s01", "s02", "s03", "s04", "s07"])  # acknowledged, or in a batch file
journal.settle(SPAN, spans[:1])
print(" ".join(spans), len(list(folder.glob("*.journal"))), flush=True)
last = sorted(folder.glob("*.journal"))[-1]
with open(last, "ab") as fh:
    fh.write(b"C\x00\x03")  # a record the kill cut short
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_journal_becomes_batch_files_of_what_was_not_settled(tmp_path):
    """The journal of a run killed mid-write: what was never settled (acknowledged or kept) is
    made into batch files by the next sender, less what a batch file of that run already holds;
    a record cut short is ignored; settled segments were removed while the run lived."""
    pk = _pk(tmp_path)
    with FakeLangfuseServer("ok", public_key=pk, secret_key=SK) as srv:
        folder = tmp_path / "outbox" / fingerprint(srv.base_url, pk)
        folder.mkdir(parents=True)
        writer = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)], capture_output=True,
                                text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
        assert writer.returncode == -signal.SIGKILL, writer.stderr
        *span_ids, segments = writer.stdout.split()
        # Nine segments of ~300 bytes were written; those whose items were all settled are gone.
        assert int(segments) == len(list(folder.glob("*.journal"))) < 9
        assert [read_batch(p).ids for p in _outbox_files(tmp_path / "outbox")] == [["s08"]]
        assert send_outbox_command(tmp_path / "outbox", host=srv.base_url, public_key=pk, secret_key=SK) == 0
        assert list(folder.glob("*.journal")) == [] and _outbox_files(tmp_path / "outbox") == []
    assert srv.kept_span_ids() == set(span_ids[1:])
    assert srv.kept_score_ids() == {"s05", "s06", "s08", "s09", "s10", "s11"}
    assert set(srv.span_receipts.values()) == {1} and set(srv.score_receipts.values()) == {1}
    assert {s["name"] for s in srv.spans} == {"span-1", "span-2"}


# -- the CLI ------------------------------------------------------------------------------------

def _cli(vlm_url: str, llm: Path, tmp: Path, source: str, *more: str) -> list[str]:
    return cli_args(vlm_url, llm, "--source", source, "--no-faces", "--interval", "0.25",
                    "--min-change", "0", "--trace-log", str(tmp / "trace.jsonl"),
                    "--langfuse-outbox", str(tmp / "outbox"), "--flush-timeout", "3", *more)


def _send_outbox(tmp: Path, langfuse_url: str, *more: str):
    return run_cli([sys.executable, CLI, "outbox", "send",
                    "--langfuse-outbox", str(tmp / "outbox"), *more],
                   cli_env(tmp, langfuse_url=langfuse_url), timeout=60)


def test_a_run_with_langfuse_down_leaves_an_outbox_that_send_outbox_empties(tmp_path, clips, tiny_llm):
    clip = clips.still_noisy(seconds=1.25, fps=20.0)
    with FakeLangfuseServer("503", public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        t0 = time.monotonic()
        run = run_cli(_cli(vlm.base_url, tiny_llm, tmp_path, str(clip.path)),
                      cli_env(tmp_path, langfuse_url=lf.base_url, **FAST_SDK))
        took = time.monotonic() - t0
        assert run.returncode == 0, run.stderr
        assert took < 60
        exit_lines = [line for line in run.stderr.splitlines() if " acknowledged by " in line]
        assert len(exit_lines) == 1 and "wait in the outbox" in exit_lines[0], run.stderr
        assert "may be lost" not in exit_lines[0]
        assert lf.span_receipts == {} and lf.score_receipts == {}
        spans, scores = _ids(tmp_path / "trace.jsonl")
        assert f"{len(spans)} observations and {len(scores)} scores wait in the outbox" in exit_lines[0]

        still_down = _send_outbox(tmp_path, lf.base_url)
        assert still_down.returncode == 1, still_down.stderr
        assert f"{len(spans)} observations and {len(scores)} scores left (HTTP 503)" in still_down.stderr

        lf.mode = "ok"
        sent = _send_outbox(tmp_path, lf.base_url)
        assert sent.returncode == 0, sent.stderr
        assert f"sent {len(spans)} observations and {len(scores)} scores" in sent.stderr
        assert "nothing left" in sent.stderr and TEST_SECRET_KEY not in sent.stderr + run.stderr
        _check_every_id_kept_once(lf, tmp_path / "trace.jsonl", received_once=True)
        again = _send_outbox(tmp_path, lf.base_url)
        assert again.returncode == 0 and "nothing to send" in again.stderr, again.stderr
        assert sum(lf.span_receipts.values()) == len(spans)  # nothing sent a second time


# The SDK holds everything until close: spans stay in its span queue (flush interval 60 s, batches
# of 500), scores in its score queue, and a batch handed to the exporter is tried for 5 s, longer
# than the 1 s --flush-timeout. Before the journal all of it was lost whatever the host did.
HELD_BY_SDK = {"LANGFUSE_FLUSH_AT": "500", "LANGFUSE_FLUSH_INTERVAL": "60", "LANGFUSE_TIMEOUT": "5"}


def _modes(root: Path) -> tuple[set[str], set[str]]:
    """(modes of the outbox's folders, modes of its files)."""
    folders = [root, *[p for p in root.rglob("*") if p.is_dir()]]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    return {oct(p.stat().st_mode & 0o777) for p in folders}, {oct(p.stat().st_mode & 0o777) for p in files}


@pytest.mark.parametrize("mode", ["503", "hang", "refuse"])
@pytest.mark.parametrize("sdk_env", [HELD_BY_SDK, FAST_SDK], ids=["held-by-sdk", "sent-and-refused"])
def test_a_run_with_langfuse_down_throughout_loses_nothing(tmp_path, clips, tiny_llm, mode, sdk_env):
    """Langfuse refusing (503), hanging or absent (nothing listening) for the whole run: every
    span and score id of the trace log waits in the outbox, and reaches Langfuse once after it
    recovers, whatever the SDK still held (queued, retrying, waiting on the host) at the deadline."""
    clip = clips.still_noisy(seconds=2.0, fps=20.0)  # 8 frames at 0.25 s
    down = FakeLangfuseServer(mode, public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY).start()
    try:
        with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
            t0 = time.monotonic()
            run = run_cli(_cli(vlm.base_url, tiny_llm, tmp_path, str(clip.path), "--flush-timeout", "1"),
                          cli_env(tmp_path, langfuse_url=down.base_url, **sdk_env))
            took = time.monotonic() - t0
    finally:
        down.stop()
    assert run.returncode == 0, run.stderr
    assert took < 120  # bounded by --flush-timeout, not by the SDK's 5 s tries (a loaded 2-core CI)
    spans, scores = _ids(tmp_path / "trace.jsonl")
    assert len(spans) >= 16 and len(scores) >= 16, (len(spans), len(scores))
    exit_lines = [line for line in run.stderr.splitlines() if " acknowledged by " in line]
    assert len(exit_lines) == 1, run.stderr
    assert f"{len(spans)} observations and {len(scores)} scores wait in the outbox" in exit_lines[0]
    assert "may be lost" not in exit_lines[0]
    assert list((tmp_path / "outbox").glob("*/*.journal")) == []  # all of it made batch files
    modes = _modes(tmp_path / "outbox")

    with FakeLangfuseServer("ok", public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY,
                            port=down.port) as lf:  # Langfuse is back, at the same address
        sent = _send_outbox(tmp_path, lf.base_url)
        assert sent.returncode == 0, sent.stderr
        assert f"sent {len(spans)} observations and {len(scores)} scores" in sent.stderr
        _check_every_id_kept_once(lf, tmp_path / "trace.jsonl", received_once=True)
    assert _outbox_files(tmp_path / "outbox") == []
    # Private: captions, prompts and user ids are the user's.
    assert modes == ({"0o700"}, {"0o600"}), modes


@pytest.mark.parametrize("sdk_env", [FAST_SDK, HELD_BY_SDK], ids=["sent-and-refused", "held-by-sdk"])
def test_a_run_killed_mid_outage_loses_nothing_it_finished(tmp_path, clips, tiny_llm, sdk_env):
    """SIGKILL during an outage: what the run kept (refused batches) and what its SDK still held
    (its queues, the exporter's retries) both reach Langfuse once after --send-outbox."""
    clip = clips.still_noisy(seconds=8.0, fps=20.0)  # 32 frames at 0.25 s, 0.2 s a caption
    with FakeLangfuseServer("503", public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.2) as vlm:
        proc = subprocess.Popen(_cli(vlm.base_url, tiny_llm, tmp_path, str(clip.path)),
                                env=cli_env(tmp_path, langfuse_url=lf.base_url, **sdk_env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            kept_some = (lambda: len(_outbox_files(tmp_path / "outbox")) >= 4) if sdk_env is FAST_SDK \
                else (lambda: _lines(tmp_path / "trace.jsonl") >= 40)
            assert wait_until(kept_some, timeout=90)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        held_spans, held_scores = set(), set()
        for path in _outbox_files(tmp_path / "outbox"):  # read as a test: the header's ids are the body's ids
            batch = read_batch(path)
            if batch.kind == "spans":
                decoded = {s["span_id"] for s in decode_otlp(gzip.decompress(batch.body))}
                assert decoded == set(batch.ids)
                held_spans |= decoded
            else:
                held_scores |= set(batch.ids)
        logged_spans, logged_scores = _ids(tmp_path / "trace.jsonl")
        if sdk_env is FAST_SDK:
            assert held_spans and held_scores

        lf.mode = "ok"
        sent = _send_outbox(tmp_path, lf.base_url)
    assert sent.returncode == 0, sent.stderr
    # Every span and score the trace log names (finished before the kill) arrived, each once;
    # besides them at most those of the frame being finished when the kill came (journaled
    # just before their trace log line).
    assert logged_spans <= lf.kept_span_ids(), (len(logged_spans - lf.kept_span_ids()), sent.stderr)
    assert logged_scores <= lf.kept_score_ids(), (len(logged_scores - lf.kept_score_ids()), sent.stderr)
    assert len(lf.kept_span_ids() - logged_spans) <= 4 and len(lf.kept_score_ids() - logged_scores) <= 8
    assert held_spans <= lf.kept_span_ids() and held_scores <= lf.kept_score_ids()
    assert set(lf.span_receipts.values()) == {1} and set(lf.score_receipts.values()) == {1}
    assert f"sent {len(lf.kept_span_ids())} observations and {len(lf.kept_score_ids())} scores" in sent.stderr
    assert _outbox_files(tmp_path / "outbox") == []
    assert list((tmp_path / "outbox").glob("*/*.journal")) == []


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_send_outbox_needs_keys(tmp_path):
    proc = run_cli([sys.executable, CLI, "outbox", "send",
                    "--langfuse-outbox", str(tmp_path / "outbox")], cli_env(tmp_path), timeout=30)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("Error: outbox send:"), \
        proc.stderr
