"""Frame captions from a vision-language model (Qwen3-VL) behind an OpenAI-compatible API.

Works with vLLM, Ollama, LM Studio and llama.cpp servers. The request is streamed so the
time the first token really arrived is measured; the result is our own ``CaptionResult``
carrying everything the tracker needs, never an ``openai`` object.
"""
from __future__ import annotations

import base64
import time
from typing import Any, Mapping

import numpy as np

from video_summarizer import defaults as D
from video_summarizer.backends import CaptionModel
from video_summarizer.clips import frame_label
from video_summarizer.frames import JpegImage, to_jpeg_data_url
from video_summarizer.models.openai_stream import ChatEndpoint, EndpointNames
from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE
from video_summarizer.redact import redact_url
from video_summarizer.results import CaptionResult, Clip
from video_summarizer.stats import ModelStats
from video_summarizer.timecodes import format_video_time

DEFAULT_BASE_URL = D.VLM_URL
DEFAULT_MODEL = D.API_VLM_MODEL
DEFAULT_API_KEY = D.API_KEY_PLACEHOLDER
SERVE_HINT = "vllm serve Qwen/Qwen3-VL-8B-Instruct --served-model-name qwen3"
NAMES = EndpointNames(label="VLM", url_option="--vlm-base-url", model_option="--vlm-model",
                      env_prefix="VLM", serve_hint=SERVE_HINT)

PreparedImage = JpegImage  # the encoded frame: data_url, width, height, jpeg_bytes


def prepare_image(frame_bgr: np.ndarray, max_side: int, quality: int) -> PreparedImage:
    """Downscale a BGR frame to max_side (never up) and encode it as a JPEG data URL."""
    return to_jpeg_data_url(frame_bgr, max_side, quality)


class VLMClient(CaptionModel):
    """Captions frames through a streamed OpenAI-compatible chat-completions endpoint.

    A CaptionModel (video_summarizer.backends): check() asks the server's /models listing;
    load() has nothing to load; close() closes the connections; build_prompt() is the base's.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        max_tokens: int = D.VLM_MAX_TOKENS,
        temperature: float = D.VLM_TEMPERATURE,
        timeout_s: float = D.VLM_TIMEOUT_S,
        max_retries: int = D.VLM_MAX_RETRIES,
        image_max_side: int = D.VLM_IMAGE_MAX_SIDE,
        jpeg_quality: int = D.VLM_JPEG_QUALITY,
        prompt_template: str | None = None,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.image_max_side = image_max_side
        self.jpeg_quality = jpeg_quality
        self.prompt_template = prompt_template or DEFAULT_PROMPT_TEMPLATE
        self.clip_as = D.CLIP_AS  # "images": one image part a frame; "video": one video part (--clip-as)
        self.stats = ModelStats(f"VLM {self.model}")
        api_key = api_key or DEFAULT_API_KEY
        self._endpoint = ChatEndpoint(self.base_url, api_key, self.model, NAMES,
                                      timeout_s=timeout_s, max_retries=max_retries)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **kw: Any) -> "VLMClient":
        """A client configured by VLM_BASE_URL, VLM_MODEL and VLM_API_KEY (the CLI reads them as options)."""
        return cls(environ.get("VLM_BASE_URL"), environ.get("VLM_API_KEY"), environ.get("VLM_MODEL"), **kw)

    def __repr__(self) -> str:
        # The key is left out on purpose: reprs end up in logs.
        return f"VLMClient(base_url={redact_url(self.base_url)!r}, model={self.model!r})"

    def check(self) -> None:
        """Reachability: GET /models answers and lists the model; raises BackendUnavailable with what to do."""
        self._endpoint.check()

    def close(self) -> None:
        """Close the connections to the server."""
        self._endpoint.close()

    def generate_caption(self, frame_bgr: np.ndarray, prompt: str) -> CaptionResult:
        """Caption one BGR frame; failures come back as success=False, never as exceptions."""
        return self.generate_clip(Clip.single(0, 0.0, frame_bgr), prompt)

    def generate_clip(self, clip: Clip, prompt: str) -> CaptionResult:
        """Caption a clip in one request: its frames in time order, each after its time (or, with
        clip_as "video", one video part); one frame is sent as a still. Never raises."""
        t0 = time.perf_counter()
        video = self.clip_as == "video" and len(clip.frames) > 1
        frames = [clip.key_frame] if video else clip.frames  # a video part encodes its own frames
        images = [prepare_image(f.image, self.image_max_side, self.jpeg_quality) for f in frames]
        if len(clip.frames) == 1:
            content = [{"type": "image_url", "image_url": {"url": images[0].data_url}},
                       {"type": "text", "text": prompt}]
        elif video:
            content = video_content(clip, prompt, self.image_max_side, self.jpeg_quality)
        else:
            content = images_content(clip, images, prompt)
        prep_ms = (time.perf_counter() - t0) * 1000.0
        image = images[0 if video else clip.key]
        messages = [{"role": "user", "content": content}]
        out = self._endpoint.chat(messages, max_tokens=self.max_tokens, temperature=self.temperature)
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
                "jpeg_bytes": sum(i.jpeg_bytes for i in images),  # video: the key frame's
                **({"clip_frames": len(clip.frames), "clip_as": self.clip_as} if len(clip.frames) > 1 else {}),
                "reasoning_chars": len(out.reasoning),
                "server_model": out.server_model,
            },
            image_prep_ms=prep_ms,
            api_time=(out.end_time - out.start_time) * 1000.0,
            prompt=prompt,
        )
        self.stats.record(result)
        return result


def images_content(clip: Clip, images: list[PreparedImage], prompt: str) -> list[dict]:
    """The request's content for a clip: each frame's time, then its image, in order; the prompt last."""
    content: list[dict] = []
    for n, (frame, image) in enumerate(zip(clip.frames, images), 1):
        content.append({"type": "text", "text": frame_label(n, frame.video_time)})
        content.append({"type": "image_url", "image_url": {"url": image.data_url}})
    content.append({"type": "text", "text": prompt})
    return content


def video_content(clip: Clip, prompt: str, max_side: int, quality: int) -> list[dict]:
    """The request's content for a clip as one video part: vLLM reads a ``data:video/jpeg`` URL as
    comma-separated base64 JPEG frames (vllm/multimodal/media/video.py, VideoMediaIO.load_base64),
    which it stacks, so every frame is sent at the key frame's size; the frames' times go in the text."""
    import cv2

    from video_summarizer.frames import downscale, to_jpeg_bytes

    key = downscale(clip.key_frame.image, max_side)
    height, width = key.shape[:2]
    parts = []
    for frame in clip.frames:
        image = frame.image
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        parts.append(base64.b64encode(to_jpeg_bytes(image, None, quality)).decode("ascii"))
    times = ", ".join(format_video_time(f.video_time, 1) for f in clip.frames)
    return [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(parts)}},
            {"type": "text", "text": f"The video's {len(parts)} frames are at {times}. {prompt}"}]
