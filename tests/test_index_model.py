"""An index remembers the embedding model it was made with, and finds faces whatever their case.

A real LanceDB index written by the real Indexer with a tiny random BERT folder; --search and
--ask run in process through click's CliRunner on the CLI's main, with the hub offline (a run
that fell back to the default hub model would fail there, naming --embed-model).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_search import _inputs, index_events
from tests.tiny_models import build_tiny_bert
from video_summarizer.errors import InputError
from video_summarizer.options import IndexOptions, QueryOptions

CAPTIONS = {
    "talk": [(0.0, [], "An empty stage before the talk."),
             (5.0, ["biden"], "A man at a podium speaks to the crowd."),
             (10.0, ["biden", "Obama"], "Biden waves from the stage while Obama shakes hands."),
             (15.0, ["Ada"], "A woman reads from her notes.")],
}
CLEAN_ENV = {"SUMMARIZER_EMBED_MODEL": None, "LANCEDB_URI": None, "LANGFUSE_PUBLIC_KEY": None,
             "LANGFUSE_SECRET_KEY": None, "LLM_BASE_URL": None, "LLM_MODEL": None}


@pytest.fixture(scope="module")
def bert(tiny_bert) -> Path:
    return tiny_bert  # the session's (tests/conftest.py)


@pytest.fixture(scope="module")
def index(tmp_path_factory, bert) -> dict:
    tmp = tmp_path_factory.mktemp("index")
    traces = index_events(IndexOptions(index=str(tmp / "idx"), embed_model=str(bert)), _inputs(tmp), CAPTIONS)
    return {"dir": str(tmp / "idx"), "traces": traces}


def _cli(*args: str):
    from real_time_summarizer import cli

    return CliRunner().invoke(cli, list(args), env=CLEAN_ENV)


def test_the_index_records_its_model_and_search_uses_it_without_the_option(index, bert):
    from video_summarizer.search.index import open_table, stored_model

    assert stored_model(open_table(index["dir"])) == str(bert)  # kept through the writes and the optimize
    result = _cli("search", "podium", "--index", index["dir"], "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("1. talk [00:05] A man at a podium speaks to the crowd."), lines
    assert lines[0].endswith(f"| trace {index['traces'][('talk', 5.0)]}")


def test_the_same_model_by_another_path_is_accepted(index, bert, tmp_path, monkeypatch):
    from video_summarizer.search.index import find

    (tmp_path / "current").symlink_to(bert, target_is_directory=True)
    monkeypatch.chdir(bert.parent)
    for same in (os.path.join(".", bert.name), str(tmp_path / "current")):  # relative; through a link
        hits = find(IndexOptions(index=index["dir"], embed_model=same), QueryOptions("podium"), "search")
        assert hits[0].trace_id == index["traces"][("talk", 5.0)], same


def test_another_embedding_model_is_one_line_naming_the_option(index, bert, tmp_path):
    from video_summarizer.search.index import open_indexer

    other = build_tiny_bert(tmp_path / "other-bert", seed=1)  # the same size of vectors: only the name tells
    result = _cli("search", "podium", "--index", index["dir"], "--embed-model", str(other))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: --embed-model: the index at {index['dir']} was made with the embedding model {bert}, not "
        f"{other}: leave --embed-model out to use its own, or give another --index"]
    with pytest.raises(InputError) as err:  # writing into it with another model: the same line
        open_indexer(IndexOptions(index=index["dir"], embed_model=str(other)), [])
    assert err.value.option == "--embed-model" and f"made with the embedding model {bert}" in str(err.value)


def test_ask_checks_the_summary_model_before_the_embedding_model_loads(index, bert, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer")
    result = _cli("ask", "Who is at the podium?", "--index", index["dir"], "--embed-model", str(bert),
                  "--llm-model", "/nonexistent/mistral")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --llm-model: "), result.stderr
    assert not [r for r in caplog.records if r.getMessage().startswith("Embedding model")]


@pytest.mark.parametrize("faces, expected", [
    (("Biden",), {("talk", 5.0), ("talk", 10.0)}),
    (("BIDEN", "obama"), {("talk", 10.0)}),
    (("ada",), {("talk", 15.0)}),
])
def test_the_faces_filter_ignores_case(index, faces, expected):
    from video_summarizer.search.index import find

    hits = find(IndexOptions(index=index["dir"]), QueryOptions("stage", faces=faces, limit=50), "search")
    assert {(h.source, h.time_s) for h in hits if h.kind == "caption"} == expected
    assert {h.trace_id for h in hits if h.kind == "caption"} == {index["traces"][k] for k in expected}
