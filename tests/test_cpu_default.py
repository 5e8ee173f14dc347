"""The in-process models' default on a CPU: bfloat16 where the CPU has bfloat16 instructions, and for
the caption model fewer visual tokens and a one- or two-sentence budget; the ready line says what and why.

The CPU's flags are passed in (the code reads /proc/cpuinfo only when given none), so each case
runs on any machine; the tiny random LLaVA goes through the real loading and generation code.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.tiny_models import build_tiny_llava
from video_summarizer import defaults as D
from video_summarizer.models.hf import cpu_bfloat16_feature, dtype_reason, read_cpu_flags, resolve_dtype
from video_summarizer.models.local_vlm import LocalVLM

ZEN4 = {"fpu", "avx2", "avx512f", "avx512_bf16"}  # this machine's kind: AVX512-BF16, no AMX
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
OLD_X86 = {"fpu", "sse4_2", "avx2", "fma"}


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("cpu-default") / "tiny-llava")


def frame_480x360() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)


@pytest.mark.parametrize("flags, dtype, why", [
    (SAPPHIRE_RAPIDS, torch.bfloat16, "bfloat16 (AMX)"),
    (ZEN4, torch.bfloat16, "bfloat16 (AVX512-BF16)"),
    (OLD_X86, torch.float32, "float32 (no AMX or AVX512-BF16 on this CPU)"),
    (set(), torch.float32, "float32 (no AMX or AVX512-BF16 on this CPU)"),
])
def test_auto_on_a_cpu_is_bfloat16_only_with_bfloat16_instructions(flags, dtype, why):
    assert resolve_dtype("auto", "cpu", flags) is dtype
    assert dtype_reason("auto", "cpu", dtype, flags) == why


def test_an_asked_dtype_and_the_other_devices_ignore_the_cpu_flags():
    assert resolve_dtype("float32", "cpu", ZEN4) is torch.float32
    assert dtype_reason("float32", "cpu", torch.float32, ZEN4) == "float32"
    assert resolve_dtype("bfloat16", "cpu", OLD_X86) is torch.bfloat16
    assert resolve_dtype("auto", "mps", ZEN4) is torch.float16
    assert dtype_reason("auto", "mps", torch.float16, ZEN4) == "float16"


def test_the_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert read_cpu_flags(str(cpuinfo)) == frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})
    assert read_cpu_flags(str(tmp_path / "absent")) == frozenset()  # macOS, Windows: float32
    assert cpu_bfloat16_feature(read_cpu_flags(str(cpuinfo))) == "AVX512-BF16"


@pytest.mark.parametrize("flags, dtype, ready", [
    (ZEN4, torch.bfloat16, "(cpu, bfloat16 (AVX512-BF16))"),
    (OLD_X86, torch.float32, "(cpu, float32 (no AMX or AVX512-BF16 on this CPU))"),
])
def test_the_ready_line_names_the_dtype_and_why(llava_dir, caplog, flags, dtype, ready):
    vlm = LocalVLM(str(llava_dir), device="cpu", cpu_flags=flags)
    with caplog.at_level(logging.INFO, logger="video_summarizer.models.hf"):
        vlm.load()
    assert vlm.hf_model.dtype is dtype
    lines = [r.getMessage() for r in caplog.records if " ready in " in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"Caption model {llava_dir} ready in ")
    assert lines[0].endswith(ready)


def test_on_a_cpu_the_processor_gets_a_smaller_frame_and_the_caption_a_shorter_budget(llava_dir, caplog):
    vlm = LocalVLM(str(llava_dir), device="cpu", cpu_flags=ZEN4)
    with caplog.at_level(logging.INFO, logger="video_summarizer.models.local_vlm"):
        res = vlm.generate_caption(frame_480x360(), vlm.build_prompt([]))
    assert res.success, res.error
    # 480x360 scaled to 320 px on its long side before the processor; the tiny model never picks EOS
    assert res.metadata["image_size"] == [D.VLM_CPU_IMAGE_MAX_SIDE, 240] == [320, 240]
    assert res.output_tokens == D.VLM_CPU_MAX_TOKENS == 48 and res.metadata["finish_reason"] == "length"
    assert "frames at most 320 px a side, captions at most 48 tokens (--vlm-max-tokens)" in caplog.text


def test_what_was_asked_wins_over_the_cpu_budget(llava_dir):
    vlm = LocalVLM(str(llava_dir), device="cpu", cpu_flags=ZEN4, max_new_tokens=5, image_max_side=400)
    res = vlm.generate_caption(frame_480x360(), vlm.build_prompt([]))
    assert res.success, res.error
    assert res.metadata["image_size"] == [400, 300] and res.output_tokens == 5


def test_the_cli_default_leaves_the_budget_to_the_backend(llava_dir):
    """--vlm-max-tokens unset: 48 tokens in process on a CPU, 256 for a server; set, it is what is used."""
    from video_summarizer.app.assembly import caption_model
    from video_summarizer.options import CaptionOptions
    from vlm_client_module import VLMClient

    assert CaptionOptions().vlm_max_tokens is None
    local, endpoint = caption_model(CaptionOptions(vlm_model=str(llava_dir), vlm_device="cpu"), backends=None)
    assert endpoint is None
    res = local.generate_caption(frame_480x360(), local.build_prompt([]))
    assert res.success and res.output_tokens == 48
    asked, _ = caption_model(CaptionOptions(vlm_model=str(llava_dir), vlm_device="cpu", vlm_max_tokens=7), None)
    assert asked.generate_caption(frame_480x360(), asked.build_prompt([])).output_tokens == 7

    class Served:  # the Backends factory's caption(): a real client, never called here
        def caption(self, endpoint, api_key, model, **kw):
            return VLMClient(base_url=endpoint, model=model, **kw)

    served, _ = caption_model(CaptionOptions(vlm_base_url="http://127.0.0.1:9/v1"), Served())
    assert served.max_tokens == D.VLM_MAX_TOKENS == 256


def test_the_help_says_both_budgets():
    from tests.test_help_defaults import help_entries

    entry = help_entries()["--vlm-max-tokens"]
    assert entry["default"] is None
    assert "256, or 48 for the caption model in this process on a CPU" in entry["text"]


def test_int8_quantizes_every_linear_layer_and_captions(llava_dir, caplog):
    """dtype int8 (opt-in): torch's dynamic int8 Linear layers with per-channel weights; the ready line says so."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    vlm = LocalVLM(str(llava_dir), device="cpu", dtype="int8", cpu_flags=ZEN4)
    with caplog.at_level(logging.INFO, logger="video_summarizer.models.hf"):
        res = vlm.generate_caption(frame_480x360(), vlm.build_prompt([]))
    assert res.success, res.error
    assert res.output_tokens == 48
    kinds = [type(m) for m in vlm.hf_model.modules()]
    assert torch.nn.Linear not in kinds and kinds.count(DynamicLinear) >= 10
    layer = next(m for m in vlm.hf_model.modules() if isinstance(m, DynamicLinear))
    assert layer.weight().q_per_channel_scales().numel() == layer.out_features  # a scale per output channel
    assert vlm.hf_model.dtype is torch.float32  # what is not a Linear layer
    assert caplog.text.count("(cpu, int8 (dynamic, per-channel weights))") == 1


def test_int8_is_refused_off_the_cpu_before_loading_anything(llava_dir):
    from video_summarizer.errors import BackendUnavailable
    from video_summarizer.models.hf import quantize_int8

    with pytest.raises(BackendUnavailable, match="dtype int8 runs on a CPU only, not on cuda"):
        quantize_int8(torch.nn.Linear(2, 2), "cuda")
    vlm = LocalVLM(str(llava_dir), device="meta", dtype="int8")  # a device that exists everywhere, not a CPU
    with pytest.raises(BackendUnavailable, match="not on meta"):
        vlm.load()
    assert vlm.hf_model is None
