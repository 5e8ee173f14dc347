"""The CLI with no caption server at all: the in-process VLM is the default without --vlm-base-url."""
from __future__ import annotations

import sys
from datetime import datetime

import pytest

from tests.cli_runner import (
    CLI,
    TEST_PUBLIC_KEY,
    TEST_SECRET_KEY,
    keyed_cli_env,
    read_events,
    run_here,
    selected_frames,
)
from tests.clips import ClipSet
from tests.fake_langfuse import FakeLangfuseServer
from tests.tiny_models import build_tiny_llava

pytestmark = pytest.mark.slow


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e6)


def test_local_backend_is_the_default_and_traces_like_the_api_one(tmp_path, tiny_llm):
    clip = ClipSet(tmp_path / "clips").figure_crossing(seconds=10.0, exit_s=9.0)  # generated: 100 frames at 10 fps
    vlm_dir = build_tiny_llava(tmp_path / "tiny-llava")
    llm_dir = tiny_llm  # the session's tiny Mistral (tests/conftest.py)
    args = [sys.executable, CLI, "--vlm-model", str(vlm_dir), "--llm-model", str(llm_dir),
            "--source", str(clip.path), "--interval", "3", "--min-change", "0",
            "--vlm-max-tokens", "12", "--events", str(tmp_path / "events.jsonl"),
            "--trace-log", str(tmp_path / "trace.jsonl")]
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        run = run_here(args, keyed_cli_env(tmp_path, lf), timeout=240)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
    assert f"Loading caption model {vlm_dir}" in run.stderr
    assert "in this process on cpu; faces sent unblurred (the model runs in this process)" in run.stderr
    events = read_events(tmp_path / "events.jsonl")
    captions = [e for e in events if e["type"] == "caption"]
    # faces detected (none known), every 3 s of video at 10 fps; events come as captions complete
    assert sorted(c["frame"] for c in captions) == selected_frames(clip.fps, clip.frame_count, 3.0) == [0, 30, 60, 90]
    assert all(c["faces"] == [] for c in captions)
    assert all(c["caption"] and 0 < c["ttft_ms"] < c["latency_ms"] for c in captions)
    # One frame at a time by default: each caption starts after the previous one ended.
    gens = sorted((r for r in read_events(tmp_path / "trace.jsonl")
                   if r.get("type") == "generation" and r["name"] == "vlm_caption"), key=lambda r: r["start"])
    assert len(gens) == 4 and all(g["model"] == str(vlm_dir) for g in gens)
    for a, b in zip(gens, gens[1:]):
        assert _ns(a["end"]) <= _ns(b["start"])
    for g in gens:  # the first generated token lies inside the generation
        assert _ns(g["start"]) < _ns(g["completion_start_time"]) < _ns(g["end"])
        assert g["usage"]["output"] == 12 and g["usage"]["input"] > 16  # prompt + image tokens
    received = [s for s in lf.spans if s["name"] == "vlm_caption"
                and s["attributes"].get("langfuse.observation.type") == "generation"]
    assert len(received) == 4
    assert {s["attributes"]["langfuse.observation.model.name"] for s in received} == {str(vlm_dir)}
    assert {s["name"] for s in lf.scores} >= {"vlm_success", "vlm_latency_score", "vlm_quality"}
    stats = [e for e in events if e["type"] == "stats" and e.get("scope") == "run"][0]
    assert stats["vlm"]["requests"] == stats["vlm"]["successes"] == 4
