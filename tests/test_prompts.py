"""Managed prompts: PromptSource through LangfuseTracker and the real SDK against the local receiver.

Each test builds its tracker with a fresh public key (the SDK keeps one client, and one prompt
cache, per key). Timings are asserted with the margins a loaded 2-core machine needs.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import ExitStack

import httpx
import pytest

from langfuse_tracker import LangfuseTracker
from tests.fake_langfuse import FakeLangfuseServer, text_prompt, wait_until
from video_summarizer import defaults as D
from video_summarizer.prompts import (
    BUILT_IN,
    CAPTION_PROMPT,
    DEFAULT_PROMPT_TEMPLATE,
    LANGFUSE,
    SUMMARY_PROMPT,
    SYSTEM_PROMPT,
    ManagedPrompt,
    PromptSource,
    faces_sentence,
    for_clip,
    render_caption,
    to_mustache,
)
from vlm_client_module import VLMClient

SECRET = "sk-lf-test-prompts-0123456789"
PROMPT_NAME = "langfuse.observation.prompt.name"
PROMPT_VERSION = "langfuse.observation.prompt.version"
CAPTION_V3 = "Describe the frame for the control room.{{faces}} Answer as {\"caption\": ...}."
CAPTION_V4 = "Staging: one sentence about the frame.{{ faces }}"
SUMMARY_V2 = "You write a short, factual summary of a video from its captions."
SERVED = [
    text_prompt(CAPTION_PROMPT, "Old caption prompt.{{faces}}", version=2, labels=[]),
    text_prompt(CAPTION_PROMPT, CAPTION_V3, version=3, labels=["production"]),
    text_prompt(CAPTION_PROMPT, CAPTION_V4, version=4, labels=["staging", "latest"]),
    text_prompt(SUMMARY_PROMPT, SUMMARY_V2, version=2, labels=["production", "staging"]),
]
KEY_ENV = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST",
           "LANGFUSE_TIMEOUT", "LANGFUSE_FLUSH_AT", "LANGFUSE_TRACING_ENABLED")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def langfuse(tmp_path):
    """make(prompts, mode) -> (server, tracker with a trace log); all closed afterwards."""
    with ExitStack() as stack:
        def make(prompts=SERVED, mode="ok"):
            key = f"pk-lf-{uuid.uuid4().hex[:12]}"
            srv = stack.enter_context(FakeLangfuseServer(mode, public_key=key, secret_key=SECRET,
                                                         prompts=list(prompts)))
            tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url,
                                      timeout_s=2, trace_log=tmp_path / "traces.jsonl")
            stack.callback(tracker.close, deadline_s=3)
            return srv, tracker

        yield make


def prompt_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "video_summarizer.prompts" and r.getMessage().startswith("Prompt ")]


def generation(tracker: LangfuseTracker, name: str, managed: ManagedPrompt, text: str) -> str:
    """One trace with one generation made from the managed prompt; returns the generation id."""
    with tracker.create_trace("frame_processing") as trace:
        with tracker.create_span(trace.id, name):
            with tracker.start_generation(trace_id=trace.id, name=name, model="qwen3",
                                          input=text, prompt=managed.client) as gen:
                gen.update(output="a caption", completion_start_time=time.time())
    return gen.id


def trace_log(tracker: LangfuseTracker) -> list[dict]:
    tracker.trace_log.close()
    with open(tracker.trace_log.path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- fetched from Langfuse ---------------------------------------------------------------------
def test_production_prompts_are_fetched_rendered_and_linked_to_their_generations(langfuse, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse()
    prompts = PromptSource(tracker).load()

    caption = prompts.caption()
    assert (caption.name, caption.version, caption.label, caption.source) == (
        CAPTION_PROMPT, 3, "production", LANGFUSE)
    assert caption.template == CAPTION_V3 and caption.client is not None and caption.linked
    text = render_caption(caption, faces_sentence(["Ann", " Bob ", "Ann", ""]))
    assert text == ("Describe the frame for the control room. The people recognized in the frame "
                    "are: Ann, Bob. Refer to them by name. Answer as {\"caption\": ...}.")
    assert render_caption(caption, faces_sentence([])) == (
        "Describe the frame for the control room. Answer as {\"caption\": ...}.")
    summary = prompts.summary()
    assert (summary.template, summary.version, summary.source) == (SUMMARY_V2, 2, LANGFUSE)
    assert prompt_lines(caplog) == [
        "Prompt video-caption: Langfuse version 3 (label production)",
        "Prompt video-summary: Langfuse version 2 (label production)",
    ]
    assert sorted((r["name"], r["label"], r["status"]) for r in srv.prompt_requests()) == [
        (CAPTION_PROMPT, "production", 200), (SUMMARY_PROMPT, "production", 200)]

    caption_id = generation(tracker, "vlm_caption", caption, text)
    summary_id = generation(tracker, "llm_summary", summary, summary.template)
    assert tracker.flush(deadline_s=10)
    assert srv.wait_for(n_spans=6)
    spans = {s["span_id"]: s for s in srv.spans}
    assert spans[caption_id]["attributes"][PROMPT_NAME] == "video-caption"
    assert spans[caption_id]["attributes"][PROMPT_VERSION] == 3
    assert spans[caption_id]["attributes"]["langfuse.observation.input"] == text
    assert spans[summary_id]["attributes"][PROMPT_NAME] == "video-summary"
    assert spans[summary_id]["attributes"][PROMPT_VERSION] == 2
    # Spans, traces' roots and the enclosing spans carry no prompt.
    assert [s["name"] for s in srv.spans if PROMPT_NAME in s["attributes"]] == [
        "vlm_caption", "llm_summary"]
    assert all(spans[i]["attributes"]["langfuse.observation.type"] == "generation"
               for i in (caption_id, summary_id))

    records = {r["id"]: r for r in trace_log(tracker) if r["type"] == "generation"}
    assert (records[caption_id]["prompt_name"], records[caption_id]["prompt_version"]) == (
        "video-caption", 3)
    assert (records[summary_id]["prompt_name"], records[summary_id]["prompt_version"]) == (
        "video-summary", 2)


def test_another_label_picks_the_version_carrying_it(langfuse, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse()
    prompts = PromptSource(tracker, label="staging").load()
    caption = prompts.caption()
    assert (caption.version, caption.label, caption.template) == (4, "staging", CAPTION_V4)
    # Mustache allows spaces inside the braces; the SDK's compile fills them too.
    assert render_caption(caption, faces_sentence(["Cleo"])) == (
        "Staging: one sentence about the frame. The people recognized in the frame are: Cleo. "
        "Refer to them by name.")
    assert prompts.summary().version == 2
    assert {r["label"] for r in srv.prompt_requests()} == {"staging"}
    assert "Prompt video-caption: Langfuse version 4 (label staging)" in prompt_lines(caplog)

    gen_id = generation(tracker, "vlm_caption", caption, "x")
    assert tracker.flush(deadline_s=10) and srv.wait_for(n_spans=3)
    span = next(s for s in srv.spans if s["span_id"] == gen_id)
    assert (span["attributes"][PROMPT_NAME], span["attributes"][PROMPT_VERSION]) == (
        "video-caption", 4)


def test_many_calls_share_one_fetch_per_prompt(langfuse):
    srv, tracker = langfuse()
    prompts = PromptSource(tracker, cache_ttl_s=300).load()
    for _ in range(50):
        assert prompts.caption().version == 3
        assert prompts.summary().version == 2
    assert len(srv.prompt_requests(CAPTION_PROMPT)) == 1
    assert len(srv.prompt_requests(SUMMARY_PROMPT)) == 1
    assert prompts.stats()[CAPTION_PROMPT] == {"source": LANGFUSE, "version": 3,
                                               "label": "production", "fetches": 1, "failures": 0}


# -- the built-in fallback ---------------------------------------------------------------------
def test_unknown_prompt_uses_the_built_in_one_and_links_nothing(langfuse, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse(prompts=[])
    prompts = PromptSource(tracker).load()

    caption = prompts.caption()
    assert (caption.source, caption.version, caption.label, caption.client) == (
        BUILT_IN, None, None, None)
    assert caption.template == DEFAULT_PROMPT_TEMPLATE.replace("{faces}", "{{faces}}")
    assert caption.reason == "not found: 'video-caption' has no version labelled 'production'"
    # The built-in prompt renders exactly as the VLM client's own prompt builder does.
    names = ["Ann", "Bob"]
    assert render_caption(caption, faces_sentence(names)) == VLMClient().build_prompt(names)
    assert render_caption(caption, faces_sentence([])) == VLMClient().build_prompt([])
    assert prompts.summary().template == SYSTEM_PROMPT
    assert [r["status"] for r in srv.prompt_requests()] == [404, 404]
    assert prompt_lines(caplog) == [
        "Prompt video-caption: built-in (not found: 'video-caption' has no version labelled "
        "'production')",
        "Prompt video-summary: built-in (not found: 'video-summary' has no version labelled "
        "'production')",
    ]

    gen_id = generation(tracker, "vlm_caption", caption, "x")
    assert tracker.flush(deadline_s=10) and srv.wait_for(n_spans=3)
    span = next(s for s in srv.spans if s["span_id"] == gen_id)
    assert span["attributes"]["langfuse.observation.type"] == "generation"
    assert PROMPT_NAME not in span["attributes"] and PROMPT_VERSION not in span["attributes"]
    record = next(r for r in trace_log(tracker) if r["id"] == gen_id)
    assert (record["prompt_name"], record["prompt_version"]) == (None, None)


def test_langfuse_off_uses_the_built_in_prompts_without_any_request(caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    with FakeLangfuseServer(prompts=SERVED) as srv:
        tracker = LangfuseTracker(base_url=srv.base_url)  # no keys: disabled
        started = time.monotonic()
        prompts = PromptSource(tracker).load()
        for _ in range(20):
            caption = prompts.caption()
        assert time.monotonic() - started < 1.0
        assert (caption.source, caption.reason, caption.client) == (BUILT_IN, "Langfuse off", None)
        assert prompts.summary().template == SYSTEM_PROMPT
        assert tracker.get_prompt(CAPTION_PROMPT, label="production") is None
        with tracker.start_generation(None, "vlm_caption", prompt=caption.client) as gen:
            gen.update(output="x")
        assert srv.requests == []
        assert prompt_lines(caplog) == ["Prompt video-caption: built-in (Langfuse off)",
                                        "Prompt video-summary: built-in (Langfuse off)"]
        tracker.close()


@pytest.mark.parametrize("mode, reason, bound_s", [
    ("refuse", "unreachable: ConnectError", 1.0),
    ("hang", "unreachable: ", 2.0),  # the read times out at fetch_timeout_s
    ("500", "unreachable: ", 2.0),  # the SDK retries 5xx with 1 s + 2 s sleeps: load() stops waiting
    ("401", "rejected: HTTP 401", 1.0),
])
def test_unreachable_langfuse_falls_back_within_the_bounded_wait(langfuse, caplog, mode, reason,
                                                                 bound_s):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse(mode=mode)
    started = time.monotonic()
    prompts = PromptSource(tracker, fetch_timeout_s=1.0).load()
    elapsed = time.monotonic() - started
    assert elapsed < bound_s, f"load() took {elapsed:.2f} s with the host in mode {mode}"
    caption = prompts.caption()
    assert caption.source == BUILT_IN and caption.client is None
    assert caption.reason.startswith(reason), caption.reason
    assert caption.template == DEFAULT_PROMPT_TEMPLATE.replace("{faces}", "{{faces}}")
    lines = prompt_lines(caplog)
    assert len(lines) == 2 and lines[0].startswith(f"Prompt video-caption: built-in ({reason}")
    # Later calls never wait on the host, whatever it does.
    started = time.monotonic()
    for _ in range(100):
        assert prompts.caption().source == BUILT_IN
        assert prompts.summary().template == SYSTEM_PROMPT
    assert time.monotonic() - started < 0.5


# -- after start-up ----------------------------------------------------------------------------
def test_an_expired_prompt_is_refreshed_in_the_background_without_blocking_a_call(langfuse, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse()
    prompts = PromptSource(tracker, cache_ttl_s=0.3).load()
    assert prompts.caption().version == 3
    srv.add_prompt(text_prompt(CAPTION_PROMPT, "Version five.{{faces}}", version=5,
                               labels=["production"]))
    srv.prompt_delay_s = 1.0  # the host is slow now
    time.sleep(0.4)
    started = time.monotonic()
    stale = prompts.caption()  # expired: served at once, refreshed behind it
    assert time.monotonic() - started < 0.25
    assert stale.version == 3
    assert wait_until(lambda: prompts.caption().version == 5, timeout=5)
    assert render_caption(prompts.caption(), "") == "Version five."
    assert "Prompt video-caption: Langfuse version 5 (label production)" in prompt_lines(caplog)


def test_a_host_that_stops_answering_after_start_up_keeps_the_last_good_version(langfuse):
    srv, tracker = langfuse()
    prompts = PromptSource(tracker, cache_ttl_s=0.2, fetch_timeout_s=0.5).load()
    good = prompts.caption()
    assert good.version == 3
    srv.prompt_delay_s = 30.0  # accepts and never answers in time: each fetch times out
    time.sleep(0.3)
    started = time.monotonic()
    assert prompts.caption() is good
    assert time.monotonic() - started < 0.25
    assert wait_until(lambda: prompts.stats()[CAPTION_PROMPT]["failures"] >= 1)
    caption = prompts.caption()
    assert caption.version == 3 and caption.client is good.client and caption.source == LANGFUSE


def test_a_prompt_removed_from_langfuse_goes_back_to_the_built_in_one(langfuse, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.prompts")
    srv, tracker = langfuse()
    prompts = PromptSource(tracker, cache_ttl_s=0.2).load()
    assert prompts.caption().version == 3
    srv.prompts[:] = []  # the label was moved away / the prompt deleted
    time.sleep(0.3)
    prompts.caption()
    assert wait_until(lambda: prompts.caption().source == BUILT_IN)
    assert prompts.caption().reason.startswith("not found:")
    assert "Prompt video-caption: built-in (not found: 'video-caption' has no version labelled " \
           "'production')" in prompt_lines(caplog)


# -- the tracker's get_prompt -----------------------------------------------------------------
def test_tracker_get_prompt_never_raises_and_warns_once_per_prompt(langfuse, caplog):
    caplog.set_level(logging.WARNING, logger="video_summarizer.tracker")
    srv, tracker = langfuse()
    client = tracker.get_prompt(CAPTION_PROMPT, label="production", cache_ttl_s=60,
                                fetch_timeout_s=2)
    assert (client.name, client.version, client.prompt) == (CAPTION_PROMPT, 3, CAPTION_V3)
    # Cached by the SDK for cache_ttl_s: no second request.
    assert tracker.get_prompt(CAPTION_PROMPT, label="production", cache_ttl_s=60) is client
    assert len(srv.prompt_requests(CAPTION_PROMPT)) == 1
    for _ in range(3):
        assert tracker.get_prompt("no-such-prompt", label="production", fetch_timeout_s=2) is None
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "video_summarizer.tracker" and "no-such-prompt" in r.getMessage()]
    assert len(warnings) == 1 and "not found" in warnings[0]
    assert tracker.stats()["warnings"]["prompt:no-such-prompt"] == 3
    reasons: list[str] = []
    assert tracker.get_prompt("no-such-prompt", label="x", on_error=reasons.append) is None
    assert reasons == ["not found: 'no-such-prompt' has no version labelled 'x'"]
    fallback = tracker.get_prompt("no-such-prompt", label="y", fallback="Built in {{faces}}")
    assert fallback.is_fallback and fallback.prompt == "Built in {{faces}}"


def test_fake_server_answers_by_version_and_label_and_404_otherwise():
    with FakeLangfuseServer(prompts=SERVED) as srv:
        base = f"{srv.base_url}/api/public/v2/prompts"
        assert httpx.get(f"{base}/video-caption", params={"version": 2}).json()["version"] == 2
        assert httpx.get(f"{base}/video-caption", params={"label": "latest"}).json()["version"] == 4
        assert httpx.get(f"{base}/video-caption").json()["version"] == 3  # production by default
        assert httpx.get(f"{base}/video-caption", params={"version": 9}).status_code == 404
        assert httpx.get(f"{base}/other", params={"label": "production"}).status_code == 404
        assert [(r["name"], r["label"], r["version"], r["status"]) for r in srv.prompt_requests()] == [
            ("video-caption", None, 2, 200), ("video-caption", "latest", None, 200),
            ("video-caption", None, None, 200), ("video-caption", None, 9, 404),
            ("other", "production", None, 404)]


# -- rendering ---------------------------------------------------------------------------------
def test_templates_with_other_braces_keep_them():
    assert to_mustache("Describe.{faces} Reply as {json} or {{other}}.") == (
        "Describe.{{faces}} Reply as {json} or {{other}}.")
    assert to_mustache("Already {{ faces }} here {faces}") == "Already {{ faces }} here {faces}"
    user = ManagedPrompt(CAPTION_PROMPT, to_mustache("Look {x} {{y}}.{faces} End."))
    assert render_caption(user, " Ann is here.") == "Look {x} {{y}}. Ann is here. End."
    no_placeholder = ManagedPrompt(CAPTION_PROMPT, "Describe {the} frame.")
    assert render_caption(no_placeholder, " Ann is here.") == "Describe {the} frame. Ann is here."
    assert render_caption(no_placeholder, "") == "Describe {the} frame."


@pytest.mark.slow
@pytest.mark.parametrize("label,caption_version", [("production", 3), ("staging", 4)])
def test_cli_uses_the_labelled_prompts_and_links_its_generations(tmp_path, label, caption_version):
    """The CLI on a generated clip: the VLM gets the Langfuse prompt, both generations name its version."""
    import sys

    from tests.cli_runner import (
        CLI,
        TEST_PUBLIC_KEY,
        TEST_SECRET_KEY,
        keyed_cli_env,
        read_events,
        run_here,
    )
    from tests.clips import ClipSet
    from tests.fake_openai import FakeOpenAIServer

    served = [text_prompt("video-caption", "v3 caption.{{faces}}", version=3, labels=["production"]),
              text_prompt("video-caption", "v4 caption: be brief.{{faces}}", version=4, labels=["staging"]),
              text_prompt("video-summary", "v7 summary: cite [mm:ss] times.", version=7,
                          labels=["production", "staging"])]
    with FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY, prompts=served) as lf, \
            FakeOpenAIServer(reply="A man sings on a stage.") as vlm, \
            FakeOpenAIServer(reply="A man sings [00:00].", models=("mistral-test",)) as llm:
        args = [sys.executable, CLI, "--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3",
                "--llm-base-url", llm.base_url, "--llm-model", "mistral-test",
                "--source", str(ClipSet(tmp_path / "clips").numbered(seconds=10.0).path),
                "--no-faces", "--interval", "3", "--min-change", "0",
                "--prompt-label", label, "--trace-log", str(tmp_path / "trace.jsonl")]
        run = run_here(args, keyed_cli_env(tmp_path, lf), timeout=180)
        assert run.returncode == 0, run.stderr
        lf.wait_for(n_spans=1, timeout=5)
        vlm_requests, llm_requests = vlm.requests, llm.requests
    assert f"Prompt video-caption: Langfuse version {caption_version} (label {label})" in run.stderr
    assert f"Prompt video-summary: Langfuse version 7 (label {label})" in run.stderr
    head = "v3 caption." if caption_version == 3 else "v4 caption: be brief."
    texts = [r["messages"][0]["content"][-1]["text"] for r in vlm_requests]
    # frames at 0, 3, 6, 9 s; nobody recognized, so {{faces}} is filled with nothing; the first alone,
    # the others with the frames since the one before: the managed prompt after the clip's framing
    assert texts == [head] + [for_clip(head, D.CLIP_FRAMES_SERVER)] * 3, texts
    assert all("v7 summary: cite [mm:ss] times." in json.dumps(r) for r in llm_requests)
    for name, version in (("vlm_caption", caption_version), ("llm_summary", 7)):
        gens = [s for s in lf.spans if s["name"] == name
                and s["attributes"].get("langfuse.observation.type") == "generation"]
        assert gens, name
        for gen in gens:
            assert gen["attributes"]["langfuse.observation.prompt.version"] == version
            assert gen["attributes"]["langfuse.observation.prompt.name"] == name.replace(
                "vlm_caption", "video-caption").replace("llm_summary", "video-summary")
    logged = [r for r in read_events(tmp_path / "trace.jsonl") if r.get("type") == "generation"]
    assert {(r["name"], r["prompt_version"]) for r in logged} == {("vlm_caption", caption_version),
                                                                  ("llm_summary", 7)}
