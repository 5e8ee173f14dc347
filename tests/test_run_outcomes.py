"""What a run says it did: a failed stage is never saved as done, one input has one name, a live
summary's window is wall-clock time. The CLI runs in this process (tests/cli_runner.invoke_cli)
against the fake OpenAI server as both caption and summary model, on generated clips."""
from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from tests.cli_runner import image_digest_reply, invoke_cli, numbered_reply, read_events
from tests.fake_openai import FakeOpenAIServer

SUMMARY = "People talk on a stage."


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer")


def _args(vlm: FakeOpenAIServer, llm: FakeOpenAIServer, tmp: Path, *more: str) -> list[str]:
    return ["--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3", "--llm-base-url", llm.base_url,
            "--llm-model", "mistral-test", "--no-faces", "--interval", "0.5", "--min-change", "0",
            "--trace-log", str(tmp / "trace.jsonl"), *more]


def _batch(clips, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(clips.numbered(seconds=1.0 + 0.1 * i).path, folder / f"clip-{i}.avi")) for i in range(n)]


def _docs(out: Path) -> dict[str, dict]:
    return {p.name.removesuffix(".summary.json"): json.loads(p.read_text()) for p in out.glob("*.summary.json")}


def test_a_summary_model_outage_fails_the_inputs_and_the_next_run_redoes_them(tmp_path, clips, caplog):
    paths = _batch(clips, tmp_path / "in", 2)
    out = tmp_path / "out"
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        with FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",)) as llm:
            llm.fail_next(status=503, n=1000)
            down = invoke_cli(_args(vlm, llm, tmp_path, "--source", str(tmp_path / "in"), "--output-dir", str(out)))
        assert down.returncode == 1, down.stderr
        failed = down.stderr.split("Failed inputs:\n", 1)[1].splitlines()
        assert sorted(line.split(": ", 1)[0].strip() for line in failed) == [str(p) for p in paths]
        assert all("the summary model failed (1 of 1 summaries" in line and "the next run redoes it" in line
                   for line in failed), failed
        docs = _docs(out)  # kept for reading, marked incomplete
        assert sorted(docs) == ["clip-0", "clip-1"]
        for doc in docs.values():
            assert doc["sentences"] is None and doc["stats"]["summary_failures"] == 1
            assert doc["complete"] is False
            assert doc["incomplete"] == ["1 of 1 summaries failed (the captions stand in for them)"]
        assert "_Incomplete: 1 of 1 summaries failed" in (out / "clip-0.summary.md").read_text()

        caplog.clear()
        captions_before = len(vlm.requests)
        with FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",)) as llm:  # the outage is over
            again = invoke_cli(_args(vlm, llm, tmp_path, "--source", str(tmp_path / "in"), "--output-dir", str(out)))
            assert again.returncode == 0, again.stderr
            assert "already summarized" not in caplog.text and "Failed inputs" not in again.stderr
            assert len(vlm.requests) - captions_before == sum(d["stats"]["selected"] for d in docs.values())
            for doc in _docs(out).values():
                assert doc["complete"] is True and doc["incomplete"] == [] and doc["summary"] == SUMMARY

            caplog.clear()
            third = invoke_cli(_args(vlm, llm, tmp_path, "--source", str(tmp_path / "in"), "--output-dir", str(out)))
            assert third.returncode == 0 and "all 2 input(s) are up to date" in caplog.text


def test_frames_left_uncaptioned_are_kept_but_redone(tmp_path, clips, caplog):
    paths = _batch(clips, tmp_path / "in", 1)
    out = tmp_path / "out"
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm, \
            FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",)) as llm:
        vlm.fail_next(status=500, n=4)  # the client tries a frame 4 times: the first frame fails
        args = _args(vlm, llm, tmp_path, "--source", str(tmp_path / "in"), "--output-dir", str(out),
                     "--max-inflight", "1")
        first = invoke_cli(args)
        assert first.returncode == 0, first.stderr  # captions made it: summarized from them
        doc = _docs(out)["clip-0"]
        selected = doc["stats"]["selected"]
        assert doc["complete"] is False and doc["stats"]["caption_failures"] == 1 and doc["summary"] == SUMMARY
        assert doc["incomplete"] == [f"1 of {selected} selected frames were not captioned"]
        assert (f"{paths[0]}: 1 of {selected} selected frames were not captioned; kept in "
                f"{out / 'clip-0.summary.md'}, marked incomplete: the next run redoes it") in caplog.text
        caplog.clear()
        sent = len(vlm.requests)
        second = invoke_cli(args)
        assert second.returncode == 0 and "already summarized" not in caplog.text
        assert len(vlm.requests) - sent == selected
        assert _docs(out)["clip-0"]["complete"] is True


def test_same_named_inputs_have_one_name_everywhere(tmp_path, clips, caplog):
    for sub, seconds in (("a", 1.0), ("b", 1.5)):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(clips.numbered(seconds=seconds).path, tmp_path / "in" / sub / "clip.avi")
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm, \
            FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",)) as llm:
        run = invoke_cli(_args(vlm, llm, tmp_path, "--source", str(tmp_path / "in" / "*" / "clip.avi"),
                               "--output-dir", str(out), "--jobs", "2", "--events", str(events)))
    assert run.returncode == 0, run.stderr
    docs = _docs(out)
    assert sorted(docs) == ["a-clip", "b-clip"]
    assert {name: doc["label"] for name, doc in docs.items()} == {"a-clip": "a-clip", "b-clip": "b-clip"}
    assert (out / "b-clip.summary.md").read_text().startswith("# Summary of b-clip\n")
    records = read_events(events)
    assert {e["source"] for e in records if e["type"] in ("caption", "summary")} == {"a-clip", "b-clip"}
    assert sorted(e["source"] for e in records if e["type"] == "stats" and e.get("scope") != "run") == [
        "a-clip", "b-clip"]
    assert "  b-clip: frames read 15," in run.stderr  # the statistics
    assert any(line.endswith("] b-clip done") for line in caplog.messages)  # the progress line
    traces = read_events(tmp_path / "trace.jsonl")
    assert {t.get("user_id") for t in traces if t.get("user_id")} == {"a-clip", "b-clip"}


class PacedStdin(io.BufferedIOBase):
    """Bytes handed out as a camera's pipe would: one frame's worth every 1/fps seconds."""

    def __init__(self, data: bytes, frames: int, fps: float) -> None:
        self._chunks = [data[k * (len(data) // frames):(k + 1) * (len(data) // frames) if k < frames - 1 else None]
                        for k in range(frames)]
        self._pause = 1.0 / fps
        self._rest = b""

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        if not self._rest and self._chunks:
            time.sleep(self._pause)
            self._rest = self._chunks.pop(0)
        n = len(self._rest) if n is None or n < 0 else n
        out, self._rest = self._rest[:n], self._rest[n:]
        return out

    def read(self, n: int = -1) -> bytes:
        return self.read1(n)


def test_a_live_pipe_summary_window_is_wall_clock_time(tmp_path, clips):
    clip = clips.pipe_stream(container="mkv", seconds=2.0)
    events = tmp_path / "events.jsonl"
    started = time.time()
    with FakeOpenAIServer(reply_fn=numbered_reply) as vlm, \
            FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",)) as llm:
        run = invoke_cli(_args(vlm, llm, tmp_path, "--source", "-", "--live", "--events", str(events)),
                         stdin=PacedStdin(clip.path.read_bytes(), clip.frame_count, clip.fps))
    assert run.returncode == 0, run.stderr
    records = read_events(events)
    captions = sorted(e["video_time"] for e in records if e["type"] == "caption")
    summaries = [e for e in records if e["type"] == "summary"]
    assert len(captions) >= 2 and len(summaries) == 1 and summaries[0]["final"]
    # the caption events' times: the wall clock of this run, as the index and the page read them
    assert summaries[0]["window"] == [captions[0], captions[-1]]
    assert started <= captions[0] < captions[-1] <= time.time()
