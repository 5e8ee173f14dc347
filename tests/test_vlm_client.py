"""VLMClient against a local server speaking the OpenAI streaming protocol (tests/fake_openai.py)."""
from __future__ import annotations

import base64
import os
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from tests.fake_openai import FakeOpenAIServer
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.openai_stream import split_thinking
from video_summarizer.results import CaptionResult
from vlm_client_module import DEFAULT_BASE_URL, VLMClient, prepare_image

REPLY = "A man speaks at a podium."  # six streamed chunks


def _frame(w: int = 1280, h: int = 720) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[h // 4: h // 2, w // 4: w // 2] = (0, 0, 255)  # a red block: easy to find after decoding
    return frame


def _client(srv: FakeOpenAIServer, **kw) -> VLMClient:
    return VLMClient(base_url=srv.base_url, api_key="test-key", model="qwen3", **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ttft_is_first_chunk_time_not_response_time() -> None:
    # gap: wide enough that a loaded machine cannot blur the first chunk into the later ones
    delay, gap = 0.25, 0.1
    with FakeOpenAIServer(REPLY, first_chunk_delay=delay, chunk_delay=gap, prompt_tokens=77) as srv:
        vlm = _client(srv)
        vlm.check()  # what the CLI does first; also warms the connection
        results = [vlm.generate_caption(_frame(), vlm.build_prompt(["obama"])) for _ in range(3)]
    for res in results:
        assert isinstance(res, CaptionResult)
        assert res.success, res.error
        assert res.caption == REPLY
        assert res.start_time < res.completion_start_time < res.end_time
        # Headers and the empty role chunk come at once; the first token `delay` later.
        assert delay * 1000 - 5 <= res.ttft_ms <= (delay + 1.5 * gap) * 1000, res.ttft_ms
        # Five more chunks `gap` apart come after the first one.
        assert res.end_time - res.completion_start_time >= 5 * gap - 0.005
        assert res.api_time == pytest.approx(res.latency_ms)
        assert res.input_tokens == 77 and res.output_tokens == 6
        assert res.usage_details() == {"input": 77, "output": 6}
        assert res.model == "qwen3" and res.error is None and res.error_kind is None
        assert res.metadata["attempts"] == 1 and res.metadata["finish_reason"] == "stop"
        assert res.image_prep_ms > 0
    assert vlm.stats.requests == 3 and vlm.stats.successes == 3
    ttft = vlm.stats.as_dict()["ttft_ms"]
    assert delay * 1000 - 5 <= ttft["p50"] <= (delay + 1.5 * gap) * 1000


def test_request_carries_a_resized_jpeg_and_the_prompt() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        vlm = _client(srv, image_max_side=768, jpeg_quality=70, max_tokens=99, temperature=0.1)
        prompt = vlm.build_prompt(["obama", "biden"])
        res = vlm.generate_caption(_frame(1280, 720), prompt)
        body = srv.requests[0]
    assert res.success and res.prompt == prompt
    assert body["model"] == "qwen3" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 99 and body["temperature"] == 0.1
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": prompt}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (432, 768, 3)
    assert tuple(int(v) for v in img[150, 250]) == pytest.approx((0, 0, 255), abs=12)  # still red, BGR kept
    assert res.metadata["image_size"] == [768, 432]


def test_usage_on_finish_chunk_and_no_done() -> None:
    with FakeOpenAIServer(REPLY, usage="finish_chunk", send_done=False, prompt_tokens=5) as srv:
        res = _client(srv).generate_caption(_frame(), "Describe.")
    assert res.success and res.caption == REPLY
    assert (res.input_tokens, res.output_tokens) == (5, 6)
    assert res.latency_ms < 2000


def test_server_rejecting_stream_options_is_asked_without_it_from_then_on() -> None:
    with FakeOpenAIServer(REPLY, usage="finish_chunk", reject_stream_options=True, prompt_tokens=9) as srv:
        vlm = _client(srv)
        first = vlm.generate_caption(_frame(), "Describe.")
        second = vlm.generate_caption(_frame(), "Describe.")
        bodies = srv.requests
    assert first.success and second.success and second.caption == REPLY
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    assert (second.input_tokens, second.output_tokens) == (9, 6)


def test_no_usage_leaves_counts_unknown() -> None:
    with FakeOpenAIServer(REPLY, usage=None) as srv:
        res = _client(srv).generate_caption(_frame(), "Describe.")
    assert res.success and res.caption == REPLY
    assert res.input_tokens is None and res.output_tokens is None and res.usage_details() is None


def test_think_block_is_stripped_and_counts_as_first_token() -> None:
    # the answer's first chunk comes 8 chunks (0.8 s) after the first reasoning chunk
    with FakeOpenAIServer(REPLY, think="The user wants a caption.", first_chunk_delay=0.2,
                          chunk_delay=0.1) as srv:
        res = _client(srv).generate_caption(_frame(), "Describe.")
    assert res.success and res.caption == REPLY
    assert "think" not in res.caption and "user wants" not in res.caption
    assert res.metadata["reasoning_chars"] == len("The user wants a caption.")
    assert 195 <= res.ttft_ms <= 350, res.ttft_ms  # the first reasoning token is the first token


@pytest.mark.parametrize("field", [True, "reasoning"])
def test_reasoning_field_is_not_the_caption(field) -> None:
    with FakeOpenAIServer(REPLY, think="Looking closely.", reasoning_field=field, first_chunk_delay=0.2,
                          chunk_delay=0.15) as srv:  # the answer's first chunk: 0.3 s after the first
        res = _client(srv).generate_caption(_frame(), "Describe.")
    assert res.success and res.caption == REPLY
    assert res.metadata["reasoning_chars"] == len("Looking closely.")
    assert 195 <= res.ttft_ms <= 350, res.ttft_ms


def test_reply_that_is_only_reasoning_is_a_failure() -> None:
    with FakeOpenAIServer(REPLY, think="one two three four five six seven") as srv:
        res = _client(srv, max_tokens=5).generate_caption(_frame(), "Describe.")
    assert not res.success and res.caption == ""
    assert res.error_kind == "bad_response" and "max_tokens" in res.error
    assert res.metadata["finish_reason"] == "length"


@pytest.mark.parametrize("raw,answer,reasoning", [
    ("<think>a b</think>\n\nA dog.", "A dog.", "a b"),
    ("a b</think>A dog.", "A dog.", "a b"),  # template opened <think> in the prompt
    ("<think>never closed", "", "never closed"),
    ("Just a caption.", "Just a caption.", ""),
])
def test_split_thinking(raw, answer, reasoning) -> None:
    assert split_thinking(raw) == (answer, reasoning)


def test_retries_503_then_succeeds() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.fail_next(status=503, n=2)
        vlm = _client(srv)
        res = vlm.generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 3
    assert res.success and res.caption == REPLY
    assert res.metadata["attempts"] == 3
    assert vlm.stats.requests == 1 and vlm.stats.successes == 1


def test_429_honours_retry_after_over_backoff() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.fail_next(status=429, n=1, headers={"Retry-After": "1.5"})
        # The client's own backoff before a first retry is at most 0.5 s: a 1.5 s gap is Retry-After.
        res = _client(srv).generate_caption(_frame(), "Describe.")
        times = srv.request_times
    assert res.success and res.metadata["attempts"] == 2
    assert 1.5 <= times[1] - times[0] < 2.5


def test_retries_are_bounded() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.fail_next(status=502, n=10)
        vlm = _client(srv, max_retries=2)
        res = vlm.generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 3
    assert not res.success and res.error_kind == "server_error"
    assert "502" in res.error and "3 attempts" in res.error
    assert vlm.stats.failures["server_error"] == 1


@pytest.mark.parametrize("status,kind", [(400, "client_error"), (401, "client_error"), (404, "client_error")])
def test_no_retry_on_4xx(status, kind) -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.fail_next(status=status, n=1)
        res = _client(srv).generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 1
    assert not res.success and res.error_kind == kind and str(status) in res.error
    assert res.completion_start_time is None and res.ttft_ms is None


def test_timeout_is_respected_and_not_retried() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.set_mode("hang")
        t0 = time.time()
        res = _client(srv, timeout_s=0.5, max_retries=3).generate_caption(_frame(), "Describe.")
        elapsed = time.time() - t0
        assert len(srv.requests) == 1
    assert not res.success and res.error_kind == "timeout"
    assert 0.45 <= elapsed < 1.5
    assert 450 <= res.latency_ms < 1500


def test_slow_trickle_hits_the_per_request_deadline() -> None:
    with FakeOpenAIServer(REPLY, chunk_delay=0.25) as srv:
        res = _client(srv, timeout_s=0.6).generate_caption(_frame(), "Describe.")
    assert not res.success and res.error_kind == "timeout"
    assert "partial text" in res.error and res.caption == ""
    assert res.latency_ms < 1200


def test_stream_cut_midway_is_a_failure_with_partial_text() -> None:
    with FakeOpenAIServer(REPLY, chunk_delay=0.01) as srv:
        srv.set_mode("cut")
        vlm = _client(srv)
        res = vlm.generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 1  # tokens had arrived: no retry
    assert not res.success and res.caption == ""
    assert res.error_kind == "stream_broken"
    assert "A man speaks" in res.error
    assert res.completion_start_time is not None
    assert vlm.stats.failures["stream_broken"] == 1


def test_garbage_stream_is_a_bad_response() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.set_mode("garbage")
        res = _client(srv).generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 1
    assert not res.success and res.error_kind == "bad_response"


def test_an_error_event_in_a_200_stream_is_a_server_error_with_its_message() -> None:
    with FakeOpenAIServer(REPLY) as srv:
        srv.set_mode("stream_error")
        res = _client(srv).generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 1  # a 200 answer: not retried
    assert not res.success and res.error_kind == "server_error"
    assert res.error == "server error in stream: model overloaded" and res.caption == ""


def test_connection_refused_is_retried_then_reported() -> None:
    vlm = VLMClient(base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=2)
    res = vlm.generate_caption(_frame(), "Describe.")
    assert not res.success and res.error_kind == "connection"
    assert res.metadata["attempts"] == 3 and "3 attempts" in res.error


def test_concurrent_requests_are_served_in_parallel() -> None:
    with FakeOpenAIServer(REPLY, first_chunk_delay=0.3, reply_fn=lambda b: b["messages"][0]["content"][1]["text"]) as srv:
        vlm = _client(srv)
        results: dict[int, CaptionResult] = {}

        def work(i: int) -> None:
            results[i] = vlm.generate_caption(_frame(320, 240), f"frame {i}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - t0
    assert {i: r.caption for i, r in results.items()} == {i: f"frame {i}" for i in range(4)}
    assert elapsed < 1.0  # four 0.3 s requests overlapped
    assert vlm.stats.successes == 4


# -- health check ----------------------------------------------------------------------------
def test_check_refused_port_names_url_and_command() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendUnavailable) as info:
        VLMClient(base_url=url).check()
    msg = str(info.value)
    assert info.value.option == "--vlm-base-url"
    assert url in msg and "Connection refused" in msg
    assert "vllm serve Qwen/Qwen3-VL-8B-Instruct" in msg and "VLM_BASE_URL" in msg


def test_check_unknown_model_lists_what_the_server_has() -> None:
    with FakeOpenAIServer(models=["llava-tiny", "qwen2.5-vl"]) as srv:
        with pytest.raises(BackendUnavailable) as info:
            _client(srv).check()
    msg = str(info.value)
    assert info.value.option == "--vlm-model"
    assert "'qwen3'" in msg and "llava-tiny, qwen2.5-vl" in msg and "VLM_MODEL" in msg


def test_check_wrong_path_says_v1() -> None:
    with FakeOpenAIServer() as srv:
        with pytest.raises(BackendUnavailable) as info:
            VLMClient(base_url=srv.base_url.removesuffix("/v1")).check()
    assert info.value.option == "--vlm-base-url" and "/v1" in str(info.value)


def test_check_bad_key_names_the_variable_not_the_key() -> None:
    with FakeOpenAIServer(api_key="right-key") as srv:
        with pytest.raises(BackendUnavailable) as info:
            VLMClient(base_url=srv.base_url, api_key="wrong-secret").check()
    assert "VLM_API_KEY" in str(info.value) and "wrong-secret" not in str(info.value)


def test_check_accepts_ollama_latest_tag_and_warms_up() -> None:
    with FakeOpenAIServer(models=["qwen3-vl:latest"]) as srv:
        VLMClient(base_url=srv.base_url, model="qwen3-vl").check()
        assert srv.model_list_hits == 1


def test_config_from_environment(monkeypatch) -> None:
    with FakeOpenAIServer(models=["env-model"], api_key="env-secret") as srv:
        monkeypatch.setenv("VLM_BASE_URL", srv.base_url)
        monkeypatch.setenv("VLM_MODEL", "env-model")
        monkeypatch.setenv("VLM_API_KEY", "env-secret")
        vlm = VLMClient.from_env(os.environ)
        vlm.check()
        res = vlm.generate_caption(_frame(), "Describe.")
    assert vlm.base_url == srv.base_url and vlm.model == "env-model"
    assert VLMClient().base_url == DEFAULT_BASE_URL  # the constructor reads no environment
    assert res.success and res.model == "env-model"
    assert "env-secret" not in repr(vlm)


def test_defaults_without_environment(monkeypatch) -> None:
    for name in ("VLM_BASE_URL", "VLM_MODEL", "VLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    vlm = VLMClient()
    assert (vlm.base_url, vlm.model) == ("http://localhost:8000/v1", "qwen3")


# -- prompt and image ------------------------------------------------------------------------
def test_prompt_names_faces_once_and_only_when_present() -> None:
    vlm = VLMClient()
    assert "recognized" not in vlm.build_prompt([])
    prompt = vlm.build_prompt(["obama", "biden", "obama", ""])
    assert prompt.count("obama") == 1 and "obama, biden" in prompt


def test_custom_prompt_template() -> None:
    with_slot = VLMClient(prompt_template="Caption this {json: 1}.{faces} Be brief.")
    assert with_slot.build_prompt(["lin"]) == (
        "Caption this {json: 1}. The people recognized in the frame are: lin. Refer to them by name. Be brief.")
    assert with_slot.build_prompt([]) == "Caption this {json: 1}. Be brief."
    without_slot = VLMClient(prompt_template="Caption this.")
    assert without_slot.build_prompt(["lin"]).startswith("Caption this. The people recognized")


def test_prepare_image_never_upscales_and_takes_gray() -> None:
    small = prepare_image(_frame(320, 240), 768, 85)
    assert (small.width, small.height) == (320, 240)
    gray = prepare_image(np.full((1000, 500), 128, np.uint8), 500, 85)
    assert (gray.width, gray.height) == (250, 500)
    with pytest.raises(ValueError):
        prepare_image(np.zeros((0, 0, 3), np.uint8), 768, 85)


# -- a web page where the API should be ------------------------------------------------------
def test_check_of_a_server_answering_html_says_so() -> None:
    with FakeOpenAIServer() as srv:
        srv.set_mode("html")
        with pytest.raises(BackendUnavailable) as info:
            _client(srv).check()
        assert srv.model_list_hits == 1  # one request: the check does not retry
    msg = str(info.value)
    assert info.value.option == "--vlm-base-url"
    assert "answered text/html, not an OpenAI-compatible API: is --vlm-base-url right?" in msg
    assert "AttributeError" not in msg


def test_caption_from_a_server_answering_html_is_a_clear_failed_result() -> None:
    with FakeOpenAIServer() as srv:
        srv.set_mode("html")
        vlm = _client(srv)
        res = vlm.generate_caption(_frame(), "Describe.")
        assert len(srv.requests) == 1  # a 200 is not retried
    assert not res.success and res.error_kind == "bad_response" and res.caption == ""
    assert res.error == "the server answered text/html, not an OpenAI-compatible API: is --vlm-base-url right?"
    assert vlm.stats.failures["bad_response"] == 1


def test_both_caption_backends_are_caption_models() -> None:
    from video_summarizer.backends import CaptionModel
    from video_summarizer.models.local_vlm import LocalVLM

    for backend, name in ((VLMClient(model="m"), "m"), (LocalVLM("unused"), "unused")):
        assert isinstance(backend, CaptionModel)
        assert backend.name == name
        assert "lin" in backend.build_prompt(["lin"])

    class Minimal(CaptionModel):  # the one required method; the base supplies the rest
        def generate_caption(self, frame, prompt):
            return CaptionResult(text=prompt, success=True, model="minimal", start_time=0.0, end_time=1.0)

    minimal = Minimal()
    minimal.check(), minimal.load(), minimal.close()  # no-ops, no AttributeError
    assert minimal.name == "Minimal" and minimal.stats is None
    assert minimal.build_prompt(["lin"]) == VLMClient().build_prompt(["lin"])
    with pytest.raises(TypeError, match="generate_caption"):
        type("NoCaption", (CaptionModel,), {})()  # the required method is enforced
