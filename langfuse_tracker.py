"""Every Langfuse call of the project: traces, spans, generations with a correct TTFT, scores.

Nothing else imports ``langfuse``; only the SDK's public API is used (``langfuse>=4.7,<6``).
The API is the one of the integration guide (``../shared/notes/integration-guide.md``)::

    tracker = LangfuseTracker(trace_log="traces.jsonl")      # keys from the environment
    with tracker.create_trace("frame_processing", user_id="cam0", session_id=run_id) as trace:
        with tracker.create_span(trace.id, "vlm_caption"):
            with tracker.start_generation(trace_id=trace.id, name="vlm_caption",
                                          model="qwen3", input=prompt) as gen:  # clock starts here
                result = call_model()
                gen.update(output=result.text, usage=result.usage_details(),
                           completion_start_time=result.completion_start_time)
            tracker.log_score(trace.id, "vlm_success", 1.0, observation_id=gen.id)
        tracker.log_score(trace.id, "overall_quality", 0.8, score_trace=True)
    report = tracker.close(deadline_s=5.0)

Without ``LANGFUSE_PUBLIC_KEY``/``LANGFUSE_SECRET_KEY`` the SDK client is never built and
every call is a cheap no-op returning the same types ("Dummy" contexts), so tracing never
has to be configured for the program to run.

Times: ``completion_start_time`` (and the legacy ``log_generation`` times) may be a float
epoch, an aware ``datetime`` or a naive one read as *local* time; all become aware UTC
before they reach Langfuse, so TTFT is right whatever ``TZ`` says.

Threads: OTel context lives in contextvars and does not cross threads. A span or generation
opened where its trace is not the current one is opened inside that trace's OTel context
(root span and trace attributes, as the trace's own thread has it), never as a new trace.
A trace id this tracker does not know (or no longer holds) is joined with the SDK's
``trace_context=``.

Delivery (``video_summarizer.tracing.delivery``): an exporter and an httpx transport handed
to the SDK count what the host acknowledged; an outage is a few log lines, not a line a
batch; ``close()`` flushes within a deadline and says what waits in the outbox. The trace log
format is in ``video_summarizer.tracing.trace_log``; ``trace_report.py`` reads it.
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from video_summarizer import defaults as D
from video_summarizer.tracing.basics import (
    DummyGeneration,
    DummySpan,
    DummyTrace,
    WarnOnce,
    hex_id,
    mask_secret,
    normalize_score,
    positive_float,
    positive_int,
    prompt_failure,
    run_with_deadline,
    trace_metadata,
)
from video_summarizer.tracing.delivery import (
    DEFAULT_REPORT_EVERY_S,
    SCORES,
    SPANS,
    CloseReport,
    Delivery,
    stats_line,
)
from video_summarizer.tracing.client import (
    TRACER_SCOPE,
    Client,
    build_client,
    close_client,
    disabled_reason,
    tracker_stats,
)
from video_summarizer.tracing.outbox import score_item
from video_summarizer.tracing.records import GenerationRecord, Recorded, SpanRecord
from video_summarizer.tracing.trace_log import (
    TraceLog,
    datetime_to_ns,
    frame_digest,
    iso_utc,
    observation_times,
    to_utc,
)

__all__ = ["LangfuseTracker", "CloseReport", "TraceContext", "SpanContext", "GenerationContext",
           "DummyTrace", "DummySpan", "DummyGeneration", "to_utc", "iso_utc", "mask_secret",
           "normalize_score"]

log = logging.getLogger("video_summarizer.tracker")
_DUMMY_SPAN, _DUMMY_GENERATION = DummySpan(), DummyGeneration()  # shared: they hold nothing

DEFAULT_HOST = D.LANGFUSE_HOST
DEFAULT_TIMEOUT_S = D.LANGFUSE_TIMEOUT_S
MAX_SPAN_QUEUE = 2048  # OTel BatchSpanProcessor's default max_queue_size

# The observation (our context object) active in this thread/task: mirrors OTel's current
# span so update_current_generation and log_score know whom they mean, also when disabled.
_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("tracker_current", default=None)


@contextmanager
def _attached(context: Any) -> Iterator[None]:
    """Make an OTel context current for the block (OTel's public attach/detach)."""
    from opentelemetry import context as otel_context

    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def _reset_current(token: contextvars.Token) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:  # exited in another context than entered: nothing to restore
        pass


# -- real contexts ----------------------------------------------------------------------------
class _Observation:
    """Base of the trace / span / generation contexts: SDK observation + trace log line."""

    kind = "span"

    def __init__(self, tracker: "LangfuseTracker", name: str, trace_id: str | None, *,
                 input: Any = None, metadata: Any = None, model: str | None = None,
                 model_parameters: dict | None = None, prompt: Any = None) -> None:
        self._tracker = tracker
        self.name = name
        self.trace_id = trace_id
        self.input = input
        self.metadata = metadata
        self.model = model
        self.model_parameters = model_parameters
        self.prompt = prompt
        self.id: str | None = None
        self.parent_id: str | None = None
        self.level = "DEFAULT"
        self.status_message: str | None = None
        self._obs: Any = None  # the SDK observation, None when Langfuse is disabled
        self._otel: Any = None  # its OTel span: the start/end Langfuse receives
        self._stack: ExitStack | None = None
        self._start_ns: int | None = None  # local clock, when the SDK has no span
        self._end_ns: int | None = None  # set = finished

    @property
    def start_ns(self) -> int | None:
        """Start, epoch ns: the one sent to Langfuse, else the local clock's."""
        start = getattr(self._otel, "start_time", None)
        return start if isinstance(start, int) else self._start_ns

    @property
    def end_ns(self) -> int | None:
        """End, epoch ns (None while open): the one sent to Langfuse, else the local clock's."""
        if self._end_ns is None:
            return None
        end = getattr(self._otel, "end_time", None)
        return end if isinstance(end, int) else self._end_ns

    def __enter__(self):
        """Open the observation (its start time is now) and make it the current one."""
        if self._stack is not None:
            raise RuntimeError(f"{self.kind} {self.name!r} was entered twice")
        self._stack = stack = ExitStack()
        try:
            self._open(stack)
            stack.callback(_reset_current, _CURRENT.set(self))
        except BaseException:
            stack.close()
            raise
        self._start_ns = time.time_ns()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._stack is None or self._end_ns is not None:
            return False
        if exc is not None and self.level != "ERROR":
            self.set_error(f"{exc_type.__name__}: {exc}")
        try:
            self._stack.close()  # ends the SDK observation, innermost first
        finally:
            self._end_ns = time.time_ns()
            self._tracker._finished(self)
        return False

    def _open(self, stack: ExitStack) -> None:
        tracker = self._tracker
        self.parent_id, self.trace_id, context, trace_context = tracker._parent(self.trace_id)
        sdk = tracker._sdk
        if sdk is None:
            self.id = hex_id(64)
            self.trace_id = self.trace_id or hex_id(128)
            return
        from opentelemetry import trace as otel_trace

        if context is not None:
            stack.enter_context(_attached(context))
        self._obs = stack.enter_context(sdk.start_as_current_observation(
            as_type=self.kind, name=self.name, input=self.input, metadata=self.metadata,
            model=self.model, model_parameters=self.model_parameters, prompt=self.prompt,
            trace_context=trace_context))
        self._otel = otel_trace.get_current_span()
        self.id, self.trace_id = self._obs.id, self._obs.trace_id

    def update(self, *, output: Any = None, metadata: Any = None, input: Any = None,
               level: str | None = None, status_message: str | None = None,
               **generation_only: Any):
        """Add output / metadata / level to the observation."""
        if generation_only:
            self._tracker._warn("span-generation-args",
                                "update() on a span ignores generation-only fields %s",
                                sorted(generation_only))
        self._remember(metadata, level, status_message)
        if self._obs is not None and self._end_ns is None:
            self._obs.update(output=output, metadata=metadata, input=input, level=level,
                             status_message=status_message)
        return self

    def _remember(self, metadata: Any, level: str | None, status_message: str | None) -> None:
        if metadata is not None:
            self.metadata = metadata
        if level is not None:
            self.level = level
        if status_message is not None:
            self.status_message = status_message

    def set_error(self, reason: str) -> None:
        """Mark the observation level=ERROR with the reason as status message."""
        self.update(level="ERROR", status_message=str(reason)[:1000])

    def _record(self) -> dict:
        return {"type": self.kind, "trace_id": self.trace_id, "id": self.id,
                "parent_id": self.parent_id, "name": self.name,
                **observation_times(self.start_ns, self.end_ns),
                "level": self.level, "status_message": self.status_message,
                "metadata": self.metadata}


class SpanContext(_Observation):
    """A span inside a trace (``with tracker.create_span(trace.id, name) as span``)."""

    kind = "span"


class GenerationContext(_Observation):
    """A model call; its start time is when it is entered, so open it before the call."""

    kind = "generation"
    completion_start_time: datetime | None = None
    usage: dict | None = None
    legacy = False
    frame: dict | None = None  # {"bytes", "sha256"} of a traced frame (--trace-frames)
    frames: list | None = None  # the same of every frame of a traced clip, in time order

    def update(self, *, output: Any = None, usage: dict | None = None,
               usage_details: dict | None = None, completion_start_time: Any = None,
               metadata: Any = None, input: Any = None, model: str | None = None,
               model_parameters: dict | None = None, level: str | None = None,
               status_message: str | None = None, **ignored: Any) -> "GenerationContext":
        """Add output, usage, completion_start_time (float epoch or datetime), level."""
        if ignored:
            self._tracker._warn("generation-args", "generation update() ignores %s",
                                sorted(ignored))
        usage = usage_details if usage_details is not None else usage
        cst = to_utc(completion_start_time)
        if cst is not None:
            self.completion_start_time = cst
            start = self.start_ns
            # Compared at the microsecond a datetime holds (what Langfuse stores).
            if start is not None and datetime_to_ns(cst) // 1000 < start // 1000:
                self._tracker._warn("negative-ttft", "completion_start_time of %r is before "
                                    "the generation started: open the generation before the "
                                    "model call", self.name)
        if usage is not None:
            self.usage = {str(k): int(v) for k, v in usage.items() if v is not None}
        if model is not None:
            self.model = model
        self._remember(metadata, level, status_message)
        if self._obs is not None and self._end_ns is None:
            self._obs.update(output=output, usage_details=self.usage if usage is not None else None,
                             completion_start_time=cst, metadata=metadata, input=input,
                             model=model, model_parameters=model_parameters, level=level,
                             status_message=status_message)
        return self

    def _record(self) -> dict:
        cst, start_ns = self.completion_start_time, self.start_ns
        # Only a prompt Langfuse links (a fetched one, not the SDK's fallback) is recorded.
        prompt = self.prompt
        linked = prompt is not None and not getattr(prompt, "is_fallback", False)
        return {**super()._record(), "model": self.model,
                "completion_start_time": iso_utc(cst),
                "ttft_ms": (datetime_to_ns(cst) - start_ns) / 1e6
                if cst is not None and start_ns is not None else None,
                "usage": self.usage, "legacy": self.legacy, "frame": self.frame,
                **({"frames": self.frames} if self.frames else {}),
                "prompt_name": getattr(prompt, "name", None) if linked else None,
                "prompt_version": getattr(prompt, "version", None) if linked else None}


class TraceContext(_Observation):
    """One trace (one processed frame): its root span plus trace-level attributes."""

    kind = "trace"

    def __init__(self, tracker: "LangfuseTracker", name: str, *, user_id: str | None = None,
                 session_id: str | None = None, tags: list[str] | None = None,
                 metadata: dict | None = None, input: Any = None) -> None:
        super().__init__(tracker, name, None, input=input, metadata=metadata)
        self.user_id = user_id
        self.session_id = session_id
        self.tags = list(tags) if tags else None
        self.observation_id: str | None = None  # the root span's id
        # The OTel context inside the trace (root span current, attributes propagated),
        # for children opened in other threads.
        self.otel_context: Any = None

    def _open(self, stack: ExitStack) -> None:
        tracker = self._tracker
        sdk = tracker._sdk
        if sdk is None:
            self.id = self.trace_id = hex_id(128)
            self.observation_id = hex_id(64)
        else:
            import langfuse
            from opentelemetry import context as otel_context
            from opentelemetry import trace as otel_trace

            if _CURRENT.get() is not None:  # a trace is a root, even inside another one
                stack.enter_context(_attached(otel_context.Context()))
            # The metadata goes to the trace (propagated below), not twice onto the root span.
            self._obs = stack.enter_context(sdk.start_as_current_observation(
                as_type="span", name=self.name, input=self.input))
            self._otel = otel_trace.get_current_span()
            self.observation_id = self._obs.id
            self.id = self.trace_id = self._obs.trace_id
            stack.enter_context(langfuse.propagate_attributes(
                trace_name=self.name, user_id=self.user_id, session_id=self.session_id,
                tags=self.tags, metadata=trace_metadata(self.metadata)))
            self.otel_context = otel_context.get_current()
        tracker._traces[self.trace_id] = self

    def _record(self) -> dict:
        return {**super()._record(), "id": self.trace_id, "observation_id": self.observation_id,
                "parent_id": None, "user_id": self.user_id, "session_id": self.session_id,
                "tags": self.tags}


class _ClientProxy:
    """``tracker.client``: the guide's update_current_* calls; other SDK names, or no-ops."""

    def __init__(self, tracker: "LangfuseTracker") -> None:
        self._tracker = tracker

    def update_current_generation(self, **kwargs: Any) -> None:
        """Update the generation active in this thread (times normalized to UTC)."""
        self._tracker.update_current_generation(**kwargs)

    def update_current_span(self, **kwargs: Any) -> None:
        """Update the span active in this thread."""
        self._tracker.update_current_span(**kwargs)

    def __getattr__(self, name: str) -> Any:
        sdk = self._tracker._sdk
        return getattr(sdk, name) if sdk is not None else _noop


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


# -- generations and spans recorded after the fact, from their own stamps ------------------
def _record_span(tracker: "LangfuseTracker", trace_id: str | None, span: SpanRecord) -> Recorded:
    """See LangfuseTracker.record_span."""
    if not tracker._active:
        return Recorded(_DUMMY_SPAN.id, _DUMMY_GENERATION.id if span.generation else None)
    obs = SpanContext(tracker, span.name, trace_id, input=span.input, metadata=span.metadata)
    obs._start_ns = datetime_to_ns(to_utc(span.start))
    end_ns = max(datetime_to_ns(to_utc(span.end)), obs._start_ns)
    obs.parent_id, obs.trace_id, context, _ = tracker._parent(trace_id)
    inner = None
    if tracker._sdk is None:
        obs.id, obs.trace_id = hex_id(64), obs.trace_id or hex_id(128)
    else:
        from langfuse import LangfuseSpan
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace

        context = context or otel_context.get_current()  # holds the trace's attributes
        obs._otel = tracker._provider.get_tracer(TRACER_SCOPE).start_span(
            span.name, context=context, start_time=obs._start_ns)
        obs._obs = LangfuseSpan(otel_span=obs._otel, langfuse_client=tracker._sdk, input=span.input,
                                metadata=span.metadata)
        obs.id, obs.trace_id = obs._obs.id, obs._obs.trace_id
        inner = otel_trace.set_span_in_context(obs._otel, context)
    if span.output is not None:
        obs.update(output=span.output)
    if span.error is not None:
        obs.set_error(span.error)
    gen_id = None
    if span.generation is not None:
        gen_id = _recorded_generation(tracker, obs.trace_id, span.generation, parent=(obs.id, obs.trace_id, inner))
    if obs._obs is not None:
        obs._obs.end(end_time=end_ns)
    obs._end_ns = end_ns
    tracker._finished(obs)
    return Recorded(obs.id, gen_id)


def _recorded_generation(tracker: "LangfuseTracker", trace_id: str | None, gen: GenerationRecord,
                         parent: tuple | None = None) -> str | None:
    """A GenerationRecord recorded with its result's stamps, output, usage and error."""
    result = gen.result
    failed = not result.success
    return _record_finished(
        tracker, trace_id, gen.name, gen.model, gen.input, output=result.text,
        start_time=result.start_time, end_time=result.end_time,
        completion_start_time=result.completion_start_time, usage=result.usage_details(),
        metadata=gen.metadata, prompt=gen.prompt, image_jpeg=gen.image_jpeg, images_jpeg=gen.images_jpeg,
        parent=parent,
        level="ERROR" if failed else None,
        status_message=f"{result.error_kind}: {result.error}"[:1000] if failed else None)


def _record_finished(tracker: "LangfuseTracker", trace_id: str | None, name: str, model: str | None, input: Any, *,
                     output: Any, start_time: Any, end_time: Any, completion_start_time: Any,
                     usage: dict | None, metadata: Any, level: str | None, status_message: str | None,
                     prompt: Any = None, image_jpeg: bytes | None = None, legacy: bool = False,
                     parent: tuple | None = None, images_jpeg: tuple[bytes, ...] = ()) -> str | None:
    """A generation that is over, with the given times (missing ones: now); parent: (id, trace id, context)."""
    gen = GenerationContext(tracker, name, trace_id, model=model,
                            input=_with_frame(tracker, input, image_jpeg, images_jpeg), metadata=metadata,
                            prompt=prompt)
    gen.legacy = legacy
    if image_jpeg is not None:
        gen.frame = frame_digest(image_jpeg)
    if images_jpeg:
        gen.frames = [frame_digest(jpeg) for jpeg in images_jpeg]
    now = time.time_ns()
    start, end = to_utc(start_time), to_utc(end_time)
    gen._start_ns = datetime_to_ns(start) if start is not None else now
    end_ns = datetime_to_ns(end) if end is not None else max(now, gen._start_ns)
    gen.parent_id, gen.trace_id, context = parent or tracker._parent(trace_id)[:3]
    if tracker._sdk is None:
        gen.id, gen.trace_id = hex_id(64), gen.trace_id or hex_id(128)
    else:
        from langfuse import LangfuseGeneration
        from opentelemetry import context as otel_context

        # The SDK's observations have no start time argument: an OTel span of our own
        # does, wrapped in the SDK's public generation class (exported: see
        # should_export_span in tracing.client). Trace attributes reach it through the
        # context, as they reach the SDK's own observations.
        tracer = tracker._provider.get_tracer(TRACER_SCOPE)
        gen._otel = tracer.start_span(name, context=context or otel_context.get_current(),
                                      start_time=gen._start_ns)
        gen._obs = LangfuseGeneration(otel_span=gen._otel, langfuse_client=tracker._sdk, input=gen.input,
                                      model=model, metadata=metadata, prompt=prompt)
        gen.id, gen.trace_id = gen._obs.id, gen._obs.trace_id
    gen.update(output=output, usage=usage, completion_start_time=completion_start_time,
               level=level, status_message=status_message)
    if gen._obs is not None:
        gen._obs.end(end_time=end_ns)
    gen._end_ns = end_ns
    tracker._finished(gen)
    return gen.id


def _with_frame(tracker: "LangfuseTracker", input: Any, image_jpeg: bytes | None,
                images_jpeg: tuple[bytes, ...] = ()) -> Any:
    """The input with the traced frame beside it as Langfuse media (--trace-frames); a clip's
    frames, in time order, as a list of media under "frames"."""
    if (image_jpeg is None and not images_jpeg) or tracker._sdk is None:
        return input
    from langfuse import LangfuseMedia

    if images_jpeg:
        return {"prompt": input, "frames": [LangfuseMedia(content_bytes=bytes(jpeg), content_type="image/jpeg")
                                            for jpeg in images_jpeg]}
    return {"prompt": input, "frame": LangfuseMedia(content_bytes=bytes(image_jpeg),
                                                    content_type="image/jpeg")}


def _score_target(tracker: "LangfuseTracker", name: str, trace_id: str | None, observation_id: str | None,
                  score_trace: bool) -> tuple[str, str | None]:
    """(trace id, observation id) of a score, the implicit ones from the current observation."""
    if score_trace:
        observation_id = None
    if trace_id is not None and (observation_id is not None or score_trace):
        return trace_id, observation_id
    current = _CURRENT.get()
    if current is not None and current._tracker is not tracker:
        current = None
    if trace_id is None:
        if current is None:
            raise ValueError(f"log_score({name!r}) needs a trace_id outside a trace")
        trace_id = current.trace_id
    if not score_trace and observation_id is None:
        if current is not None and current.trace_id == trace_id:
            observation_id = (current.observation_id if isinstance(current, TraceContext)
                              else current.id)
        else:
            tracker._warn("score-no-observation", "score %r has no current observation in "
                       "its trace: it scores the whole trace", name)
    return trace_id, observation_id


# -- the tracker --------------------------------------------------------------------------------
def env_settings(**given: Any) -> Any:
    """The one place the tracker reads the environment (the no-argument form of the integration
    guide): LANGFUSE_* as the CLI's edge reads them, under the values given. The CLI passes
    every value itself (LangfuseSettings.tracker_kwargs, read_env=False)."""
    from dataclasses import replace

    from video_summarizer.tracing.settings import LangfuseSettings

    return replace(LangfuseSettings.from_env(os.environ), **{k: v for k, v in given.items() if v is not None})


def span_batch(flush_at: int | None) -> int | None:
    """flush_at, at most OTel's span queue size (the SDK raises at start-up above it)."""
    if flush_at is not None and flush_at > MAX_SPAN_QUEUE:
        log.warning("flush_at %d is above %d, the span queue size; using %d", flush_at, MAX_SPAN_QUEUE, MAX_SPAN_QUEUE)
        return MAX_SPAN_QUEUE
    return flush_at


class LangfuseTracker:
    """Langfuse tracing for the summarizer, a no-op without keys; see the module docstring."""

    def __init__(self, *, public_key: str | None = None, secret_key: str | None = None,
                 base_url: str | None = None, trace_log: str | os.PathLike | TraceLog | None = None,
                 flush_at: int | None = None, timeout_s: float | None = None, enabled: bool = True,
                 latency_worst_ms: float = D.VLM_WORST_MS,
                 delivery_report_s: float = DEFAULT_REPORT_EVERY_S, outbox: Any = None,
                 read_env: bool = True) -> None:
        if read_env:  # the integration guide's LangfuseTracker(): LANGFUSE_* fill what is not given
            settings = env_settings(public_key=public_key, secret_key=secret_key, base_url=base_url,
                                         flush_at=flush_at, timeout_s=timeout_s)
            public_key, secret_key, base_url = settings.public_key, settings.secret_key, settings.base_url
            flush_at, timeout_s, enabled = settings.flush_at, settings.timeout_s, enabled and settings.enabled
        self.latency_worst_ms = float(latency_worst_ms)
        self.delivery_report_s = float(delivery_report_s)
        self.host = (base_url or DEFAULT_HOST).rstrip("/")
        self.public_key = public_key or None
        secret = secret_key or None
        self.timeout_s = positive_float(timeout_s, "LANGFUSE_TIMEOUT", DEFAULT_TIMEOUT_S)
        self.flush_at = span_batch(positive_int(flush_at, "LANGFUSE_FLUSH_AT"))
        self._warn = WarnOnce(log)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("traces", "spans", "generations", "scores", "errors"), 0)
        # Our trace contexts by id, for children opened in other threads; weak: a trace is
        # remembered as long as something (its frame, a worker) still holds it.
        self._traces: weakref.WeakValueDictionary[str, TraceContext] = weakref.WeakValueDictionary()
        self._delivery: Delivery | None = None  # built with the SDK client
        self._outbox = outbox  # a tracing.outbox.Outbox: keeps what the host refused, sends it again
        self._close_report: CloseReport | None = None
        self._sdk: Any = None
        self._provider: Any = None
        self._client: Client | None = None
        self.trace_log = trace_log if isinstance(trace_log, TraceLog) else TraceLog(trace_log) if trace_log else None
        self.client = _ClientProxy(self)

        reason = disabled_reason(self.public_key, secret, enabled)
        if reason is None:
            try:
                self._client = build_client(self.host, self.public_key, secret, timeout_s=self.timeout_s,
                                            flush_at=self.flush_at, report_every_s=self.delivery_report_s,
                                            progress=self._progress, outbox=self._outbox)
            except Exception as exc:  # tracing must never stop the program from running
                reason = f"the Langfuse client could not be built: {exc}"
            else:
                c = self._client
                self._sdk, self._provider, self._delivery, self._sdk_major = c.sdk, c.provider, c.delivery, c.sdk_major
                log.info("Langfuse tracking enabled: %s", self.host)
        self.disabled_reason = reason
        if reason is not None:
            log.info("Langfuse tracking disabled: %s", reason)
        # False only in full no-op mode: then every call returns a shared Dummy at once.
        self._active = self._sdk is not None or self.trace_log is not None

    env_settings = staticmethod(env_settings)

    @property
    def enabled(self) -> bool:
        """True when the Langfuse SDK client was built (keys present)."""
        return self._sdk is not None

    @property
    def recording(self) -> bool:
        """False in full no-op mode (no client, no trace log): then nothing is recorded at all."""
        return self._active

    def __repr__(self) -> str:
        state = f"enabled host={self.host}" if self.enabled else "disabled"
        return f"<LangfuseTracker {state} public_key={mask_secret(self.public_key)}>"

    def _progress(self) -> str:
        counts, delivery = self.counts, self._delivery
        return (f"{delivery.acknowledged[SPANS]}/{counts['traces'] + counts['observations']} "
                f"observations and {delivery.acknowledged[SCORES]}/{counts['scores']} scores "
                "acknowledged so far" + (f"; {self._outbox.progress()}" if self._outbox else ""))

    def _parent(self, trace_id: str | None) -> tuple[str | None, str | None, Any, dict | None]:
        """(parent observation id, trace id, OTel context to enter or None, trace_context)."""
        current = _CURRENT.get()
        if current is not None and current._tracker is self and (
                trace_id is None or current.trace_id == trace_id):
            # The usual case: the SDK's current OTel context already holds the parent.
            parent = current.observation_id if isinstance(current, TraceContext) else current.id
            return parent, current.trace_id, None, None
        if trace_id is None:
            self._warn("no-trace", "span/generation opened outside any trace: it starts a new trace")
            if self._sdk is None:
                return None, None, None, None
            from opentelemetry import context as otel_context

            return None, None, otel_context.Context(), None
        trace = self._traces.get(trace_id)
        if trace is not None:
            return trace.observation_id, trace_id, trace.otel_context, None
        self._warn("unknown-trace", "trace id %s is not a trace this tracker holds; the "
                   "observation joins that trace without a parent", trace_id)
        return None, trace_id, None, {"trace_id": trace_id}

    def _finished(self, obs: _Observation) -> None:
        with self._lock:
            self._counts[obs.kind + "s"] += 1
            if obs.level == "ERROR":
                self._counts["errors"] += 1
        if self.trace_log is not None:
            self.trace_log.write(obs._record())

    @property
    def counts(self) -> dict[str, int]:
        """Traces, observations (spans + generations), generations, scores, errors so far."""
        with self._lock:
            c = dict(self._counts)
        return {"traces": c["traces"], "observations": c["spans"] + c["generations"],
                "generations": c["generations"], "scores": c["scores"], "errors": c["errors"]}

    # -- public API --------------------------------------------------------------------------------
    def create_trace(self, name: str, *, user_id: str | None = None,
                     session_id: str | None = None, tags: list[str] | None = None,
                     metadata: dict | None = None, input: Any = None) -> TraceContext | DummyTrace:
        """A trace context (use with ``with``); ``.id`` is its 32-hex trace id."""
        if not self._active:
            return DummyTrace()
        return TraceContext(self, name, user_id=user_id, session_id=session_id, tags=tags,
                            metadata=metadata, input=input)

    def create_span(self, trace_id: str | None, name: str, *, input: Any = None,
                    metadata: Any = None) -> SpanContext | DummySpan:
        """A span context under the current observation of that trace (or its root)."""
        if not self._active:
            return _DUMMY_SPAN
        return SpanContext(self, name, trace_id, input=input, metadata=metadata)

    def start_generation(self, trace_id: str | None, name: str, model: str | None = None,
                         input: Any = None, metadata: Any = None,
                         model_parameters: dict | None = None,
                         prompt: Any = None,
                         image_jpeg: bytes | None = None) -> GenerationContext | DummyGeneration:
        """A generation context whose clock starts on ``__enter__`` (before the model call).

        ``prompt``: the PromptClient from ``get_prompt`` the input was built from; Langfuse
        links the generation to that prompt version (a fallback prompt is not linked).
        ``image_jpeg``: the frame the model got (--trace-frames): uploaded as Langfuse media
        beside the prompt in the input; the trace log keeps only its size and hash.
        """
        if not self._active:
            return _DUMMY_GENERATION
        input = _with_frame(self, input, image_jpeg)
        gen = GenerationContext(self, name, trace_id, model=model, input=input,
                                metadata=metadata, model_parameters=model_parameters,
                                prompt=prompt)
        if image_jpeg is not None:
            gen.frame = frame_digest(image_jpeg)
        return gen

    def record_span(self, trace_id: str | None, span: SpanRecord) -> Recorded:
        """Record a finished stage span from its own start and end, with the generation inside it."""
        return _record_span(self, trace_id, span)

    def record_generation(self, trace_id: str | None, gen: GenerationRecord) -> str | None:
        """Record a finished model call with its result's own stamps; returns the generation's id.

        Start, completion start and end are the result's ``start_time`` /
        ``completion_start_time`` / ``end_time``: Langfuse's TTFT and latency are then the
        very numbers the events and statistics read. Its parent is the current observation
        of that trace (the stage span), as for ``start_generation``.
        """
        if not self._active:
            return _DUMMY_GENERATION.id
        return _recorded_generation(self, trace_id, gen)

    def log_generation(self, trace_id: str | None, name: str, model: str | None = None,
                       input: Any = None, output: Any = None, *, start_time: Any = None,
                       end_time: Any = None, completion_start_time: Any = None,
                       usage: dict | None = None, metadata: Any = None,
                       level: str | None = None, status_message: str | None = None) -> str | None:
        """Legacy: record a finished generation from its timings (default now); returns its id.

        Deprecated: open ``start_generation`` before the model call instead, or hand the
        result to ``record_generation``.
        """
        self._warn("log_generation", "log_generation() is deprecated: open "
                   "start_generation() before the model call instead")
        if not self._active:
            return _DUMMY_GENERATION.id
        return _record_finished(self, trace_id, name, model, input, output=output, start_time=start_time,
                                     end_time=end_time, completion_start_time=completion_start_time,
                                     usage=usage, metadata=metadata, level=level,
                                     status_message=status_message, legacy=True)

    def update_current_generation(self, **kwargs: Any) -> None:
        """Update the generation active in this thread (times normalized to UTC)."""
        self._update_current(kwargs, generation=True)

    def update_current_span(self, **kwargs: Any) -> None:
        """Update the span active in this thread."""
        self._update_current(kwargs, generation=False)

    def _update_current(self, kwargs: dict, generation: bool) -> None:
        if not self._active:
            return
        current = _CURRENT.get()
        if current is None or current._tracker is not self:
            self._warn("no-current", "update_current_* called outside any observation")
            return
        if not generation or not isinstance(current, GenerationContext):
            for key in ("completion_start_time", "usage", "usage_details", "model",
                        "model_parameters"):
                kwargs.pop(key, None)
        current.update(**kwargs)

    def get_prompt(self, name: str, *, label: str | None = "production",
                   fallback: str | None = None, cache_ttl_s: float | None = None,
                   fetch_timeout_s: float | None = None, max_retries: int = 0,
                   on_error: Callable[[str], None] | None = None) -> Any:
        """A Langfuse text prompt (the SDK's PromptClient) by name and label, or None; never raises.

        None when tracing is disabled or the fetch failed (not found, host down, keys
        rejected): the reason goes to ``on_error(reason)`` when given, else into one warning
        per prompt name. The SDK caches the prompt for ``cache_ttl_s`` (0: fetch every time)
        and serves an expired one while it refreshes in the background; with nothing cached
        the call fetches, up to ``fetch_timeout_s`` a try. With ``fallback`` a failed first
        fetch returns the SDK's fallback prompt (which generations do not link).
        """
        if self._sdk is None:
            return None
        try:
            return self._sdk.get_prompt(name, label=label, type="text", fallback=fallback,
                                        cache_ttl_seconds=cache_ttl_s, max_retries=max_retries,
                                        fetch_timeout_seconds=fetch_timeout_s)
        except Exception as exc:  # prompt management must never stop the program
            reason = prompt_failure(exc, name, label, self.host)
            if on_error is not None:
                on_error(reason[:300])
            else:
                self._warn(f"prompt:{name}", "Langfuse prompt %r (label %s): %s", name, label,
                           reason[:300])
            return None

    def log_score(self, trace_id: str | None, name: str, value: Any, data_type: str | None = None,
                  comment: str | None = None, score_trace: bool = False,
                  observation_id: str | None = None) -> None:
        """Score the current/given observation, or the whole trace with score_trace=True.

        bool -> BOOLEAN (0/1), int/float -> NUMERIC, str -> CATEGORICAL; a data_type that
        does not fit the value, NaN or inf raise ValueError.
        """
        value, dtype = normalize_score(value, data_type)
        if not self._active:
            return
        trace_id, observation_id = _score_target(self, name, trace_id, observation_id,
                                                      score_trace)
        # Our id and time, so the trace log names the score Langfuse receives (and an
        # outbox could send it again under the same id).
        score_id, now = hex_id(64), datetime.now(timezone.utc)
        with self._lock:
            self._counts["scores"] += 1
        if self._sdk is not None:
            if self._outbox is not None:  # journaled before the SDK has it: never lost, even at a kill
                self._outbox.handed(score_item(self._sdk_major, score_id=score_id, trace_id=trace_id,
                                               observation_id=observation_id, name=name, value=value,
                                               data_type=dtype, comment=comment, timestamp=iso_utc(now)))
            self._sdk.create_score(name=name, value=value, data_type=dtype, trace_id=trace_id,
                                   observation_id=observation_id, comment=comment,
                                   score_id=score_id, timestamp=now)
        if self.trace_log is not None:
            self.trace_log.write({
                "type": "score", "trace_id": trace_id, "id": score_id,
                "observation_id": observation_id,
                "target": "observation" if observation_id else "trace",
                "name": name, "value": value, "data_type": dtype, "comment": comment,
                "timestamp": iso_utc(now)})
        log.debug("Score logged: %s=%s (type=%s)", name, value, dtype)

    def flush(self, deadline_s: float = 10.0) -> bool:
        """Send what is queued; gives up after deadline_s (True when everything went out)."""
        if self._sdk is None or self._close_report is not None:
            return True
        return run_with_deadline(self._sdk.flush, deadline_s, "langfuse-flush", log)

    def close(self, deadline_s: float = 5.0) -> CloseReport:
        """Flush and shut down within deadline_s, even with the host down; says what waits in the outbox."""
        if self._close_report is not None:
            return self._close_report
        report = close_client(self._client, outbox=self._outbox, trace_log=self.trace_log,
                              counts=lambda: self.counts, host=self.host, deadline_s=deadline_s)
        self._close_report = report
        # Later calls on a closed tracker are no-ops, so a late worker cannot crash the loop.
        self._active = False
        self._sdk = None
        lost = report.observations_lost or report.scores_lost
        log.log(logging.WARNING if lost else logging.INFO, "%s", report.message)
        return report

    def stats(self) -> dict:
        """Counts of traced items, delivery and warnings, for the exit report."""
        return tracker_stats(self.counts, self._delivery, self._warn.counts, self.trace_log)

    def format_stats(self) -> str:
        """One line of what the tracker counted, for the CLI's exit output (delivery: once closed)."""
        return stats_line(self.stats(), self.enabled or self._delivery is not None,
                          self.disabled_reason, self.trace_log, self._close_report)
