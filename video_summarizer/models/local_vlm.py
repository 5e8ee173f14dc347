"""Frame captions from a vision-language model run in this process with transformers ("local VLM").

The in-process twin of ``vlm_client_module.VLMClient``, a CaptionModel (see
video_summarizer.backends): the same ``model`` / ``stats`` / ``check()`` / ``load()`` /
``build_prompt()`` / ``generate_caption()`` and the same ``CaptionResult``, so the loop does
not care which one it holds. ``check()`` only finds the model's files (a folder, or a hub id
in the local cache); ``load()`` loads it once, through ``AutoProcessor`` +
``AutoModelForImageTextToText``; generation runs on a worker thread whose streamer stamps the
moment the first generated token ids arrive (the real time to first token).

Qwen2/2.5/3-VL processors insist on a video processor, which needs torchvision; where
torchvision is missing the processor is assembled from its image-only parts instead (see
``_image_only_processor``).
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any, Iterable

import numpy as np

from video_summarizer import defaults as D
from video_summarizer.backends import CaptionModel
from video_summarizer.clips import frame_label
from video_summarizer.errors import BackendUnavailable
from video_summarizer.frames import to_pil, to_rgb
from video_summarizer.models.hf import (
    InProcessModel,
    Loaded,
    ModelSpec,
    generate_in_thread,
    load_error,
    sampling,
)
from video_summarizer.models.openai_stream import split_thinking
from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE
from video_summarizer.results import CaptionResult, Clip
from video_summarizer.stats import ModelStats

log = logging.getLogger(__name__)

DEFAULT_MODEL = D.LOCAL_VLM_MODEL
MODEL_OPTION = "--vlm-model"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SPEC = ModelSpec(
    role="caption model", option=MODEL_OPTION, example=DEFAULT_MODEL,
    contents=("config.json, the weights (model.safetensors), the processor's files (preprocessor_config.json "
              "or processor_config.json) and the tokenizer's with its chat template"),
    served="to use a served model instead, pass --vlm-base-url",
)


class LocalVLM(InProcessModel, CaptionModel):
    """Captions frames with a vision-language model loaded into this process (CPU, CUDA or MPS)."""

    model_class = "AutoModelForImageTextToText"
    spec = SPEC

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = D.DEVICE,
        dtype: str = "auto",
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        timeout_s: float = D.VLM_TIMEOUT_S,
        image_max_side: int | None = None,
        prompt_template: str | None = None,
        cpu_flags: Iterable[str] | None = None,
    ) -> None:
        super().__init__(model or DEFAULT_MODEL, device=device, dtype=dtype, cpu_flags=cpu_flags)
        # None: the default for the device, settled once it is known (smaller on a CPU, see _loaded)
        self._asked = (max_new_tokens, image_max_side)
        self.max_new_tokens = max_new_tokens or D.VLM_MAX_TOKENS
        self.temperature = temperature  # None or 0: greedy
        self.timeout_s = timeout_s
        self.image_max_side = image_max_side or D.VLM_IMAGE_MAX_SIDE
        self.prompt_template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        self.stats = ModelStats(f"VLM {self.model}")
        self.processor: Any = None  # transformers processor, once loaded
        self.processor_assembled = False  # True when built from image-only parts (no torchvision)

    def __repr__(self) -> str:
        return f"LocalVLM(model={self.model!r}, device={self.device!r})"

    # -- load ----------------------------------------------------------------------------------
    def _prepare(self) -> tuple[Any, bool]:
        return self._load_processor()

    def _loaded(self, loaded: Loaded) -> None:
        self.processor, self.processor_assembled = loaded.companion
        if self.processor_assembled:
            log.info("Caption model %s: image-only processor (torchvision is not installed)", self.model)
        if loaded.device.startswith("cpu"):
            self._cpu_budget()

    def _cpu_budget(self) -> None:
        """On a CPU, what was not asked for is smaller: fewer visual tokens and a one- or two-sentence budget.

        A CPU decodes a token in about the time it takes to read every weight once, and the
        vision tower's cost grows with the pixels: both bound how many frames a minute get a caption.
        """
        tokens, side = self._asked
        self.max_new_tokens = tokens or D.VLM_CPU_MAX_TOKENS
        self.image_max_side = side or D.VLM_CPU_IMAGE_MAX_SIDE
        log.info("Caption model on a CPU: frames at most %d px a side, captions at most %d tokens%s",
                 self.image_max_side, self.max_new_tokens, "" if tokens else " (--vlm-max-tokens)")

    def _load_processor(self) -> tuple[Any, bool]:
        """AutoProcessor, or the image-only assembly when only the video part wants torchvision."""
        source, local_only = self._source or self.model, self._source is not None
        try:
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(source, local_files_only=local_only), False
        except Exception as exc:  # noqa: BLE001 - see load_pretrained()
            if "torchvision" not in str(exc).lower():
                raise load_error(self.model, SPEC, exc) from exc
            try:
                return _image_only_processor(source, local_only), True
            except Exception as inner:  # noqa: BLE001 - the original error is the one to act on
                log.debug("image-only processor assembly failed: %s", inner)
                raise BackendUnavailable(self._torchvision_message(exc, inner), option=MODEL_OPTION) from exc

    def _torchvision_message(self, exc: Exception, inner: Exception) -> str:
        return (f"The processor of the caption model '{self.model}' needs torchvision, which is not installed "
                f"({_first_line(exc)}; building it without its video part failed too: "
                f"{type(inner).__name__}: {_first_line(inner)}). Install the torchvision build made for this "
                f"torch: `{torchvision_pip_command()}`.")

    # -- generation --------------------------------------------------------------------------
    def generate_caption(self, frame_bgr: np.ndarray, prompt: str) -> CaptionResult:
        """Caption one BGR frame; failures come back as success=False, never as exceptions."""
        return self.generate_clip(Clip.single(0, 0.0, frame_bgr), prompt)

    def generate_clip(self, clip: Clip, prompt: str) -> CaptionResult:
        """Caption a clip's frames in one chat message (the processor's multi-image path), each after
        its time; one frame is captioned as a still. Never raises."""
        try:
            self.load()
        except BackendUnavailable as exc:
            now = time.time()
            result = self._result(prompt, now, error=str(exc), kind="model_error")
        else:
            queued = time.perf_counter()
            with self._generate_lock:
                result = self._caption(clip, prompt, (time.perf_counter() - queued) * 1000.0)
        self.stats.record(result)
        return result

    def _caption(self, clip: Clip, prompt: str, queued_ms: float) -> CaptionResult:
        start = time.time()
        t0 = time.perf_counter()
        try:
            images = [to_pil(f.image, self.image_max_side) for f in clip.frames]
        except ValueError as exc:
            return self._result(prompt, start, error=f"unusable frame: {exc}", kind="client_error")
        image = images[clip.key]
        width, height = image.size
        meta: dict[str, Any] = {"backend": "local", "device": str(self.device), "image_size": [width, height],
                                "queued_ms": round(queued_ms, 1)}
        if len(images) > 1:
            meta["clip_frames"] = len(images)
        try:
            enc = self._encode(images, clip, prompt)
        except Exception as exc:  # noqa: BLE001 - a processor or template error is reported, not raised
            return self._result(prompt, start, error=f"preprocessing failed: {type(exc).__name__}: {exc}",
                                kind="model_error", meta=meta)
        n_input = int(enc["input_ids"].shape[1])
        prep_ms = (time.perf_counter() - t0) * 1000.0
        kwargs = dict(enc, max_new_tokens=self.max_new_tokens, **sampling(self.temperature))
        tokenizer = getattr(self.processor, "tokenizer", self.processor)  # a processor holds one; a tokenizer is one
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

    def _encode(self, images: list, clip: Clip, prompt: str) -> Any:
        """Processor inputs for the clip's PIL images (each after its time) and the prompt, on the
        model's device and dtype."""
        if len(images) == 1:
            parts: list[dict] = [{"type": "image"}]
        else:
            parts = [p for n, f in enumerate(clip.frames, 1)
                     for p in ({"type": "text", "text": frame_label(n, f.video_time) + "\n"}, {"type": "image"})]
        messages = [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(images=images, text=[text], return_tensors="pt")
        # Only floating tensors (pixel values) are cast; ids stay integers.
        return enc.to(device=self.hf_model.device, dtype=self.hf_model.dtype)

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
    return to_rgb(frame_bgr, max_side)


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


def _image_only_processor(model: str, local_only: bool = False) -> Any:
    """The model's processor built without its video processor (the only part that needs torchvision).

    Qwen2/2.5/3-VL processors take a video processor as a required part; a subclass whose
    __init__ leaves it out makes ProcessorMixin accept image processor + tokenizer alone.
    Raises when the model's processor has no such shape.
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model, local_files_only=local_only)
    name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    base = getattr(transformers, name, None) if name else None  # the processor class by name; absent in older releases
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
    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_only)
    # the PIL backend, without torchvision
    image_processor = AutoImageProcessor.from_pretrained(model, local_files_only=local_only)
    template = _processor_chat_template(model, local_only) or tokenizer.chat_template
    if not template:
        raise ValueError("the model folder has no chat template")
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def _processor_chat_template(model: str, local_only: bool = False) -> str | None:
    """The processor's chat template (chat_template.jinja or chat_template.json), None if it has none."""
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False,
                           local_files_only=local_only)
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
