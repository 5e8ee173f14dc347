"""--dataset NAME: every captioned frame becomes a dataset item, once, in Langfuse or in the folder NAME/.

The real SDK creates the dataset, uploads each item's image as media and creates the item
under an id derived from the source's content hash and frame index; a second run over the
same file creates nothing. Offline the folder holds the same items and ``--dataset-push``
uploads them later under the same ids.
"""
from __future__ import annotations

import json

import pytest

from tests.cli_runner import TEST_PUBLIC_KEY, TEST_SECRET_KEY, cli_args, cli_env, run_here, unique_public_key
from tests.clips import ClipSet, read_number
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.evals.datasets import DatasetItem, LocalDataset, content_hash, item_id
from video_summarizer.frames import from_jpeg_bytes

REF_PREFIX = "@@@langfuseMedia:type=image/jpeg|id="


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ClipSet(tmp_path_factory.mktemp("clips")).numbered(seconds=2.0)  # frames 0 and 10 at 1 s


def _env(tmp_path, lf: FakeLangfuseServer | None) -> dict[str, str]:
    """cli_env, with Langfuse under a key of its own that the server now expects (runs are in process)."""
    if lf is None:
        return cli_env(tmp_path)
    lf.public_key = unique_public_key()
    return cli_env(tmp_path, langfuse_url=lf.base_url, LANGFUSE_PUBLIC_KEY=lf.public_key)


def _run(tmp_path, clip, tiny_llm, lf, *more):
    with FakeOpenAIServer(reply="A coloured band over black and white squares.") as vlm:
        args = cli_args(vlm.base_url, tiny_llm, "--source", str(clip.path), "--interval", "1", *more)
        run = run_here(args, _env(tmp_path, lf), timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    return run


def test_items_are_created_once_across_two_runs(tmp_path, clip, tiny_llm):
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        first = _run(tmp_path, clip, tiny_llm, lf, "--dataset", "frames")
        assert "Dataset Langfuse dataset frames: 2 frames added, 0 already there" in first.stderr
        items = lf.data.dataset_items("frames")
        assert len(items) == 2 and len(lf.data.item_creates) == 2
        digest = content_hash(str(clip.path), "unused")
        assert {i["id"] for i in items} == {item_id("frames", digest, f) for f in (0, 10)}
        for item in items:
            meta = item["metadata"]
            assert meta["caption"] == "A coloured band over black and white squares."
            assert meta["model"] == "qwen3" and meta["source"] == clip.path.stem
            assert meta["frame"] in (0, 10) and meta["video_time"] == pytest.approx(meta["frame"] / 10, abs=0.01)
            assert meta["source_sha256"] == digest and "prompt_version" in meta
            assert item["input"]["faces"] == [] and "describe" in item["input"]["prompt"].lower()
            ref = item["input"]["image"]
            assert ref.startswith(REF_PREFIX)
            media_id = ref[len(REF_PREFIX):].split("|")[0]
            links = [m for m in lf.data.media_links() if m["media_id"] == media_id]
            assert links and links[0]["dataset_item_id"] == item["id"] and links[0]["field"] == "input"
            assert read_number(from_jpeg_bytes(lf.data.media_bytes(media_id))) == meta["frame"]
        second = _run(tmp_path, clip, tiny_llm, lf, "--dataset", "frames")
        assert "Dataset Langfuse dataset frames: 0 frames added, 2 already there" in second.stderr
        assert len(lf.data.item_creates) == 2 and len(lf.data.dataset_items("frames")) == 2
        assert len(lf.data.uploads) == 2


def test_offline_folder_round_trips_and_pushes_under_the_same_ids(tmp_path, clip, tiny_llm):
    _run(tmp_path, clip, tiny_llm, None, "--dataset", "frames")
    again = _run(tmp_path, clip, tiny_llm, None, "--dataset", "frames")
    assert "Dataset folder frames/: 0 frames added, 2 already there" in again.stderr
    local = LocalDataset(tmp_path / "frames")
    lines = (tmp_path / "frames" / "items.jsonl").read_text().splitlines()
    assert len(lines) == 2
    items = local.items()
    assert sorted(i.metadata["frame"] for i in items) == [0, 10]
    for item in items:
        assert read_number(from_jpeg_bytes(item.image_jpeg)) == item.metadata["frame"]
        entry = next(json.loads(line) for line in lines if json.loads(line)["id"] == item.id)
        assert (tmp_path / "frames" / entry["image"]).read_bytes() == item.image_jpeg
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        cli = cli_args("http://127.0.0.1:9/v1", tiny_llm)[:2]  # python real_time_summarizer.py
        push = run_here([*cli, "dataset", "push", "frames"], _env(tmp_path, lf), cwd=tmp_path, timeout=120)
        assert push.returncode == 0, push.stderr
        assert "2 items uploaded to Langfuse dataset frames, 0 already there" in push.stderr
        pushed = {i["id"]: i for i in lf.data.dataset_items("frames")}
        assert set(pushed) == {i.id for i in items}
        for item in items:
            media_id = pushed[item.id]["input"]["image"][len(REF_PREFIX):].split("|")[0]
            assert lf.data.media_bytes(media_id) == item.image_jpeg
            assert pushed[item.id]["metadata"] == item.metadata
        repush = run_here([*cli, "dataset", "push", "frames"], _env(tmp_path, lf), cwd=tmp_path, timeout=120)
        assert repush.returncode == 0 and "0 items uploaded" in repush.stderr
        assert len(lf.data.item_creates) == 2


def test_push_needs_keys_and_a_dataset_folder(tmp_path, tiny_llm):
    cli = cli_args("http://127.0.0.1:9/v1", tiny_llm)[:2]
    no_keys = run_here([*cli, "dataset", "push", "frames"], cli_env(tmp_path), cwd=tmp_path, timeout=60)
    assert no_keys.returncode == 2 and no_keys.stderr_lines()[-1].startswith("Error: dataset push: needs Langfuse keys")
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        missing = run_here([*cli, "dataset", "push", "nothing-here"], _env(tmp_path, lf), cwd=tmp_path, timeout=60)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr_lines()[-1].startswith("Error: dataset push: ")


def test_item_ids_follow_dataset_content_and_frame(tmp_path):
    a = item_id("d", "abc", 3)
    assert a == item_id("d", "abc", 3) and len(a) == 32
    assert len({a, item_id("e", "abc", 3), item_id("d", "abd", 3), item_id("d", "abc", 4)}) == 4
    video = tmp_path / "v.bin"
    video.write_bytes(b"same bytes")
    copy = tmp_path / "copy.bin"
    copy.write_bytes(b"same bytes")
    assert content_hash(str(video), "run1") == content_hash(str(copy), "run2")  # by content, not name
    assert content_hash("cam0", "run1") != content_hash("cam0", "run2")  # live: per run
    local = LocalDataset(tmp_path / "ds")
    local.add(DatasetItem("x1", b"\xff\xd8jpeg", {"prompt": "p", "faces": ["ada"]}, {"frame": 1}))
    (tmp_path / "ds" / "items.jsonl").open("a").write('{"id": "cut')  # a line cut by a kill
    assert [(i.id, i.image_jpeg, i.input, i.metadata) for i in local.items()] == [
        ("x1", b"\xff\xd8jpeg", {"prompt": "p", "faces": ["ada"]}, {"frame": 1})]
