"""Frame captions from a vision-language model run in this process with transformers ("local VLM").

The in-process twin of ``vlm_client_module.VLMClient``: the same ``model`` / ``stats`` /
``check()`` / ``build_prompt()`` / ``generate_caption()`` interface and the same
``CaptionResult``, so the loop does not care which one it holds. The model (a hub id in the
local cache, or a folder saved with ``save_pretrained``) loads once, through
``AutoProcessor`` + ``AutoModelForImageTextToText``; generation runs on a worker thread whose
streamer stamps the moment the first generated token ids arrive (the real time to first token).

Qwen2/2.5/3-VL processors insist on a video processor, which needs torchvision; where
torchvision is missing the processor is assembled from its image-only parts instead (see
``_image_only_processor``).
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.hf import generate_in_thread, resolve_device, resolve_dtype
from video_summarizer.models.openai_stream import split_thinking
from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE, render_prompt
from video_summarizer.results import CaptionResult
from video_summarizer.stats import ModelStats

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
MODEL_OPTION = "--vlm-model"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class LocalVLM:
    """Captions frames with a vision-language model loaded into this process (CPU, CUDA or MPS)."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 128,
        temperature: float | None = None,
        timeout_s: float = 120.0,
        image_max_side: int = 768,
        prompt_template: str | None = None,
    ) -> None:
        self.model = model or DEFAULT_MODEL  # shown in traces: the hub id, or the folder as given
        self.device = device  # "auto" until loaded, then the device the model is on
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature  # None or 0: greedy
        self.timeout_s = timeout_s
        self.image_max_side = image_max_side
        self.prompt_template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        self.stats = ModelStats(f"VLM {self.model}")
        self.processor: Any = None  # transformers processor, once loaded
        self.hf_model: Any = None  # transformers model, once loaded
        self.processor_assembled = False  # True when built from image-only parts (no torchvision)
        self.load_seconds: float | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generation at a time

    def __repr__(self) -> str:
        return f"LocalVLM(model={self.model!r}, device={self.device!r})"

    # -- loading ---------------------------------------------------------------------------
    def check(self) -> None:
        """Load the model now, so that a bad --vlm-model fails before the first frame."""
        self.load()

    def load(self) -> None:
        """Load processor and model once (thread-safe); BackendUnavailable says what to do."""
        if self.hf_model is not None:
            return
        with self._load_lock:
            if self.hf_model is not None:
                return
            log.info("Loading caption model %s ...", self.model)
            t0 = time.perf_counter()
            processor, assembled = self._load_processor()
            try:
                from transformers import AutoModelForImageTextToText

                device = resolve_device(self.device)
                dtype = resolve_dtype(self.dtype, device, option="--vlm-dtype")
                model = AutoModelForImageTextToText.from_pretrained(self.model, dtype=dtype)
                model = model.to(device).eval()
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - OSError, ValueError, RuntimeError (CUDA OOM), ...
                raise BackendUnavailable(self._load_message(exc), option=MODEL_OPTION) from exc
            self.processor, self.processor_assembled, self.device = processor, assembled, device
            self.load_seconds = time.perf_counter() - t0
            self.hf_model = model  # last: other threads take a non-None model as "loaded"
            log.info("Caption model %s ready in %.1f s (%s, %s%s)", self.model, self.load_seconds, device,
                     str(dtype).removeprefix("torch."),
                     ", image-only processor: no torchvision" if assembled else "")

    def _load_processor(self) -> tuple[Any, bool]:
        """AutoProcessor, or the image-only assembly when only the video part wants torchvision."""
        try:
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(self.model), False
        except Exception as exc:  # noqa: BLE001 - see load()
            if "torchvision" not in str(exc).lower():
                raise BackendUnavailable(self._load_message(exc), option=MODEL_OPTION) from exc
            try:
                return _image_only_processor(self.model), True
            except Exception as inner:  # noqa: BLE001 - the original error is the one to act on
                log.debug("image-only processor assembly failed: %s", inner)
                raise BackendUnavailable(self._torchvision_message(exc, inner), option=MODEL_OPTION) from exc

    def _load_message(self, exc: Exception) -> str:
        reason = _first_line(exc)
        name = self.model
        if name.startswith((".", "~", os.sep)) or os.path.exists(name):
            path = os.path.expanduser(name)
            if not os.path.isdir(path):
                return (f"The caption model folder '{name}' does not exist. Pass --vlm-model a folder saved "
                        "with save_pretrained, or a hub id such as " + DEFAULT_MODEL + ".")
            return (f"Cannot load the caption model folder '{name}' ({type(exc).__name__}: {reason}). It must hold "
                    "a vision-language model saved with save_pretrained: config.json, the weights "
                    "(model.safetensors), the processor's files (preprocessor_config.json or processor_config.json) "
                    "and the tokenizer's with its chat template.")
        return (f"Cannot load the caption model '{name}' ({type(exc).__name__}: {reason}). For a hub id, download "
                f"it once while online (`hf download {name}`), or pass a local model folder with --vlm-model; "
                "to use a served model instead, pass --vlm-base-url.")

    def _torchvision_message(self, exc: Exception, inner: Exception) -> str:
        return (f"The processor of the caption model '{self.model}' needs torchvision, which is not installed "
                f"({_first_line(exc)}; building it without its video part failed too: "
                f"{type(inner).__name__}: {_first_line(inner)}). Install the torchvision build made for this "
                f"torch: `{torchvision_pip_command()}`.")

    # -- prompt ------------------------------------------------------------------------------
    def build_prompt(self, face_names: list[str] | tuple[str, ...] = ()) -> str:
        """The caption prompt, naming the recognized people when there are any."""
        return render_prompt(self.prompt_template, face_names)

    # -- generation --------------------------------------------------------------------------
    def generate_caption(self, frame_bgr: np.ndarray, prompt: str) -> CaptionResult:
        """Caption one BGR frame; failures come back as success=False, never as exceptions."""
        try:
            self.load()
        except BackendUnavailable as exc:
            now = time.time()
            result = self._result(prompt, now, error=str(exc), kind="model_error")
        else:
            queued = time.perf_counter()
            with self._generate_lock:
                result = self._caption(frame_bgr, prompt, (time.perf_counter() - queued) * 1000.0)
        self.stats.record(result)
        return result

    def _caption(self, frame_bgr: np.ndarray, prompt: str, queued_ms: float) -> CaptionResult:
        start = time.time()
        t0 = time.perf_counter()
        try:
            rgb = frame_to_rgb(frame_bgr, self.image_max_side)
        except ValueError as exc:
            return self._result(prompt, start, error=f"unusable frame: {exc}", kind="client_error")
        height, width = rgb.shape[:2]
        meta: dict[str, Any] = {"backend": "local", "device": str(self.device), "image_size": [width, height],
                                "queued_ms": round(queued_ms, 1)}
        try:
            enc = self._encode(rgb, prompt)
        except Exception as exc:  # noqa: BLE001 - a processor or template error is reported, not raised
            return self._result(prompt, start, error=f"preprocessing failed: {type(exc).__name__}: {exc}",
                                kind="model_error", meta=meta)
        n_input = int(enc["input_ids"].shape[1])
        prep_ms = (time.perf_counter() - t0) * 1000.0
        kwargs = dict(enc, max_new_tokens=self.max_new_tokens, **self._sampling())
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if self.hf_model.generation_config.pad_token_id is None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id  # silences a warning per call
        run = generate_in_thread(self.hf_model, kwargs, self.timeout_s, name="vlm-generate")
        timer = run.timer
        end = timer.end_time or time.time()
        ids = timer.token_ids  # the new tokens only: the streamer skips the prompt
        answer, reasoning = split_thinking(tokenizer.decode(ids, skip_special_tokens=True))
        meta.update(finish_reason=_finish_reason(run, len(ids), self.max_new_tokens),
                    reasoning_chars=len(reasoning), generation_start_time=run.start_time)
        fields = dict(meta=meta, end=end, ttft=timer.first_token_time, n_input=n_input, n_output=len(ids),
                      prep_ms=prep_ms, api_ms=(end - run.start_time) * 1000.0)
        if run.cancelled:
            return self._result(prompt, start, error=f"generation passed {self.timeout_s:g} s; partial text: "
                                f"{answer[:200]!r}", kind="timeout", **fields)
        if run.error is not None:
            exc = run.error
            return self._result(prompt, start, error=f"generation failed: {type(exc).__name__}: {exc}",
                                kind="model_error", **fields)
        if not answer:
            error = "the model returned no caption" + (
                f" (only reasoning, finish_reason={meta['finish_reason']}: raise max_new_tokens or use an "
                "Instruct model)" if reasoning else "")
            return self._result(prompt, start, error=error, kind="bad_response", **fields)
        return self._result(prompt, start, text=answer, **fields)

    def _encode(self, rgb: np.ndarray, prompt: str) -> Any:
        """Processor inputs for one image and the prompt, on the model's device and dtype."""
        from PIL import Image

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(images=[Image.fromarray(rgb)], text=[text], return_tensors="pt")
        # Only floating tensors (pixel values) are cast; ids stay integers.
        return enc.to(device=self.hf_model.device, dtype=self.hf_model.dtype)

    def _sampling(self) -> dict:
        if self.temperature:
            return {"do_sample": True, "temperature": self.temperature}
        return {"do_sample": False}

    def _result(self, prompt: str, start: float, *, text: str = "", error: str | None = None,
                kind: str | None = None, meta: dict | None = None, end: float | None = None,
                ttft: float | None = None, n_input: int | None = None, n_output: int | None = None,
                prep_ms: float = 0.0, api_ms: float = 0.0) -> CaptionResult:
        return CaptionResult(
            text=text if error is None else "", success=error is None, model=self.model,
            start_time=start, end_time=end if end is not None else time.time(),
            completion_start_time=ttft, input_tokens=n_input, output_tokens=n_output,
            error=error, error_kind=kind, metadata=meta or {"backend": "local"},
            image_prep_ms=prep_ms, api_time=api_ms, prompt=prompt,
        )


def frame_to_rgb(frame_bgr: np.ndarray, max_side: int) -> np.ndarray:
    """An RGB uint8 copy of a BGR(A) or grey frame, downscaled to max_side (never up)."""
    import cv2  # lazy: OpenCV is heavy

    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.size == 0 or frame_bgr.ndim not in (2, 3):
        raise ValueError("frame must be a non-empty HxW or HxWxC uint8 array")
    frame = frame_bgr
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        # INTER_AREA: the right filter for shrinking, no aliasing on text and edges.
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.shape[2] != 3:
        raise ValueError(f"frame has {frame.shape[2]} channels; expected 1, 3 or 4")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def torchvision_pip_command() -> str:
    """The pip command that installs the torchvision release made for the installed torch."""
    import torch

    version = torch.__version__
    major, minor = (int(p) for p in version.split("+")[0].split(".")[:2])
    # torch 2.N pairs with torchvision 0.(N+15): 2.9 / 0.24, 2.13 / 0.28.
    pin = f"torchvision=={major - 2}.{minor + 15}.*" if major == 2 else "torchvision"
    if version.endswith("+cpu"):  # PyPI's torchvision wheels are built against CUDA torch
        return f'pip install "{pin}" --index-url {TORCH_CPU_INDEX}'
    return f'pip install "{pin}"'


def _image_only_processor(model: str) -> Any:
    """The model's processor built without its video processor (the only part that needs torchvision).

    Qwen2/2.5/3-VL processors take a video processor as a required part; a subclass whose
    __init__ leaves it out makes ProcessorMixin accept image processor + tokenizer alone.
    Raises when the model's processor has no such shape.
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model)
    name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    base = getattr(transformers, name, None) if name else None
    if base is None:
        raise ValueError(f"no processor class known for model type {config.model_type!r}")
    params = inspect.signature(base.__init__).parameters
    if not {"image_processor", "tokenizer", "video_processor"} <= set(params):
        raise ValueError(f"{name} is not an image processor + tokenizer + video processor bundle")

    class ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: ANN001
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                             chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"ImageOnly{name}"
    tokenizer = AutoTokenizer.from_pretrained(model)
    image_processor = AutoImageProcessor.from_pretrained(model)  # the PIL backend without torchvision
    template = _processor_chat_template(model) or tokenizer.chat_template
    if not template:
        raise ValueError("the model folder has no chat template")
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def _processor_chat_template(model: str) -> str | None:
    """The processor's chat template (chat_template.jinja or chat_template.json), None if it has none."""
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False)
        if not path:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if filename.endswith(".json"):
            text = json.loads(text).get("chat_template")
        if text:
            return text
    return None


def _finish_reason(run: Any, n_tokens: int, max_new_tokens: int) -> str:
    """'stop', 'length', 'timeout' or 'error', in the OpenAI API's words where they exist."""
    if run.cancelled:
        return "timeout"
    if run.error is not None:
        return "error"
    return "length" if n_tokens >= max_new_tokens else "stop"


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (at most 200 characters)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__
