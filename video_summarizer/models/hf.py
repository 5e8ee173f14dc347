"""Helpers shared by the in-process transformers backends (the summarizer's and the caption model's).

Stages must not import each other, so what the local LLM and the local VLM have in common
lives here: device and dtype choice, a streamer that stamps the real time of the first
generated token, and ``generate()`` on a worker thread with a timeout that cancels it at the
next token. torch and transformers are imported inside the functions, never at import time.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from video_summarizer.errors import BackendUnavailable


def resolve_device(device: str = "auto") -> str:
    """auto = CUDA, then Apple MPS, then CPU; anything else is taken as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str, *, option: str | None = None) -> Any:
    """auto = bfloat16 (or float16) on CUDA, float16 on MPS, float32 on CPU; or a torch dtype name.

    An unknown name raises BackendUnavailable naming ``option`` (the CLI option that set it).
    """
    import torch

    if dtype != "auto":
        value = getattr(torch, str(dtype).removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise BackendUnavailable(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16",
                                     option=option)
        return value
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


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
