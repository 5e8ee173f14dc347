"""A model that cannot fit is refused before anything downloads or loads, in seconds, with one line.

The sizes come from the model's own files (a weight index, safetensors headers); the memory
from /proc/meminfo and the cgroup limit, read from files the tests write where the paths
are parameters. The CLI runs in this process (CliRunner).
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from tests.cli_runner import invoke_cli
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models import fit

MISTRAL_7B_BF16 = 14_483_464_192  # model.safetensors.index.json metadata.total_size of Mistral-7B-Instruct-v0.3


def _indexed_model(folder: Path, total_size: int, dtype: str = "bfloat16") -> Path:
    """A model folder with only config.json and a weight index (no weights: loading it would fail)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral", "torch_dtype": dtype}))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total_size},
         "weight_map": {f"w{i}": f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}}))
    return folder


def _big_model(tmp_path: Path) -> Path:
    """Mistral-7B's index (29 GB at float32), or larger where this machine has more memory than that."""
    ram = fit.available_ram() or 0
    return _indexed_model(tmp_path / "big-model", max(MISTRAL_7B_BF16, ram // 2 + 1))  # float32: twice


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file with these (dtype, shape) tensors, zero-filled."""
    header, offset = {}, 0
    sizes = {"F32": 4, "BF16": 2, "I64": 8}
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for dim in shape:
            n *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def test_a_29_gb_summary_model_is_refused_in_seconds_with_one_line(tmp_path, caplog, clips):
    big, clip = _big_model(tmp_path), clips.numbered()
    import openai  # noqa: F401 - imported once per process (2 s or more on a busy 2-core machine):
    import torch  # noqa: F401 - the time asserted is the check's own
    with FakeOpenAIServer(reply="A wall.") as srv:
        t0 = time.monotonic()
        run = invoke_cli(["--source", str(clip.path), "--vlm-base-url", srv.base_url,
                          "--vlm-model", "qwen3", "--llm-model", str(big), "--llm-device", "cpu", "--llm-dtype", "float32",
                          "--no-faces"])
        seconds = time.monotonic() - t0
    assert run.returncode == 2, run.stderr
    assert seconds < 5
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"Error: --llm-model: the summary model {big} needs about ")
    assert " at float32 on cpu (" in line and " GB of weights + 10% and 1.0 GB for cache and activations)" in line
    assert "GB of RAM is available" in line
    for way in ("--llm-base-url", "a smaller or quantized model", "--llm-dtype bfloat16"):
        assert way in line
    assert not any("Loading" in r.getMessage() for r in caplog.records)  # nothing loaded


def test_the_caption_model_is_refused_naming_its_own_options(tmp_path, clips, tiny_llm):
    big = _big_model(tmp_path)
    run = invoke_cli(["--source", str(clips.numbered().path), "--vlm-model", str(big), "--vlm-device", "cpu", "--vlm-dtype", "float32",
                      "--llm-model", str(tiny_llm), "--llm-device", "cpu", "--no-faces"])
    assert run.returncode == 2
    assert run.stderr.startswith(f"Error: --vlm-model: the caption model {big} needs about ")
    assert "--vlm-base-url" in run.stderr and "--vlm-dtype bfloat16" in run.stderr
    assert "--llm" not in run.stderr


def test_the_sizes_at_each_dtype_come_from_the_index_and_the_headers(tmp_path):
    indexed = fit.folder_size(_indexed_model(tmp_path / "indexed", MISTRAL_7B_BF16))
    assert indexed.float_params == MISTRAL_7B_BF16 // 2
    assert round(indexed.bytes_at("float32") / 1e9, 1) == 29.0
    assert indexed.bytes_at("bfloat16") == MISTRAL_7B_BF16
    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / "config.json").write_text("{}")
    _write_safetensors(headers / "model-1.safetensors", {"a": ("F32", [100, 10]), "ids": ("I64", [5])})
    _write_safetensors(headers / "model-2.safetensors", {"b": ("BF16", [50])})
    size = fit.folder_size(headers)
    assert (size.float_params, size.fixed_bytes) == (1050, 40)  # integer tensors keep their bytes
    partial = _indexed_model(tmp_path / "partial", MISTRAL_7B_BF16)  # one shard of three downloaded
    _write_safetensors(partial / "model-00001-of-00003.safetensors", {"lm_head.weight": ("BF16", [10])})
    assert fit.folder_size(partial).float_params == MISTRAL_7B_BF16 // 2  # the index, not the shard
    assert size.bytes_at("float16") == 2 * 1050 + 40
    quantized = _indexed_model(tmp_path / "q", 4_000_000_000)
    (quantized / "config.json").write_text(json.dumps({"torch_dtype": "float16", "quantization_config": {"bits": 4}}))
    assert fit.folder_size(quantized).bytes_at("float32") == 4_000_000_000  # packed weights stay as stored


def test_a_tiny_model_fits_and_is_sized(tiny_llm):
    from llm_summarizer import LLMSummarizer

    sized = LLMSummarizer(str(tiny_llm), device="cpu", dtype="float32").check_fit()
    assert sized is not None and sized.dtype == "float32" and sized.device == "cpu"
    assert 0 < sized.weights < 10_000_000 and sized.option == "--llm-model"
    assert LLMSummarizer(str(tiny_llm), device="cpu", dtype="bfloat16").check_fit().weights == sized.weights // 2
    assert LLMSummarizer("served", base_url="http://127.0.0.1:9/v1").check_fit() is None


def test_the_memory_reading_respects_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    root = tmp_path / "cgroup"
    own = root / "user.slice" / "run"
    own.mkdir(parents=True)
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/user.slice/run\n")
    kw = {"meminfo": meminfo, "cgroup_root": root, "proc_cgroup": proc}
    assert fit.available_ram(**kw) == 20_000_000 * 1024  # no limit files: MemAvailable
    (own / "memory.max").write_text("max\n")
    assert fit.available_ram(**kw) == 20_000_000 * 1024
    (root / "user.slice" / "memory.max").write_text(f"{4 << 30}\n")  # a parent's limit binds too
    (root / "user.slice" / "memory.current").write_text(f"{1 << 30}\n")
    assert fit.available_ram(**kw) == 3 << 30
    v1 = root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 29}\n")
    proc.write_text("4:memory:/docker/abc\n0::/user.slice/run\n")
    assert fit.available_ram(**kw) == (2 << 30) - (1 << 29)  # a cgroup v1 memory controller


def test_two_models_that_fit_alone_are_refused_together():
    size = fit.ModelSize(2_000_000_000)  # 8 GB at float32
    vlm = fit.Fit("--vlm-model", "caption model", "v", "cpu", "float32", size)
    llm = fit.Fit("--llm-model", "summary model", "l", "cpu", "float32", size)
    memory = fit.Memory(12_000_000_000, "RAM")
    fit.refuse_unless_fits(vlm, memory)
    fit.refuse_unless_fits(llm, memory)
    fit.refuse_unless_fits(llm, memory, beside=[fit.Fit("--vlm-model", "caption model", "v", "cuda:0", "float32",
                                                         size)])  # on another device: no matter
    with pytest.raises(BackendUnavailable) as refused:
        fit.refuse_unless_fits(llm, memory, beside=[vlm])
    assert refused.value.option == "--llm-model"
    assert "beside 9.8 GB for the other model" in str(refused.value)
    assert "12.0 GB of RAM is available" in str(refused.value)
