"""A source's traces, made beside the loop from what each stage hands back.

The loop runs faces, caption and summary and hands their outcomes here; this module turns them
into the `frame_processing` (or `video_summary`) trace, its face_recognition / vlm_caption /
llm_summarization spans, the generations (recorded with the results' own stamps) and the
scores. Names and values are the integration guide's.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from video_summarizer import scores
from video_summarizer.frames import to_jpeg_bytes
from video_summarizer.results import CaptionOutcome, FaceOutcome, GenerationResult, MotionReading, SummaryOutcome
from video_summarizer.tracing.protocol import Tracker
from video_summarizer.tracing.records import GenerationRecord, SpanRecord

FRAME_OVERALL = "mean of the stages' success, latency and quality"


@dataclass(frozen=True)
class TraceSettings:
    """What a source's traces carry: its label, the run's session, live or file, the score scales."""

    label: str
    session_id: str
    live: bool
    frames: tuple[int, int] | None = None  # --trace-frames: (longest side, JPEG quality)
    vlm_worst_ms: float = 5000.0
    llm_worst_ms: float = 30000.0


class FrameTracer:
    """One source's traces: a frame's spans, generations and scores, made from the stage outcomes."""

    def __init__(self, tracker: Tracker, settings: TraceSettings) -> None:
        self.tracker = tracker
        self.settings = settings

    @contextmanager
    def frame(self, frame_index: int, video_time: float,
              motion: MotionReading | None = None) -> Iterator["FrameTrace"]:
        """The `frame_processing` trace of one frame; its overall_quality is scored on leaving."""
        s = self.settings
        metadata = {"frame_index": frame_index, "video_time_s": round(video_time, 3), "source": s.label}
        if motion is not None:  # the motion detector's reading of this frame (motion on only)
            metadata["motion"] = motion.as_dict()
        with self.tracker.create_trace(
                "frame_processing", user_id=s.label, session_id=s.session_id,
                tags=["live" if s.live else "file"], metadata=metadata,
        ) as handle:
            trace = FrameTrace(self, handle.id, handle)
            yield trace
            if not trace.held:  # else the stage it waits for scores it (FrameTrace.release)
                trace.score_overall(FRAME_OVERALL)

    @contextmanager
    def final(self, captions: int) -> Iterator["FrameTrace"]:
        """The `video_summary` trace of the final summary."""
        s = self.settings
        with self.tracker.create_trace("video_summary", user_id=s.label, session_id=s.session_id,
                                       tags=["final"], metadata={"source": s.label, "captions": captions}) as handle:
            trace = FrameTrace(self, handle.id)
            yield trace
            trace.score_overall("final summary: success, latency and quality")


class FrameTrace:
    """One trace being made: each stage's span, generation and scores as its outcome arrives."""

    def __init__(self, tracer: FrameTracer, trace_id: str, handle: Any = None) -> None:
        self.tracker = tracer.tracker
        self.settings = tracer.settings
        self.trace_id = trace_id
        # The open trace's handle, kept: the tracker holds a trace's context while its handle lives,
        # so a stage recorded after the frame's job (the summary lane) nests under the frame's root.
        self._handle = handle
        self.held = False
        self._overall: list[float] = []
        self._on = tracer.tracker.recording  # off: every step returns at once (no-op tracing stays ~free)

    def hold(self) -> "FrameTrace":
        """Keep this trace for a stage that ends after the frame's job; its overall_quality waits for release()."""
        self.held = True
        return self

    def release(self) -> None:
        """The held trace is complete: score its overall_quality (with the late stage's scores, if it ran)."""
        if self.held:
            self.held = False
            self.score_overall(FRAME_OVERALL)
            self._handle = None

    def faces(self, outcome: FaceOutcome | None) -> None:
        """The face_recognition span (none without a face model)."""
        if outcome is None or not self._on:
            return
        matches, failure = outcome.matches, outcome.failure
        if failure is not None:
            self.tracker.record_span(self.trace_id, SpanRecord(
                "face_recognition", outcome.start, outcome.end, error=f"{type(failure).__name__}: {failure}"))
            return
        self.tracker.record_span(self.trace_id, SpanRecord("face_recognition", outcome.start, outcome.end, output={
            "names": [m.name for m in matches],
            "distances": [None if m.distance is None else round(m.distance, 3) for m in matches],
            "boxes": [list(m.box) for m in matches],
            "reused": [m.reused for m in matches],  # identity carried from the previous frame
        }))

    def caption(self, outcome: CaptionOutcome, names: list[str], frame_index: int) -> None:
        """The vlm_caption span with its generation (and the frame as sent, with --trace-frames), 3 scores."""
        if not self._on:
            return
        result, managed, traced = outcome.result, outcome.managed, self.settings.frames
        clip = outcome.clip if outcome.clip is not None and len(outcome.clip.frames) > 1 else None
        span = {"clip_frames": [f.index for f in clip.frames]} if clip else {}
        gen = GenerationRecord(
            name="vlm_caption", model=outcome.model, input=outcome.prompt, result=result,
            metadata={"faces_detected": len(names), "frame_index": frame_index, **span, **outcome.privacy,
                      **_prompt_metadata(managed), "api_time_ms": round(result.api_time, 1),
                      "image_prep_ms": round(result.image_prep_ms, 1)},
            prompt=managed.client if managed else None,
            image_jpeg=to_jpeg_bytes(outcome.sent, *traced) if traced else None,  # after the blur
            images_jpeg=tuple(to_jpeg_bytes(f.image, *traced) for f in clip.frames) if traced and clip else ())
        recorded = self.tracker.record_span(self.trace_id, SpanRecord(
            "vlm_caption", outcome.start, outcome.end, metadata={"faces": names, **outcome.privacy}, generation=gen))
        values = scores.vlm_scores(result, worst_ms=self.settings.vlm_worst_ms)
        self._scores(recorded.generation_id, values, result)

    def summary(self, outcome: SummaryOutcome) -> None:
        """The llm_summarization span with its generation, 3 scores and the grounding score."""
        if not self._on:
            return
        result, managed = outcome.result, outcome.managed
        meta = {"captions": len(outcome.window), "final": outcome.final}
        gen = GenerationRecord(name="llm_summary", model=outcome.model, input=outcome.messages, result=result,
                               metadata={**meta, **_prompt_metadata(managed)},
                               prompt=managed.client if managed else None)
        recorded = self.tracker.record_span(self.trace_id, SpanRecord(
            "llm_summarization", outcome.start, outcome.end, metadata=meta, generation=gen))
        values = scores.llm_scores(result, worst_ms=self.settings.llm_worst_ms)
        self._scores(recorded.generation_id, values, result)
        grounded = outcome.grounded
        if grounded is not None and grounded.grounding is not None:
            self.tracker.log_score(self.trace_id, scores.GROUNDING_SCORE_NAME, grounded.grounding,
                                   observation_id=recorded.generation_id,
                                   comment=f"{grounded.grounded} of {len(grounded.sentences)} sentences cite "
                                           f"a caption; {grounded.dropped} citations dropped")

    def score_overall(self, comment: str) -> None:
        """overall_quality on the trace: the mean of each stage's success, latency and quality."""
        if self._overall:
            self.tracker.log_score(self.trace_id, "overall_quality", sum(self._overall) / len(self._overall),
                                   score_trace=True, comment=comment)

    def _scores(self, observation_id: str | None, values: dict, result: GenerationResult) -> None:
        self._overall.append(scores.overall_from(values))
        comment = "ok" if result.success else f"failed: {result.error_kind}"
        for name, value in values.items():
            self.tracker.log_score(self.trace_id, name, value, observation_id=observation_id, comment=comment)


def _prompt_metadata(managed: Any) -> dict:
    """Which prompt a generation used, for the trace (Langfuse also links a fetched one)."""
    if managed is None:
        return {}
    return {"prompt": managed.name, "prompt_source": managed.source, "prompt_version": managed.version}
