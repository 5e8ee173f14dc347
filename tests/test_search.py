"""Search over a real LanceDB index written by the real Indexer, embedded by a tiny random BERT.

The events go in through a real EventWriter listener, as in a run; the captions carry known
words and faces, so ranks, filters and counts can be asserted. The tiny model's vectors mean
nothing (random weights): an exact word is found by the full-text side of the hybrid query,
which is what the ranks below rest on.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.options import IndexOptions, QueryOptions
from video_summarizer.outputs import EventWriter
from video_summarizer.runner import Input

LIVE_T0 = 1_764_580_000.0  # 2025-12-01T09:06:40Z: the live camera's first caption, epoch seconds
CAPTIONS = {  # source -> [(video time or epoch, faces, caption)]
    "talk": [(0.0, [], "An empty stage before the talk."),
             (5.0, ["biden"], "A man at a podium speaks to the crowd."),
             (10.0, ["biden", "obama"], "Biden waves from the stage while Obama shakes hands."),
             (15.0, ["obama"], "The crowd applauds loudly.")],
    "street": [(2.0, [], "A red car drives past the window."),
               (4.0, ["obama"], "A dog sleeps on the sofa.")],
    "cam0": [(LIVE_T0, [], "Snow falls on an empty parking lot."),
             (LIVE_T0 + 3600, ["biden"], "A kitchen with a kettle boiling.")],
}


@pytest.fixture(scope="module")
def bert(tiny_bert) -> Path:
    return tiny_bert  # the session's (tests/conftest.py)


def _inputs(tmp: Path) -> list[Input]:
    talk, street = tmp / "talk.mp4", tmp / "street.mp4"
    talk.write_bytes(b"talk video bytes")
    street.write_bytes(b"street video bytes")
    return [Input(str(talk), "talk", "talk"), Input(str(street), "street", "street"),
            Input("rtsp://127.0.0.1:8554/cam0", "cam0", "cam0")]


def index_events(index: IndexOptions, inputs: list[Input], captions: dict, *, summaries: bool = True) -> dict:
    """Run the captions (and a summary per source) through an EventWriter into the index; trace id per moment."""
    from video_summarizer.search.index import open_indexer

    indexer = open_indexer(index, inputs)
    events = EventWriter(None)
    events.add_listener(indexer.listen)
    traces = {}
    for source, items in captions.items():
        for n, (t, faces, text) in enumerate(items):
            trace = f"{source}-{n}-{time.monotonic_ns()}"
            traces[(source, t)] = trace
            events.emit("caption", source=source, frame=n * 10, video_time=t, faces=faces, unknown_faces=0,
                        caption=text, ttft_ms=1.0, latency_ms=2.0, frame_age_ms=3.0, trace_id=trace)
        if summaries:
            events.emit("summary", source=source, window=[items[0][0], items[-1][0]], captions_used=len(items),
                        final=True, trace_id=f"{source}-summary", text=f"Summary of {source}: a recap.")
    indexer.close()
    assert indexer.stats.failures == 0 and events.listener_errors == 0
    return traces


@pytest.fixture(scope="module")
def index(tmp_path_factory, bert):
    tmp = tmp_path_factory.mktemp("index")
    traces = index_events(IndexOptions(index=str(tmp / "idx"), embed_model=str(bert)), _inputs(tmp), CAPTIONS)
    return {"dir": str(tmp / "idx"), "bert": str(bert), "traces": traces}


def _find(index, text: str, **kw):
    from video_summarizer.search.index import find

    return find(IndexOptions(index=index["dir"], embed_model=index["bert"]), QueryOptions(text=text, **kw), "search")


def test_every_caption_and_summary_is_a_row(index):
    from video_summarizer.search.index import open_table

    table = open_table(index["dir"])
    assert table.count_rows() == 8 + 3
    assert table.count_rows("kind = 'summary'") == 3
    assert table.count_rows("live") == 3  # cam0's two captions and its summary
    rows = {r["trace_id"]: r for r in table.search().limit(100).to_list()}
    podium = rows[index["traces"][("talk", 5.0)]]
    assert (podium["source"], podium["time_s"], podium["frame"], podium["faces"]) == ("talk", 5.0, 10, ["biden"])
    assert podium["spec"].endswith("/talk.mp4") and len(podium["content"]) == 64
    # a summary gets the faces of the captions in its window
    assert rows["talk-summary"]["faces"] == ["biden", "obama"]
    assert [i.index_type for i in table.list_indices()] == ["FTS"]


def test_an_exact_word_ranks_its_moment_first(index):
    hits = _find(index, "podium")
    assert hits[0].trace_id == index["traces"][("talk", 5.0)]
    assert hits[0].line().startswith("talk [00:05] A man at a podium speaks to the crowd.  | faces: biden | score ")
    assert hits[0].line().endswith(f"| trace {index['traces'][('talk', 5.0)]}")
    assert hits[0].score > hits[1].score
    assert len(hits) == 10  # --limit's default, of 11 rows


def test_the_faces_filter_is_in_the_query(index):
    hits = _find(index, "crowd", faces=("obama",), limit=50)
    assert {h.trace_id for h in hits} == {index["traces"][k] for k in (("talk", 10.0), ("talk", 15.0),
                                                                      ("street", 4.0))} | {"talk-summary",
                                                                                           "street-summary"}
    assert hits[0].trace_id == index["traces"][("talk", 15.0)]  # "crowd" is in it: first
    both = _find(index, "stage", faces=("biden", "obama"), limit=50)
    assert [h.trace_id for h in both] == [index["traces"][("talk", 10.0)], "talk-summary"]


def test_video_time_and_source_filters(index):
    hits = _find(index, "crowd", since="00:04", until="12", limit=50)
    kept = {(h.source, h.time_s) for h in hits if h.kind == "caption"}
    assert kept == {("talk", 5.0), ("talk", 10.0), ("street", 4.0)}
    assert all(not h.live for h in hits)
    street = _find(index, "car", source_filter="str*", limit=50)
    assert {h.source for h in street} == {"street"} and street[0].text.startswith("A red car")
    by_path = _find(index, "car", source_filter="*/talk.mp4", limit=50)
    assert {h.source for h in by_path} == {"talk"}


def test_clock_times_filter_live_moments(index):
    hits = _find(index, "kettle", since="2025-12-01T09:30:00Z", limit=50)
    assert [(h.source, h.text) for h in hits if h.kind == "caption"] == [("cam0", "A kitchen with a kettle boiling.")]
    assert hits[0].line().startswith("cam0 [2025-12-01 10:06:40Z] A kitchen with a kettle boiling.")
    assert hits[0].cite == "[cam0 10:06:40]"
    until = _find(index, "snow", until="2025-12-01T09:10", limit=50)
    assert [h.text for h in until if h.kind == "caption"] == ["Snow falls on an empty parking lot."]


@pytest.mark.parametrize("kw, option, words", [
    ({"faces": ("nobody",)}, "--faces", "names in the index: biden, obama"),
    ({"source_filter": "nothing*"}, "--source-filter", "sources: cam0, street, talk"),
    ({"since": "yesterday"}, "--since", "neither a video time"),
    ({"since": "00:10", "until": "2025-12-01"}, "--until", "both be video times"),
])
def test_an_unknown_filter_names_its_option(index, kw, option, words):
    with pytest.raises(InputError) as err:
        _find(index, "crowd", **kw)
    assert err.value.option == option and words in str(err.value)


def test_a_missing_or_empty_index_names_the_option(tmp_path, index):
    from video_summarizer.search.index import connect, find

    for where in (tmp_path / "nothing", tmp_path / "empty"):
        if where.name == "empty":
            connect(str(where), create=True)  # a folder LanceDB could use, with no table in it
        with pytest.raises(InputError) as err:
            find(IndexOptions(index=str(where), embed_model=index["bert"]), QueryOptions(text="crowd"), "search")
        assert err.value.option == "--index" and "no index at" in str(err.value)


def test_an_embedding_model_that_does_not_load_names_the_option(tmp_path, index):
    from video_summarizer.search.index import find

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    for model in (str(tmp_path / "missing"), str(tmp_path / "junk")):
        with pytest.raises(SummarizerError) as err:
            find(IndexOptions(index=index["dir"], embed_model=model), QueryOptions(text="crowd"), "search")
        assert err.value.option == "--embed-model", err.value


def test_rewriting_a_file_replaces_its_rows_and_a_rerun_adds_nothing(tmp_path, bert):
    from video_summarizer.search.index import open_table

    opts = IndexOptions(index=str(tmp_path / "idx"), embed_model=str(bert))
    inputs = _inputs(tmp_path)
    talk_only = {"talk": CAPTIONS["talk"]}
    index_events(opts, inputs, talk_only)
    first = {r["id"]: r["trace_id"] for r in open_table(opts.index).search().limit(100).to_list()}
    again = index_events(opts, inputs, talk_only)  # the same file again: new traces, the same moments
    rows = open_table(opts.index).search().limit(100).to_list()
    assert {r["id"] for r in rows} == set(first) and len(rows) == 5
    assert {r["trace_id"] for r in rows if r["kind"] == "caption"} == set(again.values())  # the newest run's
    (tmp_path / "talk.mp4").write_bytes(b"another recording under the same name")
    index_events(opts, inputs, {"talk": [(1.0, [], "A kitchen with a kettle boiling.")]}, summaries=False)
    rows = open_table(opts.index).search().limit(100).to_list()
    assert [(r["text"], r["time_s"]) for r in rows] == [("A kitchen with a kettle boiling.", 1.0)]
