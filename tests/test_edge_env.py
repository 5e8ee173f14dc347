"""The environment is read at the CLI's edge, once: the tracker and the index take values.

LANGFUSE_* become LangfuseSettings and LANCEDB_* become IndexOptions fields in the CLI; the
classes below it read no variable (the integration guide's ``LangfuseTracker()`` alone still
takes LANGFUSE_*, through LangfuseTracker.env_settings)."""
from __future__ import annotations

import pytest

from tests.cli_runner import invoke_cli, invoke_env
from video_summarizer.errors import InputError
from video_summarizer.options import IndexOptions, RunConfig
from video_summarizer.tracing.settings import LangfuseSettings

SECRET = "sk-lf-edge-DO-NOT-LEAK"


@pytest.fixture
def langfuse_env(monkeypatch):
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-edge-env")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "0.5")


def test_the_tracker_the_cli_builds_reads_no_langfuse_variable(langfuse_env):
    from langfuse_tracker import LangfuseTracker

    tracker = LangfuseTracker(**LangfuseSettings().tracker_kwargs())  # the edge found no keys
    assert not tracker.enabled and tracker.public_key is None
    assert tracker.host == "https://cloud.langfuse.com" and tracker.timeout_s == 5.0
    assert tracker.disabled_reason.startswith("LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY not set")
    off = LangfuseTracker(**LangfuseSettings(public_key="pk-x", secret_key="sk-x", enabled=False).tracker_kwargs())
    assert off.disabled_reason == "LANGFUSE_TRACING_ENABLED=false"


def test_the_guides_no_argument_tracker_still_takes_the_environment(langfuse_env):
    from langfuse_tracker import LangfuseTracker

    settings = LangfuseTracker.env_settings(base_url="http://127.0.0.1:10")
    assert settings.public_key == "pk-lf-edge-env" and settings.secret_key == SECRET
    assert settings.base_url == "http://127.0.0.1:10" and settings.timeout_s == 0.5  # given values win


def test_an_unusable_number_is_said_where_it_is_read(caplog):
    settings = LangfuseSettings.from_env({"LANGFUSE_TIMEOUT": "soon", "LANGFUSE_FLUSH_AT": "-3"})
    assert settings.timeout_s is None and settings.flush_at is None
    said = [r.getMessage() for r in caplog.records]
    assert "LANGFUSE_TIMEOUT='soon' is not a positive number; using the default" in said
    assert "LANGFUSE_FLUSH_AT='-3' is not a positive integer; using the default" in said


def test_the_index_reads_lancedb_settings_from_its_options_not_the_environment(monkeypatch):
    from video_summarizer.search.index import connect, index_location

    monkeypatch.setenv("LANCEDB_URI", "db://from-env")
    monkeypatch.setenv("LANCEDB_API_KEY", "sk-lance-env")
    assert index_location(IndexOptions()) is None
    with pytest.raises(InputError, match="set LANCEDB_API_KEY") as info:
        connect("db://given", create=False)
    assert info.value.option == "--index"
    cloud = IndexOptions().with_env({"LANCEDB_URI": "db://x", "LANCEDB_API_KEY": "sk-lance", "LANCEDB_REGION": "eu"})
    assert (cloud.cloud_uri, cloud.cloud_api_key, cloud.cloud_region) == ("db://x", "sk-lance", "eu")
    assert index_location(cloud) == "db://x" and "sk-lance" not in repr(cloud)


def test_the_index_key_is_not_sent_to_ray_workers():
    from video_summarizer.distributed import worker_options

    cfg = RunConfig(index=IndexOptions(index="db://x").with_env({"LANCEDB_API_KEY": "sk-lance"}))
    assert cfg.index.cloud_api_key == "sk-lance"
    assert worker_options(cfg).index.cloud_api_key is None and worker_options(cfg).index.index == "db://x"


def test_search_takes_lancedb_uri_at_the_edge(tmp_path):
    missing = tmp_path / "no-index"
    run = invoke_cli(["search", "crowd"], env=invoke_env(tmp_path, LANCEDB_URI=str(missing)))
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines() == [f"Error: --index: no index at {missing} (make one with --source ... "
                                  f"--index {missing})"]
