"""--experiment RUN --dataset NAME: every item captioned, scored (VLM scores, a judge), runs compared.

Offline the items come from the folder and the table from its run records; with keys they come
from the fake Langfuse through the SDK, run through its experiment API (one dataset run item
per item, linked to the item's generation) and the judge's score lands on the generation.
The VLM and the judge are the fake OpenAI server; the caption model is also a tiny random
LLaVA in this process.
"""
from __future__ import annotations

import json

import pytest

from tests.cli_runner import TEST_SECRET_KEY, cli_env, run_here, sent_image, unique_public_key
from tests.cli_runner import CLI
from tests.clips import numbered_frame, read_number
from tests.fake_langfuse import FakeLangfuseServer, wait_until
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.evals.datasets import DatasetItem, LocalDataset
from video_summarizer.frames import to_jpeg_bytes

VERDICT = '{"score": 0.75, "reason": "The band and the squares are visible."}'


def _items(n: int) -> list[DatasetItem]:
    return [DatasetItem(f"item-{i:02d}", to_jpeg_bytes(numbered_frame(i), 768, 90),
                        {"prompt": "old prompt", "faces": ["ada"] if i % 2 else []},
                        {"frame": i, "source": "gen", "video_time": i / 10, "caption": "old"})
            for i in range(n)]


def _reply(body: dict) -> str:
    n = read_number(sent_image(body))
    if body["model"] == "qwen3":
        return f"Frame {n}. A coloured band over black and white squares."
    return f"Frame {n}. A coloured band." if n % 3 else f"Picture {n}: stripes on a grid, maybe a flag."


def _cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, CLI, *args]


def test_offline_experiment_on_20_items_prints_both_runs_side_by_side(tmp_path):
    local = LocalDataset(tmp_path / "frames")
    for item in _items(20):
        local.add(item)
    with FakeOpenAIServer(models=("qwen3", "qwen3-b"), reply_fn=_reply) as vlm, \
            FakeOpenAIServer(models=("judge",), reply=VERDICT) as judge:
        common = ("--dataset", "frames", "--vlm-base-url", vlm.base_url, "--judge-model", "judge",
                  "--judge-base-url", judge.base_url)
        a = run_here(_cli("experiment", "run-a", "--vlm-model", "qwen3", *common), cli_env(tmp_path),
                    cwd=tmp_path, timeout=180)
        assert a.returncode == 0, a.stderr
        b = run_here(_cli("experiment", "run-b", "--vlm-model", "qwen3-b", *common), cli_env(tmp_path),
                    cwd=tmp_path, timeout=180)
        assert b.returncode == 0, b.stderr
        assert len(vlm.requests) == 40 and len(judge.requests) == 40
        # the judge saw the image and the caption
        first = judge.requests[0]["messages"][0]["content"]
        assert any(p["type"] == "image_url" for p in first)
        assert "Frame" in next(p["text"] for p in first if p["type"] == "text")
    # the item's names go into the new prompt, not the stored one
    asked = [p["text"] for r in vlm.requests for p in r["messages"][0]["content"] if p["type"] == "text"]
    assert sum("ada" in t for t in asked) == 20 and not any("old prompt" in t for t in asked)
    rows = {line.split()[0]: [c for c in line.split() if c != "*"] for line in b.stdout.splitlines()
            if line.startswith("  run-")}
    assert set(rows) == {"run-a", "run-b"}
    assert rows["run-a"][1:5] == ["qwen3", "built-in", "20", "100%"]
    assert rows["run-b"][1:5] == ["qwen3-b", "built-in", "20", "100%"]
    assert rows["run-a"][-2:] == ["0.75", "(20)"]  # the judge's mean over 20 judged captions
    assert "Captions that differ most between the runs:" in b.stdout
    assert "item item-00" in b.stdout and "Picture 0: stripes" in b.stdout  # n % 3 == 0 differ most
    records = [json.loads(x) for x in (tmp_path / "frames" / "runs" / "run-b.jsonl").read_text().splitlines()]
    assert len(records) == 20 and {r["item_id"] for r in records} == {i.id for i in _items(20)}
    assert all(r["judge"] == 0.75 and r["vlm_success"] == 1.0 and r["ttft_ms"] is not None for r in records)


def test_experiment_through_langfuse_links_each_generation_to_its_item(tmp_path):
    from langfuse_datasets import LangfuseDataset
    from langfuse_tracker import LangfuseTracker

    items = _items(4)
    key = unique_public_key()
    with FakeLangfuseServer(public_key=key, secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(models=("qwen3",), reply_fn=_reply) as vlm, \
            FakeOpenAIServer(models=("judge",), reply=VERDICT) as judge:
        tracker = LangfuseTracker(public_key=unique_public_key(), secret_key=TEST_SECRET_KEY, base_url=lf.base_url)
        lf.public_key = None  # the seeding tracker's key differs: accept any
        store = LangfuseDataset(tracker, "frames")
        assert store.ids() == set()
        for item in items:
            store.add(item)
        tracker.close(deadline_s=5)
        run = run_here(_cli("experiment", "lf-run", "--dataset", "frames", "--vlm-base-url", vlm.base_url,
                           "--vlm-model", "qwen3", "--judge-model", "judge", "--judge-base-url", judge.base_url),
                      cli_env(tmp_path, langfuse_url=lf.base_url, LANGFUSE_PUBLIC_KEY=key), cwd=tmp_path,
                      timeout=180)
        assert run.returncode == 0, run.stderr
        assert wait_until(lambda: len([s for s in lf.spans_named("vlm_caption")]) >= 4, timeout=10)
        assert wait_until(lambda: len([s for s in lf.scores if s["name"] == "judge_faithfulness"]) >= 4, 10)
        run_items = lf.data.run_items(lf.spans)
        gens = lf.spans_named("vlm_caption")
        judged = {s["observationId"]: s for s in lf.scores if s["name"] == "judge_faithfulness"}
        quality = {s["observationId"] for s in lf.scores if s["name"] == "vlm_quality"}
        assert len(vlm.requests) == 4
    assert sorted(r["dataset_item_id"] for r in run_items) == [i.id for i in items]  # one per item
    assert {r["run_name"] for r in run_items} == {"lf-run"}
    assert len(gens) == 4
    for link in run_items:  # the item's run observation holds its generation
        gen = [g for g in gens if g["trace_id"] == link["trace_id"]]
        assert len(gen) == 1 and gen[0]["parent_span_id"] == link["observation_id"]
        assert gen[0]["attributes"]["langfuse.observation.type"] == "generation"
        assert judged[gen[0]["span_id"]]["value"] == 0.75  # the judge's score is on the generation
        assert gen[0]["span_id"] in quality
    assert "lf-run *" in run.stdout and " 4 " in run.stdout


@pytest.mark.slow
def test_experiment_with_a_tiny_llava_in_this_process(tmp_path):
    from tests.tiny_models import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    local = LocalDataset(tmp_path / "frames")
    for item in _items(3):
        local.add(item)
    run = run_here(_cli("experiment", "tiny", "--dataset", "frames", "--vlm-backend", "local", "--vlm-model",
                       str(model), "--vlm-max-tokens", "8"), cli_env(tmp_path), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    row = next([c for c in line.split() if c != "*"] for line in run.stdout.splitlines() if line.startswith("  tiny"))
    assert row[3:5] == ["3", "100%"], run.stdout


def test_bad_input_is_one_line_naming_the_option(tmp_path):
    env = cli_env(tmp_path)
    unknown = run_here(_cli("experiment", "r", "--dataset", "nope", "--vlm-base-url", "http://127.0.0.1:9/v1"),
                      env, cwd=tmp_path, timeout=60)
    assert unknown.returncode == 2 and unknown.stderr_lines() == [
        "Error: --dataset: no dataset folder nope/ with an items.jsonl (make one with --source VIDEO "
        "--dataset nope, without Langfuse keys)"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "items.jsonl").write_text("")
    empty = run_here(_cli("experiment", "r", "--dataset", "empty", "--vlm-base-url", "http://127.0.0.1:9/v1"),
                    env, cwd=tmp_path, timeout=60)
    assert empty.returncode == 2 and empty.stderr_lines()[-1].startswith("Error: --dataset: dataset folder empty/ has no items")
    no_dataset = run_here(_cli("experiment", "r"), env, cwd=tmp_path, timeout=60)
    assert no_dataset.returncode == 2 and "--dataset" in no_dataset.stderr_lines()[-1]
    local = LocalDataset(tmp_path / "frames")
    for item in _items(2):
        local.add(item)
    with FakeOpenAIServer(models=("qwen3",), reply_fn=_reply) as vlm:
        gone = run_here(_cli("experiment", "r", "--dataset", "frames", "--vlm-base-url", vlm.base_url,
                            "--judge-model", "judge", "--judge-base-url", "http://127.0.0.1:9/v1"),
                       env, cwd=tmp_path, timeout=60)
        assert gone.returncode == 2 and gone.stderr_lines()[-1].startswith(
            "Error: --judge-base-url: Cannot reach the judge server"), gone.stderr
        assert vlm.requests == []  # said before any caption
        with FakeOpenAIServer(models=("judge",), reply="I cannot rate images.") as judge:
            mute = run_here(_cli("experiment", "r", "--dataset", "frames", "--vlm-base-url", vlm.base_url,
                                "--judge-model", "judge", "--judge-base-url", judge.base_url),
                           env, cwd=tmp_path, timeout=120)
    assert mute.returncode == 1, mute.stderr
    said = [line for line in mute.stderr_lines() if line.startswith("--judge-model: ")]
    assert len(said) == 1 and said[0].startswith("--judge-model: the judge scored none of 2 captions"), mute.stderr
    key = unique_public_key()
    with FakeLangfuseServer(public_key=key, secret_key=TEST_SECRET_KEY) as lf:
        remote = run_here(_cli("experiment", "r", "--dataset", "nope", "--vlm-base-url", "http://127.0.0.1:9/v1"),
                          cli_env(tmp_path, langfuse_url=lf.base_url, LANGFUSE_PUBLIC_KEY=key), cwd=tmp_path,
                          timeout=60)
    assert remote.returncode == 2 and remote.stderr_lines()[-1].startswith(
        "Error: --dataset: Langfuse at http://127.0.0.1:"), remote.stderr
