"""Stub stages for in-process tests of the loop, the runner and the commands.

Each is a real subclass of the base the package defines (sources.FrameSource, backends.CaptionModel,
backends.SummaryModel) or implements its Protocol (tracing.protocol.Tracker), so the code under
test runs unchanged; only the remote ends (a camera, a model server, Langfuse) are stood in for.
The models answer from a script and keep what they were asked; the tracker keeps what it was told.
"""
from __future__ import annotations

import itertools
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from video_summarizer.backends import CaptionModel, SummaryModel
from video_summarizer.results import CaptionResult, SummaryResult
from video_summarizer.sources import Frame, FrameSource
from video_summarizer.stats import ModelStats
from video_summarizer.tracing.records import GenerationRecord, Recorded, SpanRecord


class ListSource(FrameSource):
    """A file-like source over a list of BGR images at ``fps`` (frame i at i / fps video seconds)."""

    def __init__(self, images: Sequence[np.ndarray], *, fps: float = 10.0, label: str = "list") -> None:
        super().__init__(label, live=False, cleanup=ExitStack(), kind="file")
        self.images = list(images)
        self.fps = fps
        self.frames_expected = len(self.images)

    def frames(self) -> Iterator[Frame]:
        """Every image in order, until the list ends or stop() is called."""
        for index, image in enumerate(self.images):
            if self.stopped:
                return
            self.frames_read += 1
            yield Frame(index, index / self.fps, time.time(), image)
        self.ended = True


def numbered_images(n: int, *, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """n small frames, each a different flat grey (so change gating sees every one as new)."""
    return [np.full((height, width, 3), (37 * i) % 256, np.uint8) for i in range(n)]


@dataclass
class Call:
    """One model call as the stub saw it."""

    prompt: Any  # the caption prompt, or the summary messages
    frame_shape: tuple | None = None


class ScriptedCaptions(CaptionModel):
    """Captions from a script: ``reply(n, prompt)`` for the n-th call (from 0); a reply of None fails."""

    def __init__(self, reply: Callable[[int, str], str | None] | Sequence[str | None] = ("A scene.",),
                 *, model: str = "scripted-vlm", ttft_s: float = 0.01) -> None:
        self.reply = reply
        self.model = model
        self.ttft_s = ttft_s
        self.calls: list[Call] = []
        self.stats = ModelStats("VLM")  # the exit report reads it, as it reads the real clients'
        self._lock = threading.Lock()

    def generate_caption(self, frame: np.ndarray, prompt: str) -> CaptionResult:
        """The scripted caption, with stamps one ``ttft_s`` apart (no sleeping)."""
        with self._lock:
            n = len(self.calls)
            self.calls.append(Call(prompt, tuple(frame.shape)))
        text = self.reply(n, prompt) if callable(self.reply) else self.reply[n % len(self.reply)]
        result = self._result(text, prompt, time.time())
        self.stats.record(result)
        return result

    def _result(self, text: str | None, prompt: str, start: float) -> CaptionResult:
        if text is None:
            return CaptionResult(text="", success=False, model=self.model, start_time=start, end_time=start,
                                 error="scripted failure", error_kind="server_error", prompt=prompt)
        return CaptionResult(text=text, success=True, model=self.model, start_time=start,
                             completion_start_time=start + self.ttft_s, end_time=start + 2 * self.ttft_s,
                             input_tokens=10, output_tokens=len(text.split()), prompt=prompt)


class ScriptedSummaries(SummaryModel):
    """Summaries from a script: ``reply(n, messages)`` for the n-th call; a reply of None fails."""

    def __init__(self, reply: Callable[[int, list], str | None] | Sequence[str | None] = ("A summary.",),
                 *, model: str = "scripted-llm") -> None:
        self.reply = reply
        self.model = model
        self.calls: list[Call] = []
        self.stats = ModelStats("LLM")
        self._lock = threading.Lock()

    def generate(self, messages: list[dict]) -> SummaryResult:
        """The scripted summary."""
        with self._lock:
            n = len(self.calls)
            self.calls.append(Call(messages))
        text = self.reply(n, messages) if callable(self.reply) else self.reply[n % len(self.reply)]
        start = time.time()
        if text is None:
            result = SummaryResult(text="", success=False, model=self.model, start_time=start, end_time=start,
                                   error="scripted failure", error_kind="server_error")
        else:
            result = SummaryResult(text=text, success=True, model=self.model, start_time=start,
                                   completion_start_time=start + 0.01, end_time=start + 0.02)
        self.stats.record(result)
        return result


@dataclass
class Handle:
    """An open trace, span or generation of the RecordingTracker."""

    id: str
    kind: str
    name: str
    trace_id: str
    fields: dict = field(default_factory=dict)
    error: str | None = None

    def update(self, *, output: Any = None, metadata: Any = None, **fields: Any) -> None:
        """Keep what was added."""
        self.fields.update({k: v for k, v in dict(output=output, metadata=metadata, **fields).items()
                            if v is not None})

    def set_error(self, reason: str) -> None:
        """Keep the reason."""
        self.error = reason


class RecordingTracker:
    """A tracing.protocol.Tracker that keeps every call: traces, spans, generations and scores."""

    recording = True

    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # what the assembly handed it (keys, trace log, outbox)
        self.traces: list[Handle] = []
        self.spans: list[tuple[str | None, SpanRecord]] = []
        self.generations: list[tuple[str | None, GenerationRecord]] = []
        self.scores: list[dict] = []
        self.closed_with: float | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Never a Langfuse client."""
        return False

    def _id(self, width: int) -> str:
        with self._lock:
            return f"{next(self._ids):0{width}x}"

    @contextmanager
    def create_trace(self, name: str, **fields: Any) -> Iterator[Handle]:
        """A trace handle, kept."""
        handle = Handle(self._id(32), "trace", name, "", dict(fields))
        handle.trace_id = handle.id
        with self._lock:
            self.traces.append(handle)
        yield handle

    @contextmanager
    def create_span(self, trace_id: str | None, name: str, **fields: Any) -> Iterator[Handle]:
        """A span handle (not kept: the loop records its spans after the fact)."""
        yield Handle(self._id(16), "span", name, trace_id or "", dict(fields))

    @contextmanager
    def start_generation(self, trace_id: str | None, name: str, model: str | None = None,
                         **fields: Any) -> Iterator[Handle]:
        """A generation handle (not kept)."""
        yield Handle(self._id(16), "generation", name, trace_id or "", dict(fields, model=model))

    def record_span(self, trace_id: str | None, span: SpanRecord) -> Recorded:
        """Keep the span (and its generation)."""
        with self._lock:
            self.spans.append((trace_id, span))
            if span.generation is not None:
                self.generations.append((trace_id, span.generation))
        return Recorded(self._id(16), self._id(16) if span.generation is not None else None)

    def record_generation(self, trace_id: str | None, gen: GenerationRecord) -> str | None:
        """Keep the generation."""
        with self._lock:
            self.generations.append((trace_id, gen))
        return self._id(16)

    def log_score(self, trace_id: str | None, name: str, value: Any, data_type: str | None = None,
                  comment: str | None = None, score_trace: bool = False,
                  observation_id: str | None = None) -> None:
        """Keep the score."""
        with self._lock:
            self.scores.append({"trace_id": trace_id, "name": name, "value": value, "data_type": data_type,
                                "score_trace": score_trace, "observation_id": observation_id})

    def get_prompt(self, name: str, **kw: Any) -> Any:
        """No managed prompts: the models' built-in ones are used."""
        return None

    def stats(self) -> dict:
        """Counts of what was kept."""
        return {"traces": len(self.traces), "spans": len(self.spans), "generations": len(self.generations),
                "scores": len(self.scores)}

    def format_stats(self) -> str:
        """One line for the exit report."""
        return "Recording tracker: " + ", ".join(f"{k} {v}" for k, v in self.stats().items())

    def close(self, deadline_s: float = 5.0) -> None:
        """Remember the deadline it was closed with."""
        self.closed_with = deadline_s

    def score_names(self, trace_id: str) -> list[str]:
        """The names of the scores on one trace, in the order they came."""
        return [s["name"] for s in self.scores if s["trace_id"] == trace_id]


class ListEvents:
    """An outputs.EventSink that keeps the events in a list (type first, then the fields)."""

    to_stdout = False

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._lock = threading.Lock()

    def emit(self, event_type: str, **fields: Any) -> None:
        """Keep the event."""
        with self._lock:
            self.events.append({"type": event_type, **fields})

    def of(self, event_type: str) -> list[dict]:
        """The events of one type, in order."""
        return [e for e in self.events if e["type"] == event_type]

    def close(self) -> None:
        """Nothing to flush."""
