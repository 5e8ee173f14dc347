"""--jobs: a batch runs several files at once, sharing one budget of --max-inflight caption calls.

The CLI runs in this process (tests/cli_runner.run_here) on generated clips, against the fake OpenAI server with a capacity
limit (requests served at once; others queue), with the tiny local Mistral as summary model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


from tests.cli_runner import cli_args, cli_env, image_digest_reply, read_events, run_here
from tests.clips import ClipSet
from tests.fake_openai import FakeOpenAIServer


def make_batch(folder: Path, n: int, *, seconds: float = 2.0) -> list[Path]:
    """n different numbered clips (a little longer each) as folder/clip-<i>.avi."""
    clips = ClipSet(folder.parent / f"{folder.name}-made")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        clip = clips.numbered(seconds=round(seconds + 0.1 * i, 1))
        paths.append(Path(shutil.copy(clip.path, folder / f"clip-{i}.avi")))
    return paths


def test_eight_files_four_at_a_time_share_the_caption_budget(tmp_path, tiny_llm):
    paths = make_batch(tmp_path / "in", 8)
    out, events_path = tmp_path / "out", tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.1, capacity=8) as vlm:
        run = run_here(cli_args(vlm.base_url, tiny_llm, "--source", str(tmp_path / "in"), "--output-dir", str(out),
                               "--interval", "0.5", "--min-change", "0", "--no-faces", "--max-inflight", "3",
                               "--jobs", "4", "--events", str(events_path)),
                      cli_env(tmp_path), timeout=240)
        assert run.returncode == 0, run.stderr
        requests = len(vlm.requests)
        peak = vlm.peak_serving
    # the budget is the run's: 3 calls at once over all four running files (not 3 per file)
    assert peak == 3
    names = sorted(p.stem for p in paths)
    assert sorted(p.name for p in out.glob("*.summary.json")) == [f"{n}.summary.json" for n in names]
    assert sorted(p.name for p in out.glob("*.summary.md")) == [f"{n}.summary.md" for n in names]
    assert not [p for p in out.iterdir() if p.name.startswith(".clip-")]  # no temporary file left
    events = read_events(events_path)
    stats = [e for e in events if e["type"] == "stats" and e.get("scope") != "run"]
    assert sorted(e["source"] for e in stats) == sorted(f"clip-{i}" for i in range(8))  # each file once
    total = 0
    for path in paths:
        doc = json.loads((out / f"{path.stem}.summary.json").read_text())
        captions = doc["captions"]
        assert doc["source"] == str(path)
        assert len(captions) == doc["stats"]["selected"] == doc["stats"]["captioned"] > 0
        assert len({c["frame"] for c in captions}) == len(captions)  # each frame once
        assert doc["summary"]
        total += len(captions)
    assert total == requests == sum(1 for e in events if e["type"] == "caption")
    assert "[8/8 files, 0 in progress, 0 failed" in run.stderr

    # a second run finds every file done: nothing loads, nothing is sent
    with FakeOpenAIServer(reply_fn=image_digest_reply) as vlm:
        again = run_here(cli_args(vlm.base_url, tiny_llm, "--source", str(tmp_path / "in"), "--output-dir",
                                 str(out), "--no-faces", "--jobs", "4"), cli_env(tmp_path), timeout=120)
        assert again.returncode == 0, again.stderr
        assert vlm.requests == []
    assert "all 8 input(s) are up to date" in again.stderr


def test_jobs_gives_the_same_outputs_as_one_at_a_time(tmp_path, tiny_llm):
    paths = make_batch(tmp_path / "in", 3, seconds=1.5)
    docs = {}
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.05, capacity=4) as vlm:
        for jobs in ("1", "3"):
            out = tmp_path / f"out-{jobs}"
            run = run_here(cli_args(vlm.base_url, tiny_llm, "--source", str(tmp_path / "in"), "--output-dir",
                                   str(out), "--interval", "0.5", "--min-change", "0", "--no-faces",
                                   "--max-inflight", "4", "--jobs", jobs), cli_env(tmp_path), timeout=180)
            assert run.returncode == 0, run.stderr
            docs[jobs] = {p.stem: json.loads((out / f"{p.stem}.summary.json").read_text()) for p in paths}
    for name in docs["1"]:
        one, many = docs["1"][name], docs["3"][name]
        assert [c["caption"] for c in one["captions"]] == [c["caption"] for c in many["captions"]]
        assert [c["frame"] for c in one["captions"]] == [c["frame"] for c in many["captions"]]
