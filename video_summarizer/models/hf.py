"""Helpers shared by the in-process transformers backends (the summarizer's and the caption model's).

Stages must not import each other, so what the local LLM and the local VLM have in common
lives here: finding the model's files without loading them (``locate``, the cheap check),
loading it once onto a device and dtype with one progress line and one clear error
(``load_pretrained``), a streamer that stamps the real time of the first generated token,
and ``generate()`` on a worker thread with a timeout that cancels it at the next token.
torch, transformers and huggingface_hub are imported inside the functions, never at import time.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from video_summarizer.errors import BackendUnavailable

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0  # one request decides whether the hub is there; never the hub client's retries


@dataclass(frozen=True)
class ModelSpec:
    """How messages name one in-process model, the option that sets it, and what its folder holds."""

    role: str  # "caption model", "summarizer model"
    option: str  # "--vlm-model"
    example: str  # a hub id to suggest
    contents: str  # what a model folder must hold, for the message when it does not
    served: str  # how to use a served model instead, ending the hub message
    download_note: str = ""  # said after the `hf download` command, e.g. a licence to accept


@dataclass
class Loaded:
    """A model loaded by load_pretrained, with what prepare() built beside it (tokenizer, processor)."""

    model: Any
    companion: Any
    device: str
    dtype: Any
    seconds: float


def is_folder_name(name: str) -> bool:
    """True when the name means a folder (a path that exists, or starts like one), not a hub id."""
    return name.startswith((".", "~", os.sep)) or os.path.exists(name)


def locate(name: str, spec: ModelSpec) -> str | None:
    """The cheap check: the model's files are there, nothing loaded; the folder to load from, if local.

    A folder must hold config.json: it is returned. A hub id in the local cache returns its
    snapshot folder, so loading reads only that folder and asks the hub nothing (even an
    offline-mode load would still build the hub client's headers, which fetch a registry from
    the hub once a day). A hub id not cached needs the hub: None after one short probe; when the
    hub cannot be reached BackendUnavailable says so in seconds (the hub client retries for minutes).
    """
    if is_folder_name(name):
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            raise BackendUnavailable(_missing_folder_message(name, spec), option=spec.option)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise BackendUnavailable(_folder_message(name, spec, "no config.json in it"), option=spec.option)
        return path
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError as exc:  # HFValidationError: not a valid repo id either
        raise BackendUnavailable(_hub_message(name, spec, _first_line(exc)), option=spec.option) from exc
    if isinstance(cached, str):
        return os.path.dirname(cached)
    where = f"not in the local model cache {constants.HF_HUB_CACHE}"
    if constants.HF_HUB_OFFLINE:
        raise BackendUnavailable(_hub_message(name, spec, f"{where}, and HF_HUB_OFFLINE is set"),
                                 option=spec.option)
    reason = probe_hub(constants.ENDPOINT)
    if reason is not None:
        raise BackendUnavailable(
            _hub_message(name, spec, f"{where}, and the hub at {constants.ENDPOINT} cannot be reached: {reason}"),
            option=spec.option)
    return None


def probe_hub(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the hub answers at all (any HTTP status); else why not, in a few words. One request."""
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: the hub is there
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, TLS errors: all "not reachable"
        log.debug("model hub probe of %s failed: %r", endpoint, exc)
        # Edge probes on outside errors: URLError wraps its cause in .reason, OSErrors carry .strerror.
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return "timed out" if isinstance(reason, TimeoutError) else text


def load_pretrained(model_class: str, name: str, spec: ModelSpec, *, source: str | None = None,
                    device: str = "auto", dtype: str = "auto", prepare: Callable[[], Any] | None = None,
                    cpu_flags: Iterable[str] | None = None) -> Loaded:
    """transformers.<model_class>.from_pretrained on a device, in eval mode, with one progress line.

    name is what messages show; source the folder locate() found (None: the hub id, downloaded).
    prepare() builds what goes beside the model (tokenizer, processor) first. Every failure is
    one BackendUnavailable naming spec.option; generation defaults are settled for quiet calls.
    cpu_flags: the CPU's feature flags for dtype auto (None: this machine's).
    """
    try:
        resolved = resolve_device(device)
    except Exception as exc:  # noqa: BLE001 - torch missing or broken
        raise load_error(name, spec, exc) from exc
    log.info("Loading %s %s on %s ...", spec.role, name, resolved)
    t0 = time.perf_counter()
    try:
        quantize = dtype == INT8
        if quantize:
            check_int8_device(resolved)  # before anything loads
        companion = prepare() if prepare is not None else None
        import transformers

        torch_dtype = resolve_dtype("auto" if quantize else dtype, resolved, cpu_flags)
        loader = getattr(transformers, model_class)  # the Auto class by name (the subclass's model_class)
        model = loader.from_pretrained(source or name, dtype=torch_dtype, local_files_only=source is not None)
        model = model.to(resolved).eval()
        if quantize:
            model = quantize_int8(model, resolved)
            torch_dtype = model.dtype
    except BackendUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, RuntimeError (CUDA OOM), ...
        raise load_error(name, spec, exc) from exc
    # A processor holds its tokenizer, a tokenizer is its own; either may lack an EOS token.
    tokenizer = getattr(companion, "tokenizer", companion)
    settle_generation_config(model, getattr(tokenizer, "eos_token_id", None))
    seconds = time.perf_counter() - t0
    log.info("%s %s ready in %.1f s (%s, %s)", spec.role.capitalize(), name, seconds, resolved,
             INT8_WORDS if quantize else dtype_reason(dtype, resolved, torch_dtype, cpu_flags))
    return Loaded(model, companion, resolved, torch_dtype, seconds)


class InProcessModel:
    """check() and load() of a transformers model loaded into this process, once, thread-safe.

    A subclass sets ``model_class`` (the transformers Auto class) and ``spec``, builds what goes
    beside the model in ``_prepare()`` (tokenizer, processor) and takes it in ``_loaded()``.
    ``hf_model`` is set last: other threads take a non-None model as "loaded".
    """

    model_class: str
    spec: ModelSpec

    def __init__(self, model: str, *, device: str, dtype: str, cpu_flags: Iterable[str] | None = None) -> None:
        self.model = model  # shown in traces: the hub id, or the folder as given
        self.device = device  # "auto" until loaded, then the device the model is on
        self.dtype = dtype
        self.cpu_flags = cpu_flags  # for dtype auto on a CPU; None: this machine's
        self.hf_model: Any = None
        self.load_seconds: float | None = None
        self._checked = False
        self._source: str | None = None  # set by check(): the local folder to load from (None: the hub)
        self.fit: Any = None  # set by check_fit(): the model sized for its device (models.fit.Fit), if known
        self._fit_checked = False
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generation at a time

    def check(self) -> None:
        """Cheap: the model's files are there (a folder, or a hub id cached or reachable); nothing loads."""
        if not self._checked:
            self._source = locate(self.model, self.spec)
            self._checked = True

    def check_fit(self) -> Any:
        """Refuse a model too big for its device's memory at its dtype, before any download; its models.fit.Fit.

        Not part of check(): it imports torch (the device and the dtype are torch's to say).
        """
        if not self._fit_checked:
            from video_summarizer.models.fit import check_fit

            self.check()
            self.fit = check_fit(self.model, self._source, option=self.spec.option, role=self.spec.role,
                                 device=self.device, dtype=self.dtype)
            self._fit_checked = True
        return self.fit

    def load(self) -> None:
        """Load the model once, with a progress line; BackendUnavailable says what to do."""
        if self.hf_model is not None:
            return
        with self._load_lock:
            if self.hf_model is not None:
                return
            self.check_fit()
            loaded = load_pretrained(self.model_class, self.model, self.spec, source=self._source,
                                     device=self.device, dtype=self.dtype, prepare=self._prepare,
                                     cpu_flags=self.cpu_flags)
            self._loaded(loaded)
            self.device, self.load_seconds = loaded.device, loaded.seconds
            self.hf_model = loaded.model

    def close(self) -> None:
        """Nothing to release beyond what the garbage collector frees."""

    def _prepare(self) -> Any:
        """What goes beside the model (tokenizer, processor), built before it loads."""
        return None

    def _loaded(self, loaded: Loaded) -> None:
        """Take what ``_prepare()`` built (``loaded.companion``)."""


def load_error(name: str, spec: ModelSpec, exc: BaseException) -> BackendUnavailable:
    """The one actionable error for a model that would not load."""
    reason = f"{type(exc).__name__}: {_first_line(exc)}"
    if is_folder_name(name):
        path = os.path.expanduser(name)
        message = _missing_folder_message(name, spec) if not os.path.isdir(path) else _folder_message(
            name, spec, reason)
    else:
        message = _hub_message(name, spec, reason)
    return BackendUnavailable(message, option=spec.option)


def _missing_folder_message(name: str, spec: ModelSpec) -> str:
    return (f"The {spec.role} folder '{name}' does not exist. Pass {spec.option} a folder saved with "
            f"save_pretrained ({spec.contents}) or a hub id such as {spec.example}.")


def _folder_message(name: str, spec: ModelSpec, reason: str) -> str:
    return (f"Cannot load the {spec.role} folder '{name}' ({reason}). It must hold a model saved with "
            f"save_pretrained: {spec.contents}.")


def _hub_message(name: str, spec: ModelSpec, reason: str) -> str:
    note = f"; {spec.download_note}" if spec.download_note else ""
    return (f"Cannot load the {spec.role} '{name}' ({reason}). For a hub id, download it once while online "
            f"(`hf download {name}`{note}), or pass a local model folder with {spec.option}; {spec.served}.")


def settle_generation_config(model: Any, eos_token_id: int | None) -> None:
    """Generation defaults set once, explicitly, so no call warns about them.

    Every call passes max_new_tokens, so a max_length from the model's files would only earn
    transformers' "Both max_new_tokens and max_length" warning on each call; a missing
    pad_token_id earns one too.
    """
    config = getattr(model, "generation_config", None)  # models that cannot generate have none
    if config is None:
        return
    config.max_length = None
    if config.pad_token_id is None and eos_token_id is not None:
        config.pad_token_id = eos_token_id


def sampling(temperature: float | None) -> dict:
    """generate() arguments: greedy for None or 0, else sampling at that temperature."""
    if temperature:
        return {"do_sample": True, "temperature": temperature}
    return {"do_sample": False}


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (at most 200 characters)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def resolve_device(device: str = "auto") -> str:
    """auto = CUDA, then Apple MPS, then CPU; anything else is taken as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)  # absent from older and non-Apple torch builds
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


INT8 = "int8"  # not a torch dtype: loaded, then every Linear layer quantized (quantize_int8)
INT8_WORDS = "int8 (dynamic, per-channel weights)"


def quantize_int8(model: Any, device: str) -> Any:
    """Every nn.Linear as torch's dynamically quantized int8 Linear (per-channel weights), the rest float32.

    A CPU path (fbgemm kernels): decoding reads a quarter of float32's bytes a token. Layer by
    layer, so memory never holds a float32 copy of the whole model. Quality is the weights'
    rounding to 256 levels a channel, and activations rounded to 256 levels a call.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    check_int8_device(device)
    with warnings.catch_warnings():  # torch's notice that these eager-mode APIs will move (torch is pinned)
        warnings.simplefilter("ignore", category=(DeprecationWarning, UserWarning))
        # (parent, name) pairs, not the layers: a list holding the old layers would keep them all alive
        targets = [(parent, child_name) for parent in model.modules()
                   for child_name, child in parent.named_children()
                   if type(child) is torch.nn.Linear]  # exactly: subclasses may carry their own forward
        for parent, child_name in targets:
            layer = getattr(parent, child_name).float()
            layer.qconfig = per_channel_dynamic_qconfig
            setattr(parent, child_name, DynamicLinear.from_float(layer))
            del layer
    return model.float()


def check_int8_device(device: str) -> None:
    """int8 is torch's CPU kernels: BackendUnavailable on any other device."""
    if not device.startswith("cpu"):
        raise BackendUnavailable(f"dtype int8 runs on a CPU only, not on {device}: use auto, bfloat16 or float16")


def resolve_dtype(dtype: str, device: str, cpu_flags: Iterable[str] | None = None) -> Any:
    """auto = bfloat16 (or float16) on CUDA, float16 on MPS, on a CPU bfloat16 where it has bfloat16
    instructions (AMX, AVX512-BF16), else float32; or a torch dtype name.

    cpu_flags: the CPU's feature flags (None: this machine's, from /proc/cpuinfo). An unknown
    name raises BackendUnavailable naming no option (the options that set a dtype check it).
    """
    import torch

    if dtype != "auto":
        value = getattr(torch, str(dtype).removeprefix("torch."), None)  # a dtype by its name, checked below
        if not isinstance(value, torch.dtype):
            raise BackendUnavailable(f"unknown dtype {dtype!r}: use auto, float32, float16, bfloat16 or int8")
        return value
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    # Decoding reads every weight once a token: bfloat16 halves that, but only CPUs with bfloat16
    # instructions run its matrix products natively (without them torch emulates it, usually slower).
    return torch.bfloat16 if cpu_bfloat16_feature(cpu_flags) else torch.float32


def dtype_reason(dtype: str, device: str, chosen: Any, cpu_flags: Iterable[str] | None = None) -> str:
    """Why the model runs at this dtype, for the ready line: 'bfloat16 (AMX)', 'float32 (no ...)', 'float16'."""
    name = str(chosen).removeprefix("torch.")
    if dtype != "auto" or not device.startswith("cpu"):
        return name
    feature = cpu_bfloat16_feature(cpu_flags)
    return f"{name} ({feature})" if feature else f"{name} (no AMX or AVX512-BF16 on this CPU)"


# Linux /proc/cpuinfo flag -> its name in messages, the faster first.
CPU_BFLOAT16_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))


def cpu_bfloat16_feature(cpu_flags: Iterable[str] | None = None) -> str | None:
    """The CPU feature that runs bfloat16 fast ('AMX', 'AVX512-BF16'), or None; flags None: this machine's."""
    flags = set(read_cpu_flags() if cpu_flags is None else cpu_flags)
    return next((name for flag, name in CPU_BFLOAT16_FLAGS if flag in flags), None)


def read_cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


class TokenTimer:
    """A generate() streamer that stamps the first generated token and the end (duck-typed BaseStreamer).

    generate() first puts the prompt ids, then each new token as it is chosen; text streamers
    hold text back to a word boundary, so timing is taken here, on the ids.
    """

    def __init__(self) -> None:
        self._prompt_seen = False
        self.first_token_time: float | None = None
        self.end_time: float | None = None
        self.token_ids: list[int] = []

    def put(self, value: Any) -> None:
        """Called by generate() with the prompt ids first, then with each new token."""
        now = time.time()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_token_time is None:
            self.first_token_time = now
        self.token_ids.extend(int(t) for t in value.reshape(-1).tolist())

    def end(self) -> None:
        """Called by generate() when it is done."""
        self.end_time = time.time()


def cancel_criteria(cancel: threading.Event) -> Any:
    """A StoppingCriteriaList that stops generation when cancel is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers signature
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancel()])


@dataclass
class GenerationRun:
    """What one threaded generate() call left: its output or error, the timer, and whether it was cut."""

    start_time: float  # epoch s, just before the worker thread started
    timer: TokenTimer = field(default_factory=TokenTimer)
    output: Any = None  # generate()'s return value (token ids, prompt included), when it finished
    error: BaseException | None = None  # what generate() raised, if it did
    cancelled: bool = False  # the timeout passed (or Ctrl-C came) and generation was stopped


def generate_in_thread(model: Any, kwargs: dict, timeout_s: float, *, name: str = "generate") -> GenerationRun:
    """Run model.generate(**kwargs) on a daemon thread with a TokenTimer, stopping it after timeout_s.

    Generation is stopped at the next token once the timeout passes (a forward pass already
    running finishes first); Ctrl-C stops it too and is re-raised here.
    """
    cancel = threading.Event()
    timer = TokenTimer()
    kwargs = dict(kwargs, streamer=timer, stopping_criteria=cancel_criteria(cancel))
    run = GenerationRun(start_time=0.0, timer=timer)

    def work() -> None:
        try:
            run.output = model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            run.error = exc

    run.start_time = time.time()
    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        worker.join(timeout_s)
    finally:
        if worker.is_alive():  # timeout or Ctrl-C: stop at the next token
            cancel.set()
            worker.join(5.0)
        run.cancelled = cancel.is_set()
    return run
