"""The result type both model clients return: everything the tracker needs for a generation.

Times are epoch seconds from ``time.time()`` (UTC by definition); the tracker turns them
into timezone-aware datetimes. The loop never measures model timing itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationResult:
    """One model call: its text, outcome, timing and token usage."""

    text: str
    success: bool
    model: str
    start_time: float  # request/generation started (epoch s)
    end_time: float  # last token / failure (epoch s)
    completion_start_time: float | None = None  # first generated token arrived (epoch s)
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    # 'timeout', 'connection', 'rate_limit', 'server_error', 'client_error',
    # 'stream_broken', 'bad_response', 'model_error'
    error_kind: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token in ms, None when no token came."""
        if self.completion_start_time is None:
            return None
        return (self.completion_start_time - self.start_time) * 1000.0

    @property
    def latency_ms(self) -> float:
        """Whole call in ms."""
        return (self.end_time - self.start_time) * 1000.0

    def usage_details(self) -> dict[str, int] | None:
        """Token usage in Langfuse's usage_details shape, None when unknown."""
        usage = {}
        if self.input_tokens is not None:
            usage["input"] = int(self.input_tokens)
        if self.output_tokens is not None:
            usage["output"] = int(self.output_tokens)
        return usage or None


@dataclass
class CaptionResult(GenerationResult):
    """One caption request: the GenerationResult fields plus image and API timing."""

    image_prep_ms: float = 0.0  # resize + JPEG encode + base64
    api_time: float = 0.0  # ms from sending the request to the end of the stream
    prompt: str = ""

    @property
    def caption(self) -> str:
        """The caption text (empty on failure)."""
        return self.text


@dataclass(frozen=True)
class TimedCaption:
    """A caption at a video time (seconds), with the names of the faces recognized then."""

    video_time: float
    text: str
    faces: tuple[str, ...] = ()
    start: float | None = None  # the first frame's time when the caption covers a clip (else video_time)


@dataclass
class SummaryResult(GenerationResult):
    """One summary generation: GenerationResult plus when generation started (after tokenization)."""

    generation_start_time: float | None = None

    @property
    def summary(self) -> str:
        """The summary text (empty on failure)."""
        return self.text


# -- what each stage step of the loop hands back (the loop builds them; tracing reads them) -------
@dataclass(frozen=True)
class FaceOutcome:
    """The faces recognized on a frame, and when recognition started and ended (epoch s)."""

    matches: tuple  # faces.FaceMatch, in the order the face model found them
    start: float
    end: float
    failure: Exception | None = None  # the face model raised: traced as an ERROR span, then raised again

    @property
    def names(self) -> list[str]:
        """The known names on the frame, sorted, once each."""
        return sorted({m.name for m in self.matches if m.name != "unknown"})


@dataclass(frozen=True)
class CaptionOutcome:
    """One caption call: its result, the prompt, the image as sent (after any blur), its span's times."""

    result: CaptionResult
    prompt: str
    managed: Any  # prompts.ManagedPrompt or None (the model's built-in prompt)
    sent: Any  # the image the caption model got
    privacy: dict
    start: float
    end: float
    model: str = ""  # the caption model's name, as traces and observers give it
    clip: Any = None  # the Clip as sent (blurred), its times as the captions give them; None: sent alone


@dataclass(frozen=True)
class SummaryOutcome:
    """One summary call: its result, the messages sent, the window and its grounding, its span's times."""

    result: SummaryResult
    messages: list
    managed: Any
    window: tuple
    final: bool
    grounded: Any  # citations.GroundedSummary or None (the call failed)
    start: float
    end: float
    model: str = ""  # the summary model's name


@dataclass(frozen=True)
class MotionReading:
    """What the motion detector saw in one read frame (motion.MotionDetector.update)."""

    moving: bool  # motion is on (after hysteresis)
    started: bool  # it started with this frame
    ended: bool  # it ended with this frame
    area: float  # the moving regions' share of the frame, 0..1
    box: tuple[int, int, int, int] | None  # (x, y, w, h) around them, in the frame's pixels
    video_time: float

    def as_dict(self) -> dict:
        """The reading as plain JSON values (trace metadata)."""
        return {"moving": self.moving, "started": self.started, "ended": self.ended,
                "area": round(self.area, 4), "box": list(self.box) if self.box else None,
                "video_time": round(self.video_time, 3)}
# -- clips: the frames one caption covers (clips.ClipCollector makes them) -------------------------
@dataclass(frozen=True)
class ClipFrame:
    """One frame of a clip: its index in the source, its video time (s) and its pixels (BGR)."""

    index: int
    video_time: float
    image: Any  # np.ndarray, BGR; a downscaled copy except for the key frame


@dataclass(frozen=True)
class Clip:
    """The frames one caption covers, in time order; ``key`` is the position of the key frame."""

    frames: tuple[ClipFrame, ...]
    key: int

    @property
    def key_frame(self) -> ClipFrame:
        """The frame the selector took (its faces, its trace)."""
        return self.frames[self.key]

    @property
    def start(self) -> float:
        """Video time of the first frame."""
        return self.frames[0].video_time

    @property
    def end(self) -> float:
        """Video time of the last frame."""
        return self.frames[-1].video_time

    def span(self, ndigits: int = 3) -> dict:
        """The caption event's ``span``: first and last frame, start and end video time."""
        return {"first_frame": self.frames[0].index, "last_frame": self.frames[-1].index,
                "start": round(self.start, ndigits), "end": round(self.end, ndigits)}

    @classmethod
    def single(cls, index: int, video_time: float, image: Any) -> "Clip":
        """A one-frame clip: today's still."""
        return cls((ClipFrame(index, video_time, image),), 0)
