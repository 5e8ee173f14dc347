"""LLMSummarizer on a tiny random MistralForCausalLM loaded by path, and on the fake OpenAI server."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm_summarizer import LLMSummarizer, fold_system, resolve_dtype
from tests.fake_openai import FakeOpenAIServer
from tests.tiny_models import build_tiny_llava, build_tiny_mistral, slowed_forward
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.hf import dtype_reason
from video_summarizer.prompts import SYSTEM_PROMPT
from video_summarizer.results import SummaryResult, TimedCaption
from video_summarizer.timecodes import format_video_time

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = [
    TimedCaption(1.0, "A man speaks at a podium.", ("obama",)),
    TimedCaption(3.0, "A man speaks at a podium.", ("obama",)),
    TimedCaption(5.2, "Two people shake hands on stage.", ("obama", "biden")),
    TimedCaption(65.9, "The crowd applauds."),
]


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory) -> Path:
    """A tiny Mistral with Mistral's chat template (no system role)."""
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="module")
def system_dir(tmp_path_factory) -> Path:
    """A tiny Mistral whose chat template accepts a system message."""
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral-sys"), system_role=True)


@pytest.fixture(scope="module")
def llm(mistral_dir) -> LLMSummarizer:
    summarizer = LLMSummarizer(str(mistral_dir), max_new_tokens=8)
    summarizer.load()
    return summarizer


def _template_ids(tokenizer, messages) -> list[int]:
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def test_timings_are_ordered_and_counts_are_real(llm, mistral_dir) -> None:
    before = llm.stats.requests
    res = llm.update_summary(CAPTIONS, "People gathered in a hall.")
    assert isinstance(res, SummaryResult)
    assert res.success, res.error
    assert res.summary == res.text and res.summary.strip()
    assert res.start_time < res.generation_start_time < res.completion_start_time < res.end_time
    assert res.model == str(mistral_dir)
    # The tiny model never picks EOS, so it writes exactly max_new_tokens.
    assert res.output_tokens == 8
    messages = llm.build_messages(CAPTIONS, "People gathered in a hall.")
    assert res.input_tokens == len(_template_ids(llm.tokenizer, fold_system(messages)))
    assert res.usage_details() == {"input": res.input_tokens, "output": 8}
    assert res.metadata["backend"] == "local" and res.metadata["device"] == "cpu"
    assert llm.stats.requests == before + 1 and llm.stats.successes >= 1


def test_completion_start_is_the_first_tokens_real_time(llm) -> None:
    """Each decoding step is slowed down: the stamp must follow the first step, not the text."""
    step = 0.15
    with slowed_forward(llm.hf_model, step) as forward_ends:
        res = llm.generate(llm.build_messages(CAPTIONS, None))
    assert res.success, res.error
    assert len(forward_ends) == 8  # prefill + 7 decoding steps for 8 tokens
    # The first token is chosen right after the first forward pass and before the second.
    # (Relative bounds only: on a busy 2-core machine a forward pass itself can take 300 ms.)
    assert 0 <= res.completion_start_time - forward_ends[0] < step
    assert res.completion_start_time < forward_ends[1]
    assert res.completion_start_time - res.generation_start_time >= step
    assert res.ttft_ms < (forward_ends[1] - res.start_time) * 1000
    # The remaining 7 steps come after it: a "first text chunk" or "+0.01 s" stamp would not fit.
    assert res.end_time - res.completion_start_time >= 7 * step - 0.01
    assert res.end_time >= forward_ends[-1]


def test_mistral_template_rejects_system_so_it_is_folded(llm) -> None:
    with pytest.raises(Exception, match="System role not supported"):
        llm.tokenizer.apply_chat_template(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], tokenize=False)
    res = llm.final_summary(CAPTIONS, None)
    assert res.success and res.metadata["system_folded"] is True


def test_template_with_system_role_keeps_it(system_dir) -> None:
    llm = LLMSummarizer(str(system_dir), max_new_tokens=3)
    messages = llm.build_messages(CAPTIONS, None)
    res = llm.generate(messages)
    assert res.success and res.metadata["system_folded"] is False
    assert res.input_tokens == len(_template_ids(llm.tokenizer, messages))
    rendered = llm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<<SYS>>\n" + SYSTEM_PROMPT in rendered


def test_prompt_stays_within_budget_however_long_the_run(mistral_dir) -> None:
    # 1300: the tiny tokenizer takes ~1.4 characters a token (Mistral's ~4), so the data framing
    # (tags, the note that captions are not instructions) costs it ~120 tokens.
    llm = LLMSummarizer(str(mistral_dir), max_new_tokens=2, prompt_token_budget=1300)
    captions = [TimedCaption(i * 2.0, f"Scene {i}: a man speaks at a podium while people listen.", ("obama",))
                for i in range(2000)]
    captions.append(TimedCaption(4000.0, "A very long caption. " * 500))
    res = llm.update_summary(captions, "Earlier the crowd waved. " * 400)
    assert res.success, res.error
    assert 1170 <= res.input_tokens <= 1300  # filled, not exceeded
    user = llm.build_messages(captions, "Earlier the crowd waved. " * 400)[1]["content"]
    assert '[66:40] "A very long caption.' in user and user.count("A very long caption.") < 200
    assert '…"\n</observations>' in user  # cut before it was quoted: its quote still closes
    assert '[66:38] "Scene 1999:' in user  # the newest captions are kept...
    assert "Scene 0:" not in user  # ...the oldest give way, and the prompt says so
    assert "earlier caption lines omitted" in user
    assert "…" in user  # the previous summary was cut to its share


def test_messages_format_times_faces_and_repeats(llm) -> None:
    messages = llm.build_messages(list(reversed(CAPTIONS)), "Earlier summary.")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Summary so far:\n<summary>\nEarlier summary.\n</summary>" in user
    lines = [line for line in user.splitlines() if line.startswith("[")]
    assert lines == [
        '[00:01-00:03] "A man speaks at a podium." [faces: obama]',  # a repeat became a range
        '[00:05] "Two people shake hands on stage." [faces: obama, biden]',
        '[01:05] "The crowd applauds."',
    ]
    assert user.split("<observations>\n", 1)[1].split("\n</observations>", 1)[0].splitlines() == lines
    assert "People recognized in these captions: biden, obama." in user
    assert user.endswith("Write the updated summary of the video so far.")
    final = llm.build_messages(CAPTIONS, None, final=True)[1]["content"]
    assert "(none yet" in final and final.endswith("Write the final summary of the whole video.")


@pytest.mark.parametrize("seconds,text", [(0, "00:00"), (65.9, "01:05"), (3725, "62:05"), (3723, "62:03"),
                                          (-1, "00:00")])
def test_format_video_time(seconds, text) -> None:
    assert format_video_time(seconds) == text


def test_timeout_stops_generation(mistral_dir) -> None:
    llm = LLMSummarizer(str(mistral_dir), max_new_tokens=100, timeout_s=0.5)
    llm.load()
    with slowed_forward(llm.hf_model, 0.1) as calls:
        t0 = time.time()
        res = llm.update_summary(CAPTIONS, None)
        elapsed = time.time() - t0
        n_calls = len(calls)
        time.sleep(0.3)
        assert len(calls) <= n_calls + 1  # the worker stopped instead of running 100 steps
    assert not res.success and res.error_kind == "timeout" and "partial text" in res.error
    assert 0.5 <= elapsed < 1.5
    assert res.completion_start_time is not None and 0 < res.output_tokens < 100


def test_missing_folder_and_uncached_hub_id_are_actionable(tmp_path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        LLMSummarizer(str(tmp_path / "nope")).load()
    assert info.value.option == "--llm-model" and "does not exist" in str(info.value)
    # A hub id that no cache holds (conftest sets HF_HUB_OFFLINE=1: nothing is fetched).
    with pytest.raises(BackendUnavailable) as info:
        LLMSummarizer("mistralai/no-such-model-for-tests").check()
    msg = str(info.value)
    assert info.value.option == "--llm-model"
    assert "hf download mistralai/no-such-model-for-tests" in msg and "LLM_BASE_URL" in msg


def test_dtype_resolution() -> None:
    import torch

    assert resolve_dtype("auto", "cpu", cpu_flags=()) is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("auto", "mps") is torch.float16
    with pytest.raises(BackendUnavailable):
        resolve_dtype("float13", "cpu")


def test_concurrent_calls_share_one_model(llm) -> None:
    results: list[SummaryResult] = []
    threads = [threading.Thread(target=lambda: results.append(llm.update_summary(CAPTIONS[:1], None)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r.success and r.output_tokens == 8 for r in results)


# -- OpenAI-compatible backend -------------------------------------------------------------
def test_api_backend_streams_with_real_ttft() -> None:
    reply = "Obama speaks at a podium, then shakes hands with Biden."
    with FakeOpenAIServer(reply, first_chunk_delay=0.2, chunk_delay=0.1,
                          models=["mistralai/Mistral-7B-Instruct-v0.3"], prompt_tokens=321) as srv:
        llm = LLMSummarizer(base_url=srv.base_url, max_new_tokens=50)
        assert llm.backend == "api"
        llm.check()
        res = llm.update_summary(CAPTIONS, None)
        body = srv.requests[0]
    assert res.success and res.summary == reply
    assert 195 <= res.ttft_ms <= 350, res.ttft_ms  # the next token comes 100 ms after the first
    assert res.start_time == res.generation_start_time < res.completion_start_time < res.end_time
    assert (res.input_tokens, res.output_tokens) == (321, 10)
    assert res.metadata["system_folded"] is True
    # Mistral's template has no system role: the instructions travel in the user turn.
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].startswith(SYSTEM_PROMPT)
    assert body["max_tokens"] == 50 and body["stream"] is True
    assert llm.stats.successes == 1


def test_api_backend_from_env_and_check_messages(monkeypatch) -> None:
    with FakeOpenAIServer(models=["other-model"]) as srv:
        monkeypatch.setenv("LLM_BASE_URL", srv.base_url)
        assert LLMSummarizer("mistral").backend == "local"  # the constructor reads no environment
        llm = LLMSummarizer.from_env(os.environ, "mistral")
        with pytest.raises(BackendUnavailable) as info:
            llm.check()
    assert info.value.option == "--llm-model" and "'mistral'" in str(info.value) and "other-model" in str(info.value)
    port = srv.port  # closed now: refused
    with pytest.raises(BackendUnavailable) as info:
        LLMSummarizer(base_url=f"http://127.0.0.1:{port}/v1").check()
    assert info.value.option == "--llm-base-url"
    assert "vllm serve mistralai/Mistral-7B-Instruct-v0.3" in str(info.value)


def test_api_backend_stream_cut_is_a_failure() -> None:
    with FakeOpenAIServer("one two three four", models=["m"]) as srv:
        srv.set_mode("cut")
        res = LLMSummarizer("m", base_url=srv.base_url).update_summary(CAPTIONS, None)
    assert not res.success and res.error_kind == "stream_broken" and "one two" in res.error


def test_importing_the_clients_loads_no_heavy_library() -> None:
    code = ("import sys, llm_summarizer, vlm_client_module, video_summarizer.models.openai_stream; "
            "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tiny_llava_builds_offline_and_captions_an_image_by_path(tmp_path) -> None:
    import numpy as np
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build_tiny_llava(tmp_path / "tiny-llava")
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<s>[INST] <image>\nDescribe. [/INST]"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    enc = processor(images=image, text=prompt, return_tensors="pt")
    assert tuple(enc["pixel_values"].shape) == (1, 3, 32, 32)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    new = processor.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4 and new.strip()


# -- the boundary: two backends behind one class; check() cheap; load() its own step -----------
def test_one_class_two_backends_no_switch_per_call(mistral_dir) -> None:
    from llm_summarizer import LocalBackend, ServerBackend
    from video_summarizer.backends import SummaryModel

    local = LLMSummarizer(str(mistral_dir))
    served = LLMSummarizer("m", base_url="http://127.0.0.1:1/v1")
    assert isinstance(local._backend, LocalBackend) and isinstance(served._backend, ServerBackend)
    assert (local.backend, served.backend) == ("local", "api")
    for llm in (local, served):
        assert isinstance(llm, SummaryModel)
    local.check()  # the folder holds config.json: nothing loads
    assert local.hf_model is None and local.tokenizer is None
    # A served model estimates, as the base class's build_messages does for a model without one.
    assert (served.device, served.tokenizer, served.hf_model) == ("server", None, None)
    messages = served.build_messages(CAPTIONS, None)

    class Minimal(SummaryModel):
        def generate(self, messages):
            raise AssertionError("not called")

    assert Minimal().build_messages(CAPTIONS, None) == messages
    assert served.build_messages(CAPTIONS, None, system_prompt=None) == messages


def test_server_answering_html_is_a_clear_failure() -> None:
    with FakeOpenAIServer(models=["m"]) as srv:
        srv.set_mode("html")
        llm = LLMSummarizer("m", base_url=srv.base_url)
        with pytest.raises(BackendUnavailable) as info:
            llm.check()
        res = llm.update_summary(CAPTIONS, None)
    assert info.value.option == "--llm-base-url" and "answered text/html" in str(info.value)
    assert "is --llm-base-url right?" in str(info.value)
    assert not res.success and res.error_kind == "bad_response"
    assert res.error == "the server answered text/html, not an OpenAI-compatible API: is --llm-base-url right?"


def test_uncached_hub_id_with_the_hub_unreachable_fails_in_seconds(tmp_path) -> None:
    import json
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: refused
    code = ("import json, logging, time; logging.basicConfig(level=logging.INFO)\n"
            "from llm_summarizer import LLMSummarizer\n"
            "from video_summarizer.errors import BackendUnavailable\n"
            "t0 = time.monotonic()\n"
            "try:\n"
            "    llm = LLMSummarizer('mistralai/not-cached-for-tests'); llm.check(); llm.load(); out = {}\n"
            "except BackendUnavailable as exc:\n"
            "    out = {'option': exc.option, 'message': str(exc)}\n"
            "out['seconds'] = time.monotonic() - t0\n"
            "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "empty-home"))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result.get("option") == "--llm-model", result
    assert "hf download mistralai/not-cached-for-tests" in result["message"] and "LLM_BASE_URL" in result["message"]
    assert "cannot be reached: Connection refused" in result["message"] and "\n" not in result["message"]
    assert result["seconds"] < 5.0, result
    assert out.stderr.strip() == "", out.stderr  # one message, no retries, nothing twice


def test_generation_defaults_from_the_model_files_raise_no_warning(tmp_path, capfd) -> None:
    import json

    folder = build_tiny_mistral(tmp_path / "tiny-mistral-gc")
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(max_length=64, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    (folder / "generation_config.json").write_text(json.dumps(config))
    llm = LLMSummarizer(str(folder), max_new_tokens=4)
    llm.load()
    capfd.readouterr()
    results = [llm.update_summary(CAPTIONS, None) for _ in range(2)]
    err = capfd.readouterr().err
    assert all(r.success and r.output_tokens == 4 for r in results), [r.error for r in results]
    # Before: "Both `max_new_tokens` (=4) and `max_length`(=64) seem to have been set" on every call.
    assert "max_length" not in err and "generation flags" not in err and "maximum length" not in err, err


def test_load_is_its_own_step_with_its_progress_lines(mistral_dir, caplog) -> None:
    llm = LLMSummarizer(str(mistral_dir), max_new_tokens=2)
    with caplog.at_level(logging.INFO, logger="video_summarizer"):
        llm.check()
        assert caplog.messages == [] and llm.hf_model is None  # check() loads and says nothing
        llm.load()
        llm.load()  # once
    assert caplog.messages[0] == f"Loading summary model {mistral_dir} on cpu ..."
    assert caplog.messages[1].startswith(f"Summary model {mistral_dir} ready in ")
    why = dtype_reason("auto", "cpu", resolve_dtype("auto", "cpu"))  # this CPU's: bfloat16 with AMX or AVX512-BF16
    assert caplog.messages[1].endswith(f" s (cpu, {why})") and len(caplog.messages) == 2
    assert llm.device == "cpu" and llm.hf_model is not None
