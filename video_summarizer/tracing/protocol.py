"""What the package calls on a tracker (langfuse_tracker.LangfuseTracker), as a Protocol.

The package never imports the tracker (a named top-level module); it is handed one. This is
the part of it the loop, the prompts, the watch server and the report use today: traces,
spans and generations opened as contexts around the work, scores, prompts, statistics and a
bounded close. The no-op contexts (tracing.basics.Dummy*) fit the same handle types.
"""
from __future__ import annotations

from typing import Any, ContextManager, Protocol

from video_summarizer.tracing.records import GenerationRecord, Recorded, SpanRecord


class ObservationHandle(Protocol):
    """An open trace, span or generation: its id, and what can be added to it."""

    id: str

    def update(self, *, output: Any = None, metadata: Any = None, **fields: Any) -> Any:
        """Add output / metadata (a generation also takes usage and completion_start_time)."""
        ...

    def set_error(self, reason: str) -> None:
        """Mark it level=ERROR with the reason."""
        ...


class Tracker(Protocol):
    """The tracing calls the package makes; every one is a cheap no-op when tracing is off."""

    recording: bool  # False in full no-op mode: the frame tracer then builds no record at all

    @property
    def enabled(self) -> bool:
        """True when the Langfuse client was built (keys present)."""
        ...

    def create_trace(self, name: str, *, user_id: str | None = None, session_id: str | None = None,
                     tags: list[str] | None = None, metadata: dict | None = None,
                     input: Any = None) -> ContextManager[ObservationHandle]:
        """A trace context; ``.id`` is its trace id."""
        ...

    def create_span(self, trace_id: str | None, name: str, *, input: Any = None,
                    metadata: Any = None) -> ContextManager[ObservationHandle]:
        """A span context under the current observation of that trace."""
        ...

    def start_generation(self, trace_id: str | None, name: str, model: str | None = None,
                         input: Any = None, metadata: Any = None, model_parameters: dict | None = None,
                         prompt: Any = None, image_jpeg: bytes | None = None) -> ContextManager[ObservationHandle]:
        """A generation context whose clock starts when it is entered (before the model call)."""
        ...

    def record_span(self, trace_id: str | None, span: SpanRecord) -> Recorded:
        """A finished stage span (and the generation inside it) recorded from its own stamps."""
        ...

    def record_generation(self, trace_id: str | None, gen: GenerationRecord) -> str | None:
        """A finished model call recorded with its result's own stamps (one TTFT everywhere); its id."""
        ...

    def log_score(self, trace_id: str | None, name: str, value: Any, data_type: str | None = None,
                  comment: str | None = None, score_trace: bool = False,
                  observation_id: str | None = None) -> None:
        """Score an observation, or the whole trace with score_trace=True."""
        ...

    def get_prompt(self, name: str, **kw: Any) -> Any:
        """A managed prompt (the SDK's PromptClient) or None; never raises."""
        ...

    def stats(self) -> dict:
        """Counts of traced items and of delivery (for /metrics and the report)."""
        ...

    def format_stats(self) -> str:
        """One line for the exit report."""
        ...

    def close(self, deadline_s: float = 5.0) -> Any:
        """Flush and shut down within the deadline."""
        ...
