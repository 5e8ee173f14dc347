"""Summaries that cite their moments: sentence splitting, resolving [mm:ss] times, grounding."""
from __future__ import annotations

import pytest

from video_summarizer.citations import CitableCaption, ground_summary, split_sentences

CAPTIONS = [CitableCaption(0.0, {"frame": 0}), CitableCaption(5.2, {"frame": 150}),
            CitableCaption(10.0, {"frame": 300}), CitableCaption(12.9, {"frame": 360}),
            CitableCaption(75.0, {"frame": 2250})]


def test_sentences_keep_the_citations_that_follow_them():
    text = "A man speaks [00:00]. He waves. [00:05][00:10] Then 3.5 people appear! Done?"
    assert split_sentences(text) == ["A man speaks [00:00].", "He waves. [00:05][00:10]",
                                     "Then 3.5 people appear!", "Done?"]


def test_valid_citations_resolve_to_captions_and_invalid_ones_are_dropped():
    text = ("A man speaks on a stage [00:00]. He waves to the crowd. [00:05][00:09] "
            "Obama appears [00:10-00:12, 03:00]! Nothing matches here [07:07].")
    g = ground_summary(text, CAPTIONS)
    assert [s.text for s in g.sentences] == [
        "A man speaks on a stage [00:00].", "He waves to the crowd. [00:05]",
        "Obama appears [00:10-00:12]!", "Nothing matches here."]
    assert [[c["frame"] for c in s.cites] for s in g.sentences] == [[0], [150], [300, 360], []]
    assert [s.dropped for s in g.sentences] == [[], ["00:09"], ["03:00"], ["07:07"]]
    assert g.dropped == 3 and g.grounded == 3 and g.grounding == pytest.approx(0.75)
    assert g.text == ("A man speaks on a stage [00:00]. He waves to the crowd. [00:05] "
                      "Obama appears [00:10-00:12]! Nothing matches here.")


def test_minutes_past_an_hour_and_repeated_citations():
    g = ground_summary("Late in the video [01:15]. Again [01:15] and [1:15].", CAPTIONS)
    assert [[c["frame"] for c in s.cites] for s in g.sentences] == [[2250], [2250]]
    assert g.grounding == 1.0 and g.dropped == 0


def test_no_citations_and_empty_text():
    g = ground_summary("Nothing is cited. At all.", CAPTIONS)
    assert g.grounding == 0.0 and g.dropped == 0 and len(g.sentences) == 2
    assert ground_summary("", CAPTIONS).grounding is None
    # no captions at all: every citation is dropped
    g = ground_summary("A man speaks [00:00].", [])
    assert g.text == "A man speaks." and g.dropped == 1 and g.grounding == 0.0


REPLY = ("Lin-Manuel Miranda speaks on a stage [00:00][00:03]. The camera cuts to a crowd "
         "[00:05-00:06]. He waves goodbye [09:59].")


@pytest.mark.slow
def test_cli_summary_cites_caption_events(tmp_path, data_dir):
    """The served-summarizer backend against the test server with a fixed reply, on a real clip."""
    import json
    import sys

    from tests.cli_runner import CLI, TEST_SECRET_KEY, cli_env, read_events, run_cli
    from tests.fake_langfuse import FakeLangfuseServer
    from tests.fake_openai import FakeOpenAIServer

    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="A man sings on a stage.") as vlm, \
            FakeOpenAIServer(reply=REPLY, models=("mistral-test",)) as llm:
        args = [sys.executable, CLI, "--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3",
                "--llm-base-url", llm.base_url, "--llm-model", "mistral-test", "--no-faces",
                "--source", str(data_dir / "videos" / "short_hamilton_clip.mp4"),
                "--interval", "1", "--min-change", "0", "--summary-interval", "4", "--json",
                "--events", str(tmp_path / "events.jsonl"), "--trace-log", str(tmp_path / "trace.jsonl")]
        run = run_cli(args, cli_env(tmp_path, langfuse_url=lf.base_url), timeout=180)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_scores=1, timeout=5)
        llm_requests = llm.requests
    doc = json.loads(run.stdout)
    captions = {c["frame"]: c for c in doc["captions"]}
    assert sorted(captions) == [k * 30 for k in range(10)]  # 29.97 fps: frame 30k at [00:0k]
    assert "[mm:ss] times of the captions" in json.dumps(llm_requests[-1])
    assert doc["summary"] == ("Lin-Manuel Miranda speaks on a stage [00:00][00:03]. The camera cuts to a "
                              "crowd [00:05-00:06]. He waves goodbye.")
    sentences = doc["sentences"]
    assert [[c["frame"] for c in s["cites"]] for s in sentences] == [[0, 90], [150, 180], []]
    assert [s["dropped_citations"] for s in sentences] == [[], [], ["09:59"]]
    for s in sentences:
        for cite in s["cites"]:
            assert cite["trace_id"] == captions[cite["frame"]]["trace_id"]
            assert cite["video_time"] == captions[cite["frame"]]["video_time"]
    final = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "summary" and e["final"]]
    assert len(final) == 1 and final[0]["grounding"] == pytest.approx(2 / 3, abs=1e-3)
    assert doc["stats"]["citations_dropped"] >= 1
    # llm_grounding beside the LLM scores, on the final summary's generation
    final_trace = final[0]["trace_id"]
    grounding = [s for s in lf.scores if s["name"] == "llm_grounding" and s["traceId"] == final_trace]
    assert len(grounding) == 1 and grounding[0]["value"] == pytest.approx(2 / 3)
    gen = [s for s in lf.spans if s["name"] == "llm_summary" and s["trace_id"] == final_trace]
    assert grounding[0]["observationId"] == gen[0]["span_id"]
