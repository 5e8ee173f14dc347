"""What the tracker records after the fact, from the results' own stamps.

A generation is recorded once its model call is over, with the result's start_time,
completion_start_time and end_time: the one pair of stamps the events, the statistics,
/metrics and Langfuse all read, so every TTFT is the same number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from video_summarizer.results import GenerationResult


@dataclass(frozen=True)
class GenerationRecord:
    """A finished model call: its name, model, input and the result with its stamps."""

    name: str
    model: str
    input: Any
    result: GenerationResult
    metadata: dict | None = None
    prompt: Any = None  # the PromptClient the input came from (Langfuse links it)
    image_jpeg: bytes | None = None  # --trace-frames: the frame as the model got it
    images_jpeg: tuple[bytes, ...] = ()  # --trace-frames with a clip: every frame of it, in time order


@dataclass(frozen=True)
class SpanRecord:
    """A finished stage span (epoch-second start and end), with at most one generation inside."""

    name: str
    start: float
    end: float
    metadata: dict | None = None
    input: Any = None
    output: Any = None
    generation: GenerationRecord | None = None
    error: str | None = None  # the stage raised: the span is recorded with level ERROR and this reason


@dataclass(frozen=True)
class Recorded:
    """The ids a recorded span and its generation got (None: nothing recorded)."""

    span_id: str | None
    generation_id: str | None
