"""Will the in-process model fit? Its size at the chosen dtype against the memory there is, before any download.

The size comes from the model's own files: the safetensors headers of a local folder (exact
counts per dtype), else its weight index (``metadata.total_size`` at the dtype config.json
names), else the weight files' sizes; a hub id not cached is sized from its config.json and
safetensors metadata (the index and each shard's header, a few kilobytes), never its weights.
The memory is MemAvailable in /proc/meminfo, capped by the cgroup's memory limit (a container
sees the host's MemAvailable), or the free memory of the CUDA device. An unknown size or an
unreadable memory figure refuses nothing: the load then says what went wrong, as before.

Margin: the weights are not all a model needs. Generation adds the KV cache and the
activations of the prompt (for Mistral-7B at float32 and the 1.5k-token summary prompt about
0.5 GB of cache and a few hundred MB of attention and MLP activations), and the process
itself (torch, the tokenizer, the frames) takes about 1 GB. So a model needs its weights
plus MARGIN_SHARE of them plus MARGIN_FIXED_BYTES.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from video_summarizer import defaults as D
from video_summarizer.errors import BackendUnavailable

log = logging.getLogger(__name__)

MARGIN_SHARE = 0.10  # KV cache and activations grow with the model (see the docstring)
MARGIN_FIXED_BYTES = 1_000_000_000  # the process beside the weights: torch, tokenizer, frames
GB = 1e9
_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"
# safetensors dtype names -> bytes per element
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_ST_FLOAT = {"F64", "F32", "F16", "BF16"}
_TORCH_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class ModelSize:
    """A model's weights: floating-point parameters (stored at the chosen dtype) and bytes that stay as stored."""

    float_params: int
    fixed_bytes: int = 0  # integer / quantized tensors: the dtype does not change them

    def bytes_at(self, dtype: str) -> int:
        """Bytes of weights once loaded at that dtype (a torch dtype name)."""
        return self.float_params * _TORCH_BYTES[dtype] + self.fixed_bytes


@dataclass(frozen=True)
class Memory:
    """Bytes available where the model would go, and what it is called in a message."""

    available: int
    where: str  # "RAM", "cuda:0 memory"


@dataclass(frozen=True)
class Fit:
    """One in-process model sized for its device: what the refusal line needs."""

    option: str  # "--llm-model"
    role: str  # "summarizer model"
    name: str
    device: str
    dtype: str  # torch dtype name
    size: ModelSize

    @property
    def weights(self) -> int:
        """Bytes of weights at the chosen dtype."""
        return self.size.bytes_at(self.dtype)

    @property
    def needed(self) -> int:
        """Bytes the model needs to run: weights plus the margin."""
        return needed_bytes(self.weights)


def needed_bytes(weights: int) -> int:
    """Weights plus the margin for cache, activations and the process."""
    return int(weights * (1 + MARGIN_SHARE)) + MARGIN_FIXED_BYTES


# -- the model's size ----------------------------------------------------------------------------

def folder_size(folder: str | os.PathLike) -> ModelSize | None:
    """The weights of a model folder from its files (nothing loaded); None when it cannot tell."""
    path = Path(folder)
    config = _read_json(path / "config.json") or {}
    index = _read_json(path / "model.safetensors.index.json") or _read_json(path / "pytorch_model.bin.index.json")
    shards = sorted(path.glob("*.safetensors"))
    named = set((index or {}).get("weight_map", {}).values())
    if shards and named <= {p.name for p in shards}:  # every shard here (a partial download: the index)
        return _from_counts(_header_counts(shards), quantized=_quantized(config))
    total = ((index or {}).get("metadata") or {}).get("total_size")
    if isinstance(total, (int, float)) and total > 0:
        return _from_total(int(total), _stored_bytes(config), quantized=_quantized(config))
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return _from_total(sum(p.stat().st_size for p in bins), _stored_bytes(config), quantized=_quantized(config))
    return None


def hub_size(repo_id: str) -> ModelSize | None:
    """A hub model's weights from its config.json and safetensors metadata (headers only); None if unknown.

    config.json goes to a temporary folder, not the hub cache: a cached config.json alone
    would make the next run take the model for downloaded.
    """
    import tempfile

    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = _read_json(Path(hf_hub_download(repo_id, "config.json", local_dir=tmp))) or {}
        meta = get_safetensors_metadata(repo_id)
    except Exception as exc:  # noqa: BLE001 - no metadata (a .bin-only repo, a gated one): the load decides
        log.debug("could not size %s from the hub: %r", repo_id, exc)
        return None
    return _from_counts(dict(meta.parameter_count), quantized=_quantized(config))


def _header_counts(shards: Iterable[Path]) -> dict[str, int]:
    """Elements per safetensors dtype, read from each file's JSON header (8-byte length, then JSON)."""
    counts: dict[str, int] = {}
    for shard in shards:
        with open(shard, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for dim in tensor["shape"]:
                n *= int(dim)
            counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + n
    return counts


def _from_counts(counts: dict[str, int], *, quantized: bool) -> ModelSize:
    if quantized:  # packed weights keep their stored size whatever dtype the rest gets
        return ModelSize(0, sum(n * _ST_BYTES.get(d, 4) for d, n in counts.items()))
    floats = sum(n for d, n in counts.items() if d in _ST_FLOAT)
    fixed = sum(n * _ST_BYTES.get(d, 4) for d, n in counts.items() if d not in _ST_FLOAT)
    return ModelSize(floats, fixed)


def _from_total(total: int, stored: int, *, quantized: bool) -> ModelSize:
    return ModelSize(0, total) if quantized else ModelSize(total // stored)


def _stored_bytes(config: dict) -> int:
    """Bytes per parameter as the files store them: config.json's (torch_)dtype, float32 when unsaid."""
    for section in (config, config.get("text_config") or {}):
        name = section.get("torch_dtype") or section.get("dtype")
        if isinstance(name, str) and name.removeprefix("torch.") in _TORCH_BYTES:
            return _TORCH_BYTES[name.removeprefix("torch.")]
    return 4


def _quantized(config: dict) -> bool:
    return bool(config.get("quantization_config"))


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- the memory there is --------------------------------------------------------------------------

def available_ram(*, meminfo: str | os.PathLike = "/proc/meminfo", cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
                  proc_cgroup: str | os.PathLike = "/proc/self/cgroup") -> int | None:
    """Bytes of RAM this process may still take: MemAvailable, capped by its cgroup's limit less its use."""
    figures = [v for v in (_mem_available(Path(meminfo)), _cgroup_left(Path(cgroup_root), Path(proc_cgroup)))
               if v is not None]
    return min(figures) if figures else None


def _mem_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left(root: Path, proc_cgroup: Path) -> int | None:
    """The tightest cgroup memory limit less its use, from this process's cgroup up to the root (v2, then v1)."""
    left: list[int] = []
    for folder, limit_file, used_file in (
            *((f, "memory.max", "memory.current") for f in _cgroup_folders(root, _own_cgroup(proc_cgroup, ""))),
            *((f, "memory.limit_in_bytes", "memory.usage_in_bytes")
              for f in _cgroup_folders(root / "memory", _own_cgroup(proc_cgroup, "memory")))):
        limit = _read_int(folder / limit_file)
        if limit is not None and limit < _UNLIMITED:
            left.append(limit - (_read_int(folder / used_file) or 0))
    return max(0, min(left)) if left else None


def _own_cgroup(proc_cgroup: Path, controller: str) -> str:
    """This process's cgroup path for a v1 controller ("memory"), or the v2 one ("")."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _id, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controller in controllers.split(",")) if controller else (_id == "0" and not controllers):
            return path.strip() or "/"
    return "/"


def _cgroup_folders(root: Path, own: str) -> list[Path]:
    """The cgroup folders of this process, its own first, up to the root (in a container: just the root)."""
    parts = [p for p in own.split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)] + [root]


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory(device: str) -> Memory | None:
    """The memory a model on that device may take: the CUDA device's free memory, else RAM (MPS shares it)."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return Memory(int(free), f"cuda:{index} memory")
    ram = available_ram()
    return Memory(ram, "RAM") if ram is not None else None


# -- the refusal ----------------------------------------------------------------------------------

def refuse_unless_fits(fit: Fit, memory: Memory | None, *, beside: Iterable[Fit] = ()) -> None:
    """BackendUnavailable naming the model's option when it (with the models beside it) cannot fit."""
    if memory is None:
        return
    others = [f for f in beside if f.device == fit.device]
    taken = sum(f.needed for f in others)
    if fit.needed + taken <= memory.available:
        return
    raise BackendUnavailable(refusal(fit, memory, taken=taken), option=fit.option)


def refusal(fit: Fit, memory: Memory, *, taken: int = 0) -> str:
    """The one line: the sizes, the memory there is, and the ways out."""
    prefix = fit.option.removesuffix("-model")  # --llm / --vlm
    beside = f", beside {taken / GB:.1f} GB for the other model," if taken else ""
    ways = [f"a served model with {prefix}-base-url", "a smaller or quantized model"]
    # torch dtypes only: int8 loads at auto first, so its peak is no smaller
    smaller = [d for d in D.DTYPES[1:] if d in _TORCH_BYTES and fit.size.bytes_at(d) < fit.weights]
    if smaller:
        d = "bfloat16" if "bfloat16" in smaller else smaller[0]
        ways.append(f"{prefix}-dtype {d} (about {needed_bytes(fit.size.bytes_at(d)) / GB:.1f} GB)")
    return (f"the {fit.role} {fit.name} needs about {fit.needed / GB:.1f} GB at {fit.dtype} on {fit.device} "
            f"({fit.weights / GB:.1f} GB of weights + {MARGIN_SHARE:.0%} and {MARGIN_FIXED_BYTES / GB:.1f} GB "
            f"for cache and activations){beside} but {memory.available / GB:.1f} GB of {memory.where} is "
            f"available; use {', '.join(ways[:-1])} or {ways[-1]}. Nothing was downloaded.")


def size_of(name: str, source: str | None) -> ModelSize | None:
    """The model's weights from its folder (local, or the cached snapshot), else from the hub's metadata."""
    try:
        return folder_size(source) if source is not None else hub_size(name)
    except Exception as exc:  # noqa: BLE001 - a damaged header: let the load say what is wrong
        log.debug("could not size %s: %r", name, exc)
        return None


def torch_dtype_name(dtype: Any) -> str:
    """'bfloat16' for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


def check_fit(name: str, source: str | None, *, option: str, role: str, device: str, dtype: str) -> Fit | None:
    """Size the model at its device's dtype; refuse it (BackendUnavailable) when it cannot fit. None: size unknown."""
    size = size_of(name, source)
    if size is None:
        return None
    from video_summarizer.models.hf import resolve_device, resolve_dtype

    resolved = resolve_device(device)
    # the load's own rule for "auto"; int8 loads at auto and is quantized after: its peak is auto's
    chosen = torch_dtype_name(resolve_dtype("auto" if dtype == "int8" else dtype, resolved))
    if chosen not in _TORCH_BYTES:
        return None
    fit = Fit(option, role, name, resolved, chosen, size)
    refuse_unless_fits(fit, available_memory(resolved))
    log.debug("%s %s: %.1f GB needed at %s on %s", role, name, fit.needed / GB, chosen, resolved)
    return fit


def check_together(fits: Iterable[Fit | None]) -> None:
    """The in-process models of one run side by side: the last one that tips a device over is refused."""
    placed: list[Fit] = []
    for fit in fits:
        if fit is None:
            continue
        refuse_unless_fits(fit, available_memory(fit.device), beside=placed)
        placed.append(fit)


def check_models(models: Iterable[Any]) -> None:
    """A run's models sized (those in this process: ``check_fit()``), each alone, then side by side."""
    check_together([m.check_fit() for m in models if callable(getattr(m, "check_fit", None))])
