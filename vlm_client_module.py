"""Frame captions from a vision-language model (Qwen3-VL) behind an OpenAI-compatible API.

Works with vLLM, Ollama, LM Studio and llama.cpp servers. The request is streamed so the
time the first token really arrived is measured; the result is our own ``CaptionResult``
carrying everything the tracker needs, never an ``openai`` object.
"""
from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from video_summarizer.models.openai_stream import (
    RetryPolicy,
    check_endpoint,
    make_client,
    redact_url,
    stream_chat,
)
from video_summarizer.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    render_prompt,
)
from video_summarizer.results import CaptionResult
from video_summarizer.stats import ModelStats

DEFAULT_BASE_URL = "http://localhost:8000/v1"
DEFAULT_MODEL = "qwen3"
DEFAULT_API_KEY = "EMPTY"  # local servers need no key, but the openai client needs some value
SERVE_HINT = "vllm serve Qwen/Qwen3-VL-8B-Instruct --served-model-name qwen3"


@dataclass
class PreparedImage:
    """A frame encoded for the request."""

    data_url: str
    width: int
    height: int
    jpeg_bytes: int


def prepare_image(frame_bgr: np.ndarray, max_side: int, quality: int) -> PreparedImage:
    """Downscale a BGR frame to max_side (never up) and encode it as a JPEG data URL."""
    import cv2  # lazy: OpenCV is heavy

    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.size == 0 or frame_bgr.ndim not in (2, 3):
        raise ValueError("frame must be a non-empty HxW or HxWxC uint8 array")
    frame = frame_bgr
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        # INTER_AREA: the right filter for shrinking, no aliasing on text and edges.
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    data = base64.b64encode(buf.tobytes()).decode("ascii")
    return PreparedImage(f"data:image/jpeg;base64,{data}", w, h, int(buf.size))


class VLMClient:
    """Captions frames through a streamed OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        max_tokens: int = 256,
        temperature: float = 0.2,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        image_max_side: int = 768,
        jpeg_quality: int = 85,
        prompt_template: str | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.base_url = (base_url or os.environ.get("VLM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key or os.environ.get("VLM_API_KEY") or DEFAULT_API_KEY
        self.model = model or os.environ.get("VLM_MODEL") or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base_s=backoff_base_s,
                                 backoff_max_s=backoff_max_s)
        self.image_max_side = image_max_side
        self.jpeg_quality = jpeg_quality
        self.prompt_template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        self.stats = ModelStats(f"VLM {self.model}")
        self._client = None  # built on first use: importing openai is not free
        self._ask_usage = True  # stream_options.include_usage, until a server rejects it
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        # The key is left out on purpose: reprs end up in logs.
        return f"VLMClient(base_url={redact_url(self.base_url)!r}, model={self.model!r})"

    def check(self) -> None:
        """Health check against GET /models; raises BackendUnavailable with what to do."""
        check_endpoint(
            self._get_client(), base_url=self.base_url, model=self.model, label="VLM",
            url_option="--vlm-base-url", model_option="--vlm-model", env_prefix="VLM",
            serve_hint=SERVE_HINT, timeout_s=min(self.timeout_s, 5.0),
        )

    def _get_client(self):
        """The openai client, built once (the health check warms its connection too)."""
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.base_url, self._api_key, self.timeout_s)
            return self._client

    def build_prompt(self, face_names: list[str] | tuple[str, ...] = ()) -> str:
        """The caption prompt, naming the recognized people when there are any."""
        return render_prompt(self.prompt_template, face_names)

    def generate_caption(self, frame_bgr: np.ndarray, prompt: str) -> CaptionResult:
        """Caption one BGR frame; failures come back as success=False, never as exceptions."""
        t0 = time.perf_counter()
        image = prepare_image(frame_bgr, self.image_max_side, self.jpeg_quality)
        prep_ms = (time.perf_counter() - t0) * 1000.0
        messages = [{
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image.data_url}},
                {"type": "text", "text": prompt},
            ],
        }]
        out = stream_chat(
            self._get_client(), model=self.model, messages=messages, max_tokens=self.max_tokens,
            temperature=self.temperature, timeout_s=self.timeout_s, retry=self.retry, ask_usage=self._ask_usage,
        )
        self._ask_usage = out.asked_usage
        success, error, kind = out.success, out.error, out.error_kind
        if success and not out.text:
            success, kind = False, "bad_response"
            error = ("the model returned no caption" + (
                f" (only reasoning, finish_reason={out.finish_reason}: raise max_tokens or use an "
                "Instruct model)" if out.reasoning else ""))
        result = CaptionResult(
            text=out.text if success else "",
            success=success,
            model=self.model,
            start_time=out.start_time,
            end_time=out.end_time,
            completion_start_time=out.completion_start_time,
            input_tokens=out.input_tokens,
            output_tokens=out.output_tokens,
            error=error,
            error_kind=kind,
            metadata={
                "attempts": out.attempts,
                "finish_reason": out.finish_reason,
                "image_size": [image.width, image.height],
                "jpeg_bytes": image.jpeg_bytes,
                "reasoning_chars": len(out.reasoning),
                "server_model": out.server_model,
            },
            image_prep_ms=prep_ms,
            api_time=(out.end_time - out.start_time) * 1000.0,
            prompt=prompt,
        )
        self.stats.record(result)
        return result
