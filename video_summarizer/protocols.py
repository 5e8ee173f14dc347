"""The model boundary: what the loop needs from each stage, one required method each.

A stage is any object with the required method; the rest is optional, with the default
the helpers below apply when an object lacks it:

| protocol      | required                                   | optional (default)                                  |
| ------------- | ------------------------------------------ | --------------------------------------------------- |
| CaptionModel  | generate_caption(frame, prompt) -> CaptionResult | model (class name), stats (None), build_prompt(names) (the default template), check() / load() / close() (nothing) |
| SummaryModel  | generate(messages) -> SummaryResult        | model, stats, build_messages(captions, previous_summary, final=, system_prompt=) (estimated budget), check() / load() / close() |
| FaceModel     | recognize(frame, timestamp=None) -> list of matches (name, distance, box) | load() / close() (nothing) |
| FrameSource   | frames() -> iterator of frames (index, timestamp, image) | close() (nothing)                  |

``check()`` means one thing everywhere: a cheap reachability check that loads nothing (a
server's /models listing; for an in-process model, that its files are there). ``load()`` is
its own step, with its own progress line. The CLI calls check() on every model first, then
load(), so a wrong option fails in seconds, before any long load.

Implementations: vlm_client_module.VLMClient and models.local_vlm.LocalVLM (CaptionModel),
llm_summarizer.LLMSummarizer (SummaryModel), faces.FaceRecognizer (FaceModel),
sources.FrameSource (FrameSource).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from video_summarizer.results import CaptionResult, SummaryResult, TimedCaption


@runtime_checkable
class CaptionModel(Protocol):
    """Captions one BGR frame; failures come back as success=False, never raised."""

    def generate_caption(self, frame: np.ndarray, prompt: str) -> CaptionResult:
        """The caption of one frame for the prompt."""
        ...


@runtime_checkable
class SummaryModel(Protocol):
    """Writes a summary from chat messages; failures come back as success=False, never raised."""

    def generate(self, messages: list[dict]) -> SummaryResult:
        """The model's answer to the messages."""
        ...


@runtime_checkable
class FaceMatchLike(Protocol):
    """One face found in a frame: who ("unknown" when no one), how far from the reference, where (t, r, b, l)."""

    name: str
    distance: float | None
    box: tuple[int, int, int, int]


@runtime_checkable
class FaceModel(Protocol):
    """Finds (and names) the faces in one BGR frame."""

    def recognize(self, frame: np.ndarray, timestamp: float | None = None) -> Sequence[Any]:
        """The faces in the frame, boxes in its pixel coordinates."""
        ...


@runtime_checkable
class FrameSource(Protocol):
    """Yields frames (index, timestamp, BGR image) in order."""

    def frames(self) -> Iterator[Any]:
        """The frames, until the source ends or is stopped."""
        ...


def model_name(stage: Any) -> str:
    """The stage's model name for traces: its ``model`` attribute, else its class name."""
    name = getattr(stage, "model", None)
    return name if isinstance(name, str) and name else type(stage).__name__


def stats_of(stage: Any) -> Any | None:
    """The stage's statistics object (ModelStats), None when it keeps none."""
    return getattr(stage, "stats", None)


def check(stage: Any) -> None:
    """The stage's cheap reachability check, if it has one (BackendUnavailable says what to fix)."""
    method = getattr(stage, "check", None)
    if callable(method):
        method()


def load(stage: Any) -> None:
    """Load the stage's model, if it has a load step (after check)."""
    method = getattr(stage, "load", None)
    if callable(method):
        method()


def close(stage: Any) -> None:
    """Release what the stage holds, if it holds anything."""
    method = getattr(stage, "close", None)
    if callable(method):
        method()


def caption_prompt(stage: Any, face_names: Sequence[str] = ()) -> str:
    """The stage's caption prompt for these faces, or the default template's."""
    method = getattr(stage, "build_prompt", None)
    if callable(method):
        return method(face_names)
    from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE, render_prompt

    return render_prompt(DEFAULT_PROMPT_TEMPLATE, face_names)


def summary_messages(stage: Any, captions: Sequence[TimedCaption], previous_summary: str | None, *,
                     final: bool = False, system_prompt: str | None = None) -> list[dict]:
    """The stage's summary prompt, or the shared one with an estimated token budget."""
    extra = {"system_prompt": system_prompt} if system_prompt is not None else {}
    method = getattr(stage, "build_messages", None)
    if callable(method):
        return method(captions, previous_summary, final=final, **extra)
    from video_summarizer.models.summary_prompt import build_messages

    return build_messages(captions, previous_summary, final=final, **extra)
