"""The model boundary: what the loop needs from each stage, one required method each.

Each stage is a small class with one abstract method; everything optional has its default
here, so the loop calls it without asking whether it is there:

| base          | required                                   | optional (default)                                  |
| ------------- | ------------------------------------------ | --------------------------------------------------- |
| Backend       | —                                          | model ("": the class name is the trace name), stats (None), check() / load() / close() (nothing) |
| CaptionModel  | generate_caption(frame, prompt) -> CaptionResult | build_prompt(names) (prompt_template, the default one), generate_clip(clip, prompt) (the key frame) |
| SummaryModel  | generate(messages) -> SummaryResult        | build_messages(captions, previous_summary, final=, system_prompt=) (estimated budget) |
| FaceModel     | recognize(frame, timestamp=None) -> list of FaceMatch | counts() (None), format_stats() ("") |
| FrameObserver | __call__(image, record, matches)           | format_stats() (None: nothing for the exit report)  |

``check()`` means one thing everywhere: a cheap reachability check that loads nothing (a
server's /models listing; for an in-process model, that its files are there). ``load()`` is
its own step, with its own progress line. The CLI calls check() on every model first, then
load(), so a wrong option fails in seconds, before any long load.

Implementations: vlm_client_module.VLMClient and models.local_vlm.LocalVLM (CaptionModel),
llm_summarizer.LLMSummarizer (SummaryModel), faces.FaceRecognizer (FaceModel),
datasets.DatasetWriter and the watch page (FrameObserver); outputs.EventWriter is an EventSink.
Frames come from sources.FrameSource (an ABC of its own).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from video_summarizer.prompts import DEFAULT_PROMPT_TEMPLATE, render_prompt

if TYPE_CHECKING:
    import numpy as np

    from video_summarizer.faces import FaceMatch
    from video_summarizer.results import CaptionResult, Clip, SummaryResult, TimedCaption
    from video_summarizer.stats import ModelStats


class Backend:
    """What every model stage has: a name for traces, statistics, and the start-up steps."""

    model: str = ""  # the trace name; "" -> the class name
    stats: ModelStats | None = None  # call statistics, when the stage keeps them

    @property
    def name(self) -> str:
        """The model's name for traces and metrics: ``model``, else the class name."""
        model = self.model
        return model if isinstance(model, str) and model else type(self).__name__

    def check(self) -> None:
        """Cheap reachability (raises BackendUnavailable with what to fix); default: nothing to check."""

    def load(self) -> None:
        """Load the model (after check); default: nothing to load."""

    def close(self) -> None:
        """Release what the stage holds; default: nothing held."""


class CaptionModel(Backend, ABC):
    """Captions one BGR frame; failures come back as success=False, never raised."""

    prompt_template: str = DEFAULT_PROMPT_TEMPLATE

    @abstractmethod
    def generate_caption(self, frame: np.ndarray, prompt: str) -> CaptionResult:
        """The caption of one frame for the prompt."""

    def generate_clip(self, clip: Clip, prompt: str) -> CaptionResult:
        """The caption of a clip's frames (in time order) for the prompt; default: its key frame alone."""
        return self.generate_caption(clip.key_frame.image, prompt)

    def build_prompt(self, face_names: Sequence[str] = ()) -> str:
        """The caption prompt, naming the recognized people when there are any."""
        return render_prompt(self.prompt_template, face_names)


class SummaryModel(Backend, ABC):
    """Writes a summary from chat messages; failures come back as success=False, never raised."""

    @abstractmethod
    def generate(self, messages: list[dict]) -> SummaryResult:
        """The model's answer to the messages."""

    def build_messages(self, captions: Sequence[TimedCaption], previous_summary: str | None, *,
                       final: bool = False, system_prompt: str | None = None) -> list[dict]:
        """The summary prompt, with an estimated token budget (a model with a tokenizer counts exactly)."""
        from video_summarizer.models.summary_prompt import build_messages

        extra = {"system_prompt": system_prompt} if system_prompt is not None else {}
        return build_messages(captions, previous_summary, final=final, **extra)


class FaceModel(Backend, ABC):
    """Finds (and names) the faces in one BGR frame."""

    @abstractmethod
    def recognize(self, frame: np.ndarray, timestamp: float | None = None) -> list[FaceMatch]:
        """The faces in the frame, boxes in its pixel coordinates (``timestamp``: the frame's time)."""

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]] | None:
        """Face boxes only (no names, no identity kept), to blur a clip's other frames; None: cannot."""
        return None

    def counts(self) -> dict | None:
        """What the model counted (frames, faces, names) as JSON-able values; None when nothing."""
        return None

    def format_stats(self) -> str:
        """A block for the exit report; "" when there is nothing to say."""
        return ""


class FrameObserver(ABC):
    """Sees each captioned frame beside the loop (the dataset writer, the watch page); never stops it."""

    @abstractmethod
    def __call__(self, image: np.ndarray, record: dict, matches: list[FaceMatch]) -> None:
        """One captioned frame: the image as the caption model got it, the caption event's fields
        plus what the model was asked, and the face matches."""

    def format_stats(self) -> str | None:
        """A line for the exit report; None when the observer has nothing to report."""
        return None


class EventSink(Protocol):
    """Where the run's events go (outputs.EventWriter; on Ray, the worker's buffer)."""

    to_stdout: bool

    def emit(self, event_type: str, **fields: Any) -> None:
        """Write one event."""
        ...

    def close(self) -> None:
        """Flush and close."""
        ...
