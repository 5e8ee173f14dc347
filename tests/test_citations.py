"""Summaries that cite their moments: sentence splitting, resolving [mm:ss] times, grounding."""
from __future__ import annotations

import json

import pytest

from video_summarizer.citations import CITATION, CitableCaption, ground_summary, split_sentences
from video_summarizer.timecodes import format_video_time, parse_video_time

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


# A dropped citation inside a sentence takes the words that led into it along: (summary the
# model wrote, text kept, frames cited, times dropped). Valid times: 00:00, 00:05, 00:10, 01:15.
MENDED = [
    ("The cut happens at [99:99].", "The cut happens.", [], ["99:99"]),
    ("The cut happens at [09:59].", "The cut happens.", [], ["09:59"]),
    ("He waves goodbye [09:59].", "He waves goodbye.", [], ["09:59"]),
    ("He waves. [09:59]", "He waves.", [], ["09:59"]),
    ("The crowd cheers at [09:59] and he waves.", "The crowd cheers and he waves.", [], ["09:59"]),
    ("He bows at around [09:59] to the crowd.", "He bows to the crowd.", [], ["09:59"]),
    ("At [09:59], the man leaves.", "The man leaves.", [], ["09:59"]),
    ("He waves (see [09:59]) and leaves.", "He waves and leaves.", [], ["09:59"]),
    ("He waves (see [09:59]).", "He waves.", [], ["09:59"]),
    ("A man (at [09:59]) waves.", "A man waves.", [], ["09:59"]),
    ("He waves, see [09:59].", "He waves.", [], ["09:59"]),
    ("He waves (see [00:05] and [09:59]).", "He waves (see [00:05]).", [150], ["09:59"]),
    ("He waves (see [09:59] and [00:05]).", "He waves (see [00:05]).", [150], ["09:59"]),
    ("The crowd stays from [08:00-09:59].", "The crowd stays.", [], ["08:00-09:59"]),
    ("The crowd stays [08:00-09:59] and then leaves.", "The crowd stays and then leaves.", [],
     ["08:00-09:59"]),
    ("The crowd stays [00:04-00:06, 08:00-09:59].", "The crowd stays [00:04-00:06].", [150],
     ["08:00-09:59"]),
    ("He sings from [00:05] to [09:59].", "He sings from [00:05].", [150], ["09:59"]),
    ("He sings from [09:59] to [00:10].", "He sings until [00:10].", [300], ["09:59"]),
    ("He sings between [00:05] and [09:59].", "He sings at [00:05].", [150], ["09:59"]),
    ("He sings from [08:00] to [09:59], then bows.", "He sings, then bows.", [],
     ["08:00", "09:59"]),
    ("He waves at [00:05] and [09:59].", "He waves at [00:05].", [150], ["09:59"]),
    ("He waves at [09:59] and at [00:05].", "He waves at [00:05].", [150], ["09:59"]),
    ("He waves at [00:05], [09:59] and [00:10].", "He waves at [00:05] and [00:10].", [150, 300],
     ["09:59"]),
    ("He waves [00:05][09:59] twice.", "He waves [00:05] twice.", [150], ["09:59"]),
    ("He bows [1:02:03] slowly.", "He bows slowly.", [], ["1:02:03"]),
    ("He is at home in [09:59]!", "He is at home!", [], ["09:59"]),
]


@pytest.mark.parametrize("written, kept, frames, dropped", MENDED)
def test_a_dropped_citation_leaves_a_readable_sentence(written, kept, frames, dropped):
    g = ground_summary(written, CAPTIONS)
    assert g.text == kept
    assert [c["frame"] for c in g.sentences[0].cites] == frames
    assert g.sentences[0].dropped == dropped and g.dropped == len(dropped)


def test_mending_touches_only_sentences_that_lost_a_citation():
    text = "He looks at [00:05] the crowd , twice. At home he waves at [09:59]. [09:59]."
    g = ground_summary(text, CAPTIONS)
    # the first sentence keeps its odd spacing: nothing was dropped there
    assert [s.text for s in g.sentences] == ["He looks at [00:05] the crowd , twice.",
                                             "At home he waves."]
    assert g.dropped == 2 and g.grounded == 1


def test_citations_read_exactly_what_format_video_time_writes():
    # The summarizer shows "[mm:ss] caption" lines and "[mm:ss-mm:ss]" for a repeated caption;
    # minutes keep counting past 59. 0 s, 59:59, 1 h 2 min 3 s and 10 h:
    times = [0, 3599, 3723, 36000]
    assert [format_video_time(t) for t in times] == ["00:00", "59:59", "62:03", "600:00"]
    assert [parse_video_time(format_video_time(t)) for t in times] == times
    captions = [CitableCaption(float(t), {"frame": t * 25}) for t in times]
    lines = [f"[{format_video_time(t)}] caption {i}" for i, t in enumerate(times)]
    lines.append(f"[{format_video_time(3599)}-{format_video_time(3723)}] caption again")
    stamps = [CITATION.search(line).group(0) for line in lines]
    assert stamps == ["[00:00]", "[59:59]", "[62:03]", "[600:00]", "[59:59-62:03]"]
    summary = " ".join(f"Event {i} {stamp}." for i, stamp in enumerate(stamps))
    g = ground_summary(summary, captions)
    assert [[c["frame"] for c in s.cites] for s in g.sentences] == [
        [0], [3599 * 25], [3723 * 25], [36000 * 25], [3599 * 25, 3723 * 25]]
    assert g.dropped == 0 and g.grounding == 1.0
    assert g.text == summary


@pytest.mark.parametrize("stamp, looks_like_a_time", [
    ("99:99", True), ("1:02:03", True), ("00:60", True), ("1:5", True),
    ("-1:00", False), ("1.5:00", False), ("", False)])
def test_times_of_another_shape_are_refused_and_dropped(stamp, looks_like_a_time):
    with pytest.raises(ValueError, match="not an mm:ss video time"):
        parse_video_time(stamp)
    written = f"It happens [{stamp}] here."
    g = ground_summary(written, [CitableCaption(0.0, {"frame": 0})])
    # A bracket that looks like a time is a citation that matches nothing: dropped, counted.
    # Anything else in brackets is the model's text and stays.
    assert (g.text, g.dropped) == (("It happens here.", 1) if looks_like_a_time else (written, 0))


REPLY = ("Lin-Manuel Miranda speaks on a stage [00:00][00:03]. The camera cuts to a crowd "
         "[00:05-00:06]. He waves goodbye [09:59].")


@pytest.mark.slow
def test_cli_summary_cites_caption_events(tmp_path):
    """The served-summarizer backend against the test server with a fixed reply, on a generated clip."""
    import json
    import sys

    from tests.cli_runner import CLI, TEST_SECRET_KEY, cli_env, read_events, run_cli
    from tests.clips import ClipSet
    from tests.fake_langfuse import FakeLangfuseServer
    from tests.fake_openai import FakeOpenAIServer

    with FakeLangfuseServer(public_key="pk-test-e2e", secret_key=TEST_SECRET_KEY) as lf, \
            FakeOpenAIServer(reply="A man sings on a stage.") as vlm, \
            FakeOpenAIServer(reply=REPLY, models=("mistral-test",)) as llm:
        args = [sys.executable, CLI, "--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3",
                "--llm-base-url", llm.base_url, "--llm-model", "mistral-test", "--no-faces",
                "--source", str(ClipSet(tmp_path / "clips").numbered(seconds=10.0).path),  # 10 fps
                "--interval", "1", "--min-change", "0", "--summary-interval", "4", "--json", "--clip-frames", "1",
                "--events", str(tmp_path / "events.jsonl"), "--trace-log", str(tmp_path / "trace.jsonl")]
        run = run_cli(args, cli_env(tmp_path, langfuse_url=lf.base_url), timeout=180)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_scores=1, timeout=5)
        llm_requests = llm.requests
    doc = json.loads(run.stdout)
    captions = {c["frame"]: c for c in doc["captions"]}
    assert sorted(captions) == [k * 10 for k in range(10)]  # 10 fps: frame 10k at [00:0k]
    assert "[mm:ss] times of the captions" in json.dumps(llm_requests[-1])
    assert doc["summary"] == ("Lin-Manuel Miranda speaks on a stage [00:00][00:03]. The camera cuts to a "
                              "crowd [00:05-00:06]. He waves goodbye.")
    sentences = doc["sentences"]
    assert [[c["frame"] for c in s["cites"]] for s in sentences] == [[0, 30], [50, 60], []]
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


# Two more ways a dropped citation left words behind: a list of them, and "and" before one.
@pytest.mark.parametrize("written, kept", [
    ("A man walked [09:59] and [08:00].", "A man walked."),
    ("A man walked and [09:59].", "A man walked."),
    ("A man walked at [09:59] and at [08:00].", "A man walked."),
    ("A man walked [09:59], [08:00] and [07:00].", "A man walked."),
    ("A man walked, then [09:59].", "A man walked."),
    ("A man walked [09:59], and.", "A man walked."),
    ("A man walked [09:59] and  [00:05] away.", "A man walked [00:05] away."),
    ("Rock and roll plays [09:59].", "Rock and roll plays."),
])
def test_dropped_citations_take_their_conjunctions_along(written, kept):
    assert ground_summary(written, CAPTIONS).text == kept


def test_captions_less_than_a_second_apart_get_stamps_of_their_own():
    from video_summarizer.models.summary_prompt import caption_lines
    from video_summarizer.results import TimedCaption

    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    lines = caption_lines([TimedCaption(t, f"Frame {i}.") for i, t in enumerate(times)])
    assert lines == ['[00:00.0] "Frame 0."', '[00:00.5] "Frame 1."', '[00:01.0] "Frame 2."',
                     '[00:01.5] "Frame 3."', '[00:02.0] "Frame 4."']
    # whole seconds where they tell the captions apart; 30 fps needs hundredths
    assert caption_lines([TimedCaption(t, f"Frame {t}.") for t in (0.0, 1.001, 2.002)])[1] == '[00:01] "Frame 1.001."'
    assert caption_lines([TimedCaption(t, "x") for t in (1 / 30, 2 / 30)]) == ['[00:00.03-00:00.06] "x"']
    captions = [CitableCaption(t, {"frame": int(t * 10)}) for t in times]
    g = ground_summary("He waves [00:00.5]. He bows [00:01.0-00:01.5]. He sits [00:01]. Gone [00:00.7].",
                       captions)
    assert [[c["frame"] for c in s.cites] for s in g.sentences] == [[5], [10, 15], [10, 15], []]
    assert g.text == "He waves [00:00.5]. He bows [00:01.0-00:01.5]. He sits [00:01]. Gone."
    assert [format_video_time(t, 1) for t in (0.3, 59.95, 3723.25)] == ["00:00.3", "00:59.9", "62:03.2"]
    assert [parse_video_time(s) for s in ("00:05.5", "62:03.25")] == [5.5, 3723.25]


def _window_reply(body: dict) -> str:
    """The summary model: one reply for the first window (0-1.5 s), another for the final one."""
    user = body["messages"][-1]["content"]
    if "final summary" not in user:
        return "A man walks in [00:00.5]. He sits [00:02.5]."
    return "A man walks in [00:00.5]. He waved first [00:00.0]. He sits [00:02.5]."


def test_a_summary_cites_only_what_its_prompt_showed(tmp_path, clips):
    from tests.cli_runner import invoke_cli, numbered_reply, read_events
    from tests.fake_openai import FakeOpenAIServer

    events = tmp_path / "events.jsonl"
    with FakeOpenAIServer(reply_fn=numbered_reply) as vlm, \
            FakeOpenAIServer(reply_fn=_window_reply, models=("mistral-test",)) as llm:
        run = invoke_cli(["--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3", "--llm-base-url", llm.base_url,
                          "--llm-model", "mistral-test", "--no-faces", "--max-inflight", "1", "--clip-frames", "1",
                          "--source", str(clips.numbered(seconds=3.0).path),  # 10 fps: frame 5k at 0.5k s
                          "--interval", "0.5", "--min-change", "0", "--summary-interval", "1.5", "--json",
                          "--events", str(events), "--trace-log", str(tmp_path / "trace.jsonl")])
        prompts = [r["messages"][-1]["content"] for r in llm.requests]
    assert run.returncode == 0, run.stderr
    assert len(prompts) == 2
    assert '[00:00.5] "Frame 5. ' in prompts[0] and '[00:01.5] "Frame 15. ' in prompts[0]
    assert '[00:02.0] "Frame 20. ' in prompts[1] and "Frame 5." not in prompts[1]
    summaries = [e for e in read_events(events) if e["type"] == "summary"]
    assert [s["window"] for s in summaries] == [[0.0, 1.5], [2.0, 2.5]]
    # The first window ended at 1.5 s: its [00:02.5] is dropped, though that caption existed.
    assert summaries[0]["text"] == "A man walks in [00:00.5]. He sits."
    # The final prompt showed 2.0-2.5 s and the summary so far (citing 0.5 s): 0.0 s it never saw.
    doc = json.loads(run.stdout.splitlines()[0])
    assert doc["summary"] == "A man walks in [00:00.5]. He waved first. He sits [00:02.5]."
    assert [[c["frame"] for c in s["cites"]] for s in doc["sentences"]] == [[5], [], [25]]
    assert [s["dropped_citations"] for s in doc["sentences"]] == [[], ["00:00.0"], []]
    assert summaries[1]["grounding"] == pytest.approx(2 / 3, abs=1e-3) and doc["stats"]["citations_dropped"] == 2
