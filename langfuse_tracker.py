"""Every Langfuse call of the project: traces, spans, generations with a correct TTFT, scores.

Nothing else imports ``langfuse``. The API is the one of the integration guide
(``../shared/notes/integration-guide.md``)::

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
epoch (``time.time()``), an aware ``datetime``, or a naive ``datetime`` read as *local*
time (what ``datetime.fromtimestamp(t)`` in the guide produces); all are turned into
timezone-aware UTC before they reach Langfuse, so TTFT is right whatever ``TZ`` says.

Delivery: with the host down or rejecting the keys, the run goes on; ``langfuse_delivery``
logs one line when sending starts failing, one every ``delivery_report_s`` while it lasts
and one when it works again (instead of the SDK's line per batch), and ``close()`` reports
how much the host acknowledged.

Threads: OTel context lives in contextvars and does not cross threads. A span or
generation opened in a thread where its trace is not the current one is parented
explicitly under that trace's root (with the trace's user/session/tags), never a new trace.

Trace log (``trace_log=PATH``): JSON Lines, appended, one line per finished trace,
observation and score, flushed per line, thread-safe, written whether or not Langfuse is
enabled. Timestamps are UTC ISO-8601 with microseconds and a ``Z``. Fields:

- every line: ``type`` (``trace`` | ``span`` | ``generation`` | ``score``), ``trace_id``
  (32 hex), ``name``;
- trace: ``id`` (= trace_id), ``observation_id`` (root span), ``start``, ``end``,
  ``latency_ms``, ``level``, ``status_message``, ``user_id``, ``session_id``, ``tags``,
  ``metadata``;
- span / generation: ``id`` (16 hex), ``parent_id``, ``start``, ``end``, ``latency_ms``,
  ``level`` (``DEFAULT`` or ``ERROR``), ``status_message``, ``metadata``; generations add
  ``model``, ``completion_start_time`` (null when no token came), ``ttft_ms``
  (= completion_start_time - start, as Langfuse computes it), ``usage``, ``legacy``,
  ``prompt_name`` / ``prompt_version`` (the managed prompt it is linked to, else null);
- score: ``id``, ``observation_id`` (null for a trace score), ``target`` (``trace`` |
  ``observation``), ``value``, ``data_type`` (NUMERIC | BOOLEAN | CATEGORICAL), ``comment``,
  ``timestamp``.

``trace_report.py PATH`` turns such a file into the dashboards' figures.
"""
from __future__ import annotations

import atexit
import contextvars
import itertools
import json
import logging
import math
import numbers
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from video_summarizer.tracing.delivery import (
    DEFAULT_REPORT_EVERY_S,
    DeliveryMonitor,
    begin_attempt,
    http_reason,
    noted_reason,
    quiet_sdk_delivery_logs,
)

log = logging.getLogger("video_summarizer.tracker")
# logging.Logger._cache: level -> isEnabledFor's answer, cleared in place when levels change
# (an empty stand-in where a Python lacks it: then every check asks isEnabledFor).
_LOG_LEVEL_CACHE: dict = getattr(log, "_cache", None)
if not isinstance(_LOG_LEVEL_CACHE, dict):
    _LOG_LEVEL_CACHE = {}
_DEBUG = logging.DEBUG

DEFAULT_HOST = "https://cloud.langfuse.com"
DEFAULT_TIMEOUT_S = 5.0
SCORE_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_TRACE_MEMORY = 1024  # traces remembered for late children from other threads
_TRACE_TRIM_AT = _TRACE_MEMORY + 128  # the registry is trimmed back in bulk past this
_MAX_SPAN_QUEUE = 2048  # OTel BatchSpanProcessor's default max_queue_size

# The observation (our context object) active in this thread/task: mirrors OTel's current
# span so update_current_generation and log_score know whom they mean, also when disabled.
_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("tracker_current", default=None)
_rand = random.getrandbits  # ids, not secrets: the fast PRNG is enough
_isfinite = math.isfinite
_time_ns = time.time_ns
_new_object = object.__new__
_fromtimestamp = datetime.fromtimestamp


# -- small helpers -------------------------------------------------------------------------
def to_utc(value: Any) -> datetime | None:
    """A float epoch / aware datetime / naive local datetime as an aware UTC datetime."""
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        # astimezone() on a naive datetime reads it as local time, which is what
        # datetime.fromtimestamp(t) (the guide's idiom) produced.
        return value.astimezone(timezone.utc)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"timestamp must be finite, got {value!r}")
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    raise TypeError(f"expected a float epoch or a datetime, got {type(value).__name__}")


def iso_utc(value: datetime | None) -> str | None:
    """An aware datetime as UTC ISO-8601 with microseconds and a Z."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ns_to_dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _dt_to_ns(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def mask_secret(key: str | None) -> str:
    """A key safe to print: its prefix and last 4 characters at most."""
    if not key:
        return "<unset>"
    if len(key) < 12:
        return "****"
    prefix = key[:6] if key.startswith(("sk-lf-", "pk-lf-")) else key[:2]
    return f"{prefix}****{key[-4:]}"


def normalize_score(value: Any, data_type: str | None = None) -> tuple[float | str, str]:
    """(value, data_type) as Langfuse wants them; ValueError for a mismatch or NaN/inf."""
    dtype = data_type.upper() if isinstance(data_type, str) else data_type
    if dtype is not None and dtype not in SCORE_TYPES:
        raise ValueError(f"data_type must be one of {SCORE_TYPES}, got {data_type!r}")
    if type(value) is float and dtype is None and math.isfinite(value):
        return value, "NUMERIC"  # the common case, without the ABC checks below
    if isinstance(value, bool):
        if dtype == "CATEGORICAL":
            raise ValueError(f"a bool score cannot be CATEGORICAL: {value!r}")
        return (1.0 if value else 0.0), (dtype or "BOOLEAN")
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"score value must be finite, got {value!r}")
        if dtype == "CATEGORICAL":
            raise ValueError(f"a numeric score cannot be CATEGORICAL: {value!r} (pass a str)")
        if dtype == "BOOLEAN" and number not in (0.0, 1.0):
            raise ValueError(f"a BOOLEAN score must be 0 or 1, got {value!r}")
        return number, (dtype or "NUMERIC")
    if isinstance(value, str):
        if dtype not in (None, "CATEGORICAL"):
            raise ValueError(f"a str score must be CATEGORICAL, not {dtype}: {value!r}")
        return value, "CATEGORICAL"
    raise ValueError(f"score value must be bool, int, float or str, got {type(value).__name__}")


class _WarnOnce:
    """Warn once per key, count always."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: Any) -> None:
        with self._lock:
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
        if n == 0:
            log.warning(message + " (warning shown once; occurrences are counted)", *args)


class _Counter:
    """A count any thread bumps without a lock: ``bump()`` is ``itertools.count``'s
    ``__next__``, one C call during which CPython's GIL is never released, so no bump is
    lost (``n += 1`` on an attribute is a read and a write that a thread switch can split).
    The frame loop pays one call per counted item instead of a lock round trip."""

    __slots__ = ("bump", "_it")

    def __init__(self) -> None:
        self._it = itertools.count()
        self.bump = self._it.__next__

    @property
    def value(self) -> int:
        """The bumps so far (read from the repr, ``count(N)``: reading bumps nothing)."""
        return int(repr(self._it)[6:-1])


class TraceLog:
    """Thread-safe JSON Lines appender, flushed per line (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0
        self.failures = 0

    def write(self, record: dict) -> None:
        """Append one record as a line."""
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            if self._fh is None:
                self.failures += 1
                return
            try:
                self._fh.write(line)
                self._fh.flush()
                self.lines += 1
            except OSError as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("trace log %s: write failed (%s); counting further failures",
                                self.path, exc)

    def close(self) -> None:
        """Close the file; later writes are counted as failures."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


@dataclass
class CloseReport:
    """What close() achieved: delivered counts and what may have been lost."""

    enabled: bool
    completed: bool  # the SDK finished shutting down within the deadline
    elapsed_s: float
    deadline_s: float
    observations: int = 0  # traces' root spans + spans + generations handed to the SDK
    observations_delivered: int = 0  # acknowledged by the host (2xx)
    observations_failed: int = 0  # export attempts that failed (host down, 401, 5xx)
    scores: int = 0
    scores_delivered: int = 0
    trace_log_lines: int = 0
    message: str = ""

    @property
    def observations_lost(self) -> int:
        """Observations not acknowledged by the host (failed or still queued)."""
        return max(0, self.observations - self.observations_delivered)

    @property
    def scores_lost(self) -> int:
        """Scores not acknowledged by the host (failed or still queued)."""
        return max(0, self.scores - self.scores_delivered)

    def __str__(self) -> str:
        return self.message


# -- no-op ("Dummy") contexts: the disabled mode without a trace log --------------------------
class _DummyObservation:
    """A span or generation that records nothing."""

    __slots__ = ("trace_id",)
    id = "0000000000000000"
    level = "DEFAULT"

    def __init__(self, trace_id: str | None = None) -> None:
        self.trace_id = trace_id

    def __enter__(self) -> "_DummyObservation":
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def update(self, **kwargs: Any) -> "_DummyObservation":
        """No-op."""
        return self

    def set_error(self, reason: str) -> None:
        """No-op."""

    def end(self) -> None:
        """No-op."""


class DummySpan(_DummyObservation):
    """No-op span context."""

    __slots__ = ()


class DummyGeneration(_DummyObservation):
    """No-op generation context."""

    __slots__ = ()


class DummyTrace(_DummyObservation):
    """No-op trace context; its id is random so logs and events can still cite it."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id = "%032x" % _rand(128)
        self.trace_id = self.id

    observation_id = _DummyObservation.id


_DUMMY_SPAN = DummySpan()
_DUMMY_GENERATION = DummyGeneration()


# -- real contexts ----------------------------------------------------------------------------
class _Observation:
    """Base of the trace / span / generation contexts: SDK observation + trace log line."""

    kind = "span"  # also which count its end adds one to (LangfuseTracker._bump_ended)
    # Per-instance state starts at these class defaults (fewer stores per observation on
    # the frame loop's thread); assignments shadow them on the instance.
    id: str | None = None
    trace_id: str | None = None
    parent_id: str | None = None
    level = "DEFAULT"
    status_message: str | None = None
    _obs: Any = None  # the SDK observation, None when Langfuse is disabled
    _otel: Any = None  # its OTel span, whose start/end are what Langfuse receives
    _start_ns: int | None = None  # local clock: when entered (or given), the fallback
    _end_ns: int | None = None  # local clock: when exited (or given); set = finished
    _entered = False
    _token: contextvars.Token | None = None
    # What __enter__ opened, undone innermost first by _close_sdk: an OTel context
    # attached for explicit parenting, the SDK observation, the trace's attributes.
    _attached: Any = None
    _sdk_cm: Any = None
    _attrs_cm: Any = None

    def __init__(self, tracker: "LangfuseTracker", name: str, trace_id: str | None,
                 input: Any = None, metadata: Any = None) -> None:
        self._tracker = tracker
        self.name = name
        self.trace_id = trace_id
        self.input = input
        self.metadata = metadata

    # Start and end are read from the SDK's span only when asked for (the trace log, the
    # TTFT check), so that the frame loop does not pay for reading them on every span.
    @property
    def start_ns(self) -> int | None:
        """Start, epoch ns: the one sent to Langfuse, else the local clock's."""
        start = getattr(self._otel, "start_time", None)
        return start if isinstance(start, int) else self._start_ns

    @start_ns.setter
    def start_ns(self, value: int | None) -> None:
        self._start_ns = value

    @property
    def end_ns(self) -> int | None:
        """End, epoch ns (None while open): the one sent to Langfuse, else the local clock's."""
        if self._end_ns is None:
            return None
        end = getattr(self._otel, "end_time", None)
        return end if isinstance(end, int) else self._end_ns

    @end_ns.setter
    def end_ns(self, value: int | None) -> None:
        self._end_ns = value

    # The with protocol; also usable as explicit __enter__()/__exit__() as in the guide.
    # This is the frame loop's hot path (six observations a frame): the SDK's context
    # managers are driven with plain try/finally rather than an ExitStack, and the usual
    # cases are handled inline, since every Python call here costs the loop time.
    def __enter__(self):
        """Open a span or generation (TraceContext has its own)."""
        if self._entered:
            raise RuntimeError(f"{self.kind} {self.name!r} was entered twice")
        self._entered = True
        tracker = self._tracker
        try:
            current = _CURRENT.get()
            trace_id = self.trace_id
            if current is not None and current._tracker is tracker and (
                    trace_id is None or current.trace_id == trace_id):
                # The usual case, a child of the observation open in this thread: the
                # SDK's current OTel context already holds the parent.
                parent_ctx = None
                self.parent_id = (current.observation_id if isinstance(current, TraceContext)
                                  else current.id)
                self.trace_id = current.trace_id
            else:
                parent_ctx, self.parent_id, self.trace_id = tracker._resolve_parent(trace_id)
            sdk = tracker._sdk
            if sdk is None:
                self.id = "%016x" % _rand(64)
                if self.trace_id is None:
                    self.trace_id = "%032x" % _rand(128)
            else:
                if parent_ctx is not None:
                    self._attached = tracker._otel_context.attach(parent_ctx)
                cm = sdk.start_as_current_observation(
                    as_type=self.kind, name=self.name, input=self.input,
                    metadata=self.metadata, model=self.model,
                    model_parameters=self.model_parameters, prompt=self.prompt)
                obs = cm.__enter__()
                self._sdk_cm = cm  # entered: _close_sdk exits it from here on
                self._obs = obs
                # The SDK wrapper keeps its OTel span; asking OTel for the current one
                # costs more.
                otel = getattr(obs, "_otel_span", None)
                self._otel = otel if otel is not None else tracker._otel_trace.get_current_span()
                self.id = obs.id
                self.trace_id = obs.trace_id
        except BaseException:
            self._close_sdk(None, None, None)
            raise
        self._start_ns = _time_ns()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._entered or self._end_ns is not None:
            return False
        if exc is not None and self.level != "ERROR":
            self.set_error(f"{exc_type.__name__}: {exc}")
        try:
            _CURRENT.reset(self._token)
        except ValueError:  # exited in another context than entered; nothing to restore
            pass
        try:
            cm = self._sdk_cm
            if cm is not None and self._attrs_cm is None and self._attached is None:
                self._sdk_cm = None
                cm.__exit__(exc_type, exc, tb)  # ends the SDK observation
            else:
                self._close_sdk(exc_type, exc, tb)
        finally:
            self._end_ns = _time_ns()
            tracker = self._tracker  # LangfuseTracker._finished, inline
            tracker._bump_ended[self.kind]()
            if self.level == "ERROR":
                tracker._errors.bump()
            if tracker.trace_log is not None:
                tracker.trace_log.write(self._record())
        return False

    def _close_sdk(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Exit what __enter__ entered, innermost first, each even if another fails."""
        try:
            if self._attrs_cm is not None:
                cm, self._attrs_cm = self._attrs_cm, None
                cm.__exit__(exc_type, exc, tb)
        finally:
            try:
                if self._sdk_cm is not None:
                    cm, self._sdk_cm = self._sdk_cm, None
                    cm.__exit__(exc_type, exc, tb)
            finally:
                if self._attached is not None:
                    token, self._attached = self._attached, None
                    self._tracker._otel_context.detach(token)

    def update(self, *, output: Any = None, metadata: Any = None, input: Any = None,
               level: str | None = None, status_message: str | None = None,
               **generation_only: Any):
        """Add output / metadata / level to the observation."""
        if generation_only:
            self._tracker._warn("span-generation-args",
                                "update() on a span ignores generation-only fields %s",
                                sorted(generation_only))
        if metadata is not None:
            self.metadata = metadata
        if level is not None:
            self.level = level
        if status_message is not None:
            self.status_message = status_message
        if self._obs is not None and self._end_ns is None:
            self._obs.update(output=output, metadata=metadata, input=input, level=level,
                             status_message=status_message)
        return self

    def set_error(self, reason: str) -> None:
        """Mark the observation level=ERROR with the reason as status message."""
        self.update(level="ERROR", status_message=str(reason)[:1000])

    def _record(self) -> dict:
        start_ns, end_ns = self.start_ns, self.end_ns
        return {
            "type": self.kind,
            "trace_id": self.trace_id,
            "id": self.id,
            "parent_id": self.parent_id,
            "name": self.name,
            "start": iso_utc(_ns_to_dt(start_ns)) if start_ns is not None else None,
            "end": iso_utc(_ns_to_dt(end_ns)) if end_ns is not None else None,
            "latency_ms": (end_ns - start_ns) / 1e6
            if start_ns is not None and end_ns is not None else None,
            "level": self.level,
            "status_message": self.status_message,
            "metadata": self.metadata,
        }


class SpanContext(_Observation):
    """A span inside a trace (``with tracker.create_span(trace.id, name) as span``)."""

    kind = "span"
    # A span has no model; passing these None to the SDK is the same as leaving them out.
    model: str | None = None
    model_parameters: dict | None = None
    prompt: Any = None


class GenerationContext(_Observation):
    """A model call; its start time is when it is entered, so open it before the call."""

    kind = "generation"
    completion_start_time: datetime | None = None
    usage: dict | None = None
    legacy = False
    prompt: Any = None  # the SDK PromptClient this generation used (links it to that version)

    def __init__(self, tracker: "LangfuseTracker", name: str, trace_id: str | None,
                 model: str | None = None, input: Any = None, metadata: Any = None,
                 model_parameters: dict | None = None, prompt: Any = None) -> None:
        # _Observation.__init__'s stores, inline (no super() call on the frame loop's path)
        self._tracker = tracker
        self.name = name
        self.trace_id = trace_id
        self.input = input
        self.metadata = metadata
        self.model = model
        self.model_parameters = model_parameters
        if prompt is not None:
            self.prompt = prompt

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
        if completion_start_time is None:
            cst = None
        elif type(completion_start_time) is float and _isfinite(completion_start_time):
            cst = _fromtimestamp(completion_start_time, timezone.utc)  # to_utc's first case
        else:
            cst = to_utc(completion_start_time)
        if cst is not None:
            self.completion_start_time = cst
            start = self._start_ns
            if start is not None and not (
                    type(completion_start_time) is float
                    and completion_start_time * 1e9 - start >= 2000):
                # Not clearly after the local start (never before the SDK's: a float epoch
                # 2 µs past it needs no check, the usual case and a cheap one; datetime
                # arithmetic is not): the same against the SDK's start (a little earlier),
                # else compare at the microsecond a datetime holds.
                start = self.start_ns
                if not (type(completion_start_time) is float
                        and completion_start_time * 1e9 - start >= 2000) and \
                        (cst - _EPOCH) // _ONE_US < start // 1000:
                    self._tracker._warn(
                        "negative-ttft",
                        "completion_start_time of %r is before the generation started: "
                        "open the generation before the model call", self.name)
        if usage is not None:
            for key, count in usage.items():
                if type(count) is not int or type(key) is not str:
                    try:  # all in C
                        self.usage = dict(zip(map(str, usage), map(int, usage.values())))
                    except TypeError:  # a None count (left out), or a bad one (raises again)
                        self.usage = {str(k): int(v) for k, v in usage.items() if v is not None}
                    break
            else:  # the usual {"input": n, "output": m}: str names, int counts, a copy
                self.usage = dict(usage)
        if model is not None:
            self.model = model
        if metadata is not None:
            self.metadata = metadata
        if level is not None:
            self.level = level
        if status_message is not None:
            self.status_message = status_message
        if self._obs is not None and self._end_ns is None:
            self._obs.update(output=output, usage_details=self.usage if usage else None,
                             completion_start_time=cst, metadata=metadata, input=input,
                             model=model, model_parameters=model_parameters, level=level,
                             status_message=status_message)
        return self

    def _record(self) -> dict:
        record = super()._record()
        cst, start_ns = self.completion_start_time, self.start_ns
        record.update(
            model=self.model,
            completion_start_time=iso_utc(cst),
            ttft_ms=(_dt_to_ns(cst) - start_ns) / 1e6
            if cst is not None and start_ns is not None else None,
            usage=self.usage,
            legacy=self.legacy,
        )
        # Only a prompt Langfuse links (a fetched one, not the SDK's fallback) is recorded.
        prompt = self.prompt
        linked = prompt is not None and not getattr(prompt, "is_fallback", False)
        record["prompt_name"] = getattr(prompt, "name", None) if linked else None
        record["prompt_version"] = getattr(prompt, "version", None) if linked else None
        return record


class TraceContext(_Observation):
    """One trace (one processed frame): its root span plus trace-level attributes."""

    kind = "trace"
    observation_id: str | None = None  # the root span's id

    def __init__(self, tracker: "LangfuseTracker", name: str, user_id: str | None = None,
                 session_id: str | None = None, tags: list[str] | None = None,
                 metadata: dict | None = None, input: Any = None) -> None:
        # _Observation.__init__'s stores, inline; trace_id stays None (the class default)
        self._tracker = tracker
        self.name = name
        self.input = input
        self.metadata = metadata
        self.user_id = user_id
        self.session_id = session_id
        self.tags = list(tags) if tags else None

    def __enter__(self):
        """Open the trace: its root span, then its attributes propagated to what opens below."""
        if self._entered:
            raise RuntimeError(f"{self.kind} {self.name!r} was entered twice")
        self._entered = True
        tracker = self._tracker
        try:
            sdk = tracker._sdk
            if sdk is None:
                self.trace_id = "%032x" % _rand(128)
                self.observation_id = "%016x" % _rand(64)
                self.id = self.trace_id
                tracker._remember_trace(self.trace_id, (None, self.observation_id))
            else:
                self._open_sdk(tracker, sdk)
        except BaseException:
            self._close_sdk(None, None, None)
            raise
        self._start_ns = _time_ns()
        self._token = _CURRENT.set(self)
        return self

    def _open_sdk(self, tracker: "LangfuseTracker", sdk: Any) -> None:
        ctx = tracker._otel_context
        if _CURRENT.get() is not None:
            # A trace is a root: start from an empty context even inside another trace.
            self._attached = ctx.attach(ctx.Context())
        # The metadata goes to the trace (propagated below), not twice onto the root span.
        cm = sdk.start_as_current_observation(as_type="span", name=self.name, input=self.input)
        obs = cm.__enter__()
        self._sdk_cm = cm
        self._obs = obs
        otel = getattr(obs, "_otel_span", None)  # as in _Observation.__enter__
        self._otel = otel = otel if otel is not None else tracker._otel_trace.get_current_span()
        self.observation_id = obs.id
        self.id = self.trace_id = obs.trace_id
        metadata = _trace_metadata(self.metadata)
        attrs = tracker._propagate(
            trace_name=self.name, user_id=self.user_id, session_id=self.session_id,
            tags=self.tags, metadata=metadata)
        attrs.__enter__()
        self._attrs_cm = attrs
        # Children opened in other threads (where this context is not current) need the
        # root span and the propagated attributes: remembered is what rebuilds that context
        # (LangfuseTracker._trace_context), not the context itself, which would keep the
        # root span and its attributes alive for the next _TRACE_MEMORY frames (work for
        # the garbage collector on every frame). A plain dict store, no lock: atomic.
        traces = tracker._traces
        traces[self.trace_id] = (otel.get_span_context(), self.observation_id, self.name,
                                 self.user_id, self.session_id, self.tags, metadata)
        if len(traces) > _TRACE_TRIM_AT:
            tracker._trim_traces()

    def _record(self) -> dict:
        record = super()._record()
        record.update(id=self.trace_id, observation_id=self.observation_id, parent_id=None,
                      user_id=self.user_id, session_id=self.session_id, tags=self.tags)
        return record


def _trace_metadata(metadata: Any) -> dict | None:
    """Trace metadata as propagate_attributes accepts it (str keys, no None values)."""
    if not isinstance(metadata, dict):
        return None
    return {str(k): v for k, v in metadata.items() if v is not None} or None


class _ClientProxy:
    """``tracker.client``: the guide's update_current_* calls, the rest delegated to the SDK."""

    def __init__(self, tracker: "LangfuseTracker") -> None:
        self._tracker = tracker

    def update_current_generation(self, **kwargs: Any) -> None:
        """Update the generation active in this thread (times normalized to UTC)."""
        self._update_current(kwargs, generation=True)

    def update_current_span(self, **kwargs: Any) -> None:
        """Update the span active in this thread."""
        self._update_current(kwargs, generation=False)

    def _update_current(self, kwargs: dict, generation: bool) -> None:
        tracker = self._tracker
        if not tracker._active:
            return
        current = _CURRENT.get()
        if current is not None and current._tracker is tracker:
            if not generation:
                for key in ("completion_start_time", "usage", "usage_details", "model",
                            "model_parameters"):
                    kwargs.pop(key, None)
            current.update(**kwargs)
            return
        if tracker._sdk is not None:
            if "completion_start_time" in kwargs:
                kwargs["completion_start_time"] = to_utc(kwargs["completion_start_time"])
            method = "update_current_generation" if generation else "update_current_span"
            getattr(tracker._sdk, method)(**kwargs)
        else:
            tracker._warn("no-current", "update_current_* called outside any observation")

    def __getattr__(self, name: str) -> Any:
        sdk = self._tracker._sdk
        if sdk is None:
            return _noop
        return getattr(sdk, name)


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


# -- the tracker --------------------------------------------------------------------------------
class LangfuseTracker:
    """Langfuse v5 tracing for the summarizer, a no-op without keys; see the module docstring."""

    def __init__(
        self,
        *,
        public_key: str | None = None,
        secret_key: str | None = None,
        base_url: str | None = None,
        trace_log: str | os.PathLike | None = None,
        flush_at: int | None = None,
        timeout_s: float | None = None,
        latency_worst_ms: float = 5000.0,
        delivery_report_s: float = DEFAULT_REPORT_EVERY_S,
    ) -> None:
        self.latency_worst_ms = float(latency_worst_ms)
        self.delivery_report_s = float(delivery_report_s)
        self.host = (base_url or os.environ.get("LANGFUSE_BASE_URL")
                     or os.environ.get("LANGFUSE_HOST") or DEFAULT_HOST).rstrip("/")
        self.public_key = public_key or os.environ.get("LANGFUSE_PUBLIC_KEY") or None
        secret = secret_key or os.environ.get("LANGFUSE_SECRET_KEY") or None
        self.timeout_s = _positive_float(timeout_s, "LANGFUSE_TIMEOUT", DEFAULT_TIMEOUT_S)
        self.flush_at = _positive_int(flush_at, "LANGFUSE_FLUSH_AT")
        if self.flush_at is not None and self.flush_at > _MAX_SPAN_QUEUE:
            # The span batch may not exceed OTel's span queue (the SDK raises at start-up).
            log.warning("flush_at %d is above %d, the span queue size; using %d",
                        self.flush_at, _MAX_SPAN_QUEUE, _MAX_SPAN_QUEUE)
            self.flush_at = _MAX_SPAN_QUEUE
        self._warn = _WarnOnce()
        self._lock = threading.Lock()
        # trace id -> (root span's OTel SpanContext or None when Langfuse is disabled, root
        # span id[, trace name, user id, session id, tags, metadata]), oldest first
        self._traces: dict[str, tuple] = {}
        # Counts bumped on every thread without a lock (see _Counter); counts gives them
        # as a dict. _bump_ended: observation kind -> the bump of its count.
        self._ended = {kind: _Counter() for kind in ("trace", "span", "generation")}
        self._bump_ended = {kind: counter.bump for kind, counter in self._ended.items()}
        self._errors = _Counter()
        self._scores = _Counter()
        self._bump_score = self._scores.bump
        self._spans_ok = 0
        self._spans_failed = 0
        self._scores_ok = 0
        self._delivery: DeliveryMonitor | None = None  # built with the SDK client
        self._close_report: CloseReport | None = None
        self._closing = False  # close() has begun: exports failing for want of a reason are its doing
        self._sdk: Any = None
        self._provider: Any = None
        self.trace_log = TraceLog(trace_log) if trace_log else None
        self.client = _ClientProxy(self)

        reason = self._disabled_reason(secret)
        if reason is None:
            try:
                self._build_client(secret)
            except Exception as exc:  # tracing must never stop the program from running
                self._sdk = None
                reason = f"the Langfuse client could not be built: {exc}"
            else:
                log.info("Langfuse tracking enabled: %s", self.host)
        self.disabled_reason = reason
        if reason is not None:
            log.info("Langfuse tracking disabled: %s", reason)
        # False only in full no-op mode: then every call returns a shared Dummy at once.
        self._active = self._sdk is not None or self.trace_log is not None

    @property
    def enabled(self) -> bool:
        """True when the Langfuse SDK client was built (keys present)."""
        return self._sdk is not None

    def __repr__(self) -> str:
        state = f"enabled host={self.host}" if self.enabled else "disabled"
        return f"<LangfuseTracker {state} public_key={mask_secret(self.public_key)}>"

    def _disabled_reason(self, secret: str | None) -> str | None:
        if os.environ.get("LANGFUSE_TRACING_ENABLED", "true").strip().lower() == "false":
            return "LANGFUSE_TRACING_ENABLED=false"
        missing = [name for name, value in (("LANGFUSE_PUBLIC_KEY", self.public_key),
                                            ("LANGFUSE_SECRET_KEY", secret)) if not value]
        if missing:
            return f"{' and '.join(missing)} not set (source setup_langfuse.sh to configure)"
        return None

    def _build_client(self, secret: str) -> None:
        import httpx
        from langfuse import Langfuse, propagate_attributes
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.trace import TracerProvider

        self._otel_context = otel_context
        self._otel_trace = otel_trace
        self._propagate = propagate_attributes
        # Our own provider: no global OTel state, several trackers per process, and no
        # OTel atexit hook that could block on a dead host (close() owns the shutdown).
        self._provider = TracerProvider(shutdown_on_exit=False)
        self._delivery = DeliveryMonitor(self.host, self._delivery_progress,
                                         report_every_s=self.delivery_report_s)
        quiet_sdk_delivery_logs()
        self._http = httpx.Client(timeout=self.timeout_s, event_hooks={
            "request": [self._on_request], "response": [self._on_response]})
        self._sdk = Langfuse(
            public_key=self.public_key,
            secret_key=secret,
            base_url=self.host,
            timeout=self.timeout_s,
            flush_at=self.flush_at,
            httpx_client=self._http,
            tracer_provider=self._provider,
            span_exporter=self._span_exporter(secret),
        )

    def _span_exporter(self, secret: str) -> Any:
        """The SDK's own OTLP exporter settings, wrapped to count delivered spans."""
        import base64

        from langfuse import __version__ as sdk_version
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        auth = base64.b64encode(f"{self.public_key}:{secret}".encode()).decode("ascii")
        exporter = OTLPSpanExporter(
            endpoint=f"{self.host}/api/public/otel/v1/traces",
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": sdk_version,
                "x-langfuse-public-key": self.public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=self.timeout_s,
            compression=Compression.Gzip,
        )
        return _CountingExporter(exporter, self)

    def _on_request(self, _request: Any) -> None:
        # httpx event hook on the SDK's API client: a score batch that cannot be sent at all
        # is logged by the SDK on this thread, and counted by the monitor claiming it.
        self._delivery.claim_thread()

    def _on_response(self, response: Any) -> None:
        # httpx event hook on the SDK's API client: count scores the host accepted.
        request = response.request
        if request.method == "POST" and request.url.path.endswith("/api/public/scores"):
            if 200 <= response.status_code < 300:
                try:
                    n = len(json.loads(request.content or b"[]"))
                except ValueError:
                    n = 0
                with self._lock:
                    self._scores_ok += n
                self._delivery.succeeded()
            else:
                self._delivery.failed(http_reason(response.status_code))

    def _delivery_progress(self) -> str:
        counts = self.counts
        with self._lock:
            spans_ok, scores_ok = self._spans_ok, self._scores_ok
        return (f"{spans_ok}/{counts['traces'] + counts['observations']} observations and "
                f"{scores_ok}/{counts['scores']} scores acknowledged so far")

    # -- trace registry (cross-thread parenting) ------------------------------------------------
    # TraceContext._open_sdk stores a trace's entry in self._traces (a plain dict: one store,
    # atomic under the GIL, no lock on the frame loop's thread); every _TRACE_TRIM_AT -
    # _TRACE_MEMORY traces the oldest are dropped in one go, under the lock.
    def _remember_trace(self, trace_id: str, entry: tuple) -> None:
        traces = self._traces
        traces[trace_id] = entry
        if len(traces) > _TRACE_TRIM_AT:
            self._trim_traces()

    def _trim_traces(self) -> None:
        traces = self._traces
        with self._lock:
            excess = len(traces) - _TRACE_MEMORY
            if excess > 0:
                # list(islice(dict)) runs in C without letting another thread in: a snapshot
                # of the oldest keys (dicts keep insertion order) even while others add.
                for key in list(itertools.islice(traces, excess)):
                    traces.pop(key, None)

    def _trace_context(self, trace_id: str, entry: tuple) -> Any:
        """The OTel context under a remembered trace's root, for a child in another thread.

        What the trace's own thread holds: its root span (as a NonRecordingSpan of the same
        SpanContext, which is all a child takes from it), the SDK's baggage claim that the
        trace has its root, and the propagated trace attributes (propagate_attributes run
        again with the same values: it sets nothing on a non-recording span). Built only
        when such a child asks, off the frame loop's path.
        """
        from opentelemetry.trace import NonRecordingSpan, set_span_in_context

        span_context, _root_id, name, user_id, session_id, tags, metadata = entry
        otel_context = self._otel_context
        ctx = set_span_in_context(NonRecordingSpan(span_context), otel_context.Context())
        try:
            from langfuse._client.propagation import _set_langfuse_trace_id_in_baggage
        except ImportError:  # an SDK without that claim: nothing to copy
            pass
        else:
            ctx = _set_langfuse_trace_id_in_baggage(trace_id=trace_id, context=ctx)
        token = otel_context.attach(ctx)
        try:
            with self._propagate(trace_name=name, user_id=user_id, session_id=session_id,
                                 tags=tags, metadata=metadata):
                return otel_context.get_current()
        finally:
            otel_context.detach(token)

    def _resolve_parent(self, trace_id: str | None) -> tuple[Any, str | None, str | None]:
        """(OTel context to attach or None, parent observation id, trace id) for a child."""
        current = _CURRENT.get()
        if current is not None and current._tracker is self and (
                trace_id is None or current.trace_id == trace_id):
            parent = current.observation_id if isinstance(current, TraceContext) else current.id
            return None, parent, current.trace_id
        if trace_id is None:
            self._warn("no-trace", "span/generation opened outside any trace: it starts a new trace")
            return (self._otel_context.Context() if self._sdk is not None else None), None, None
        entry = self._traces.get(trace_id)
        if entry is not None:
            if entry[0] is None:  # Langfuse disabled: ids only
                return None, entry[1], trace_id
            return self._trace_context(trace_id, entry), entry[1], trace_id
        self._warn("unknown-trace", "trace id %s is not a trace of this tracker; "
                   "the observation is attached to that id without its root", trace_id)
        if self._sdk is None:
            return None, None, trace_id
        return self._remote_parent(trace_id, None), None, trace_id

    def _remote_parent(self, trace_id: str, span_id: str | None) -> Any:
        """An OTel context whose current span is (trace_id, span_id), for explicit parenting."""
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            TraceFlags,
            set_span_in_context,
        )

        sid = int(span_id, 16) if span_id else _rand(64) or 1
        parent = SpanContext(trace_id=int(trace_id, 16), span_id=sid, is_remote=False,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return set_span_in_context(NonRecordingSpan(parent), self._otel_context.Context())

    def _finished(self, obs: _Observation) -> None:
        self._bump_ended[obs.kind]()
        if obs.level == "ERROR":
            self._errors.bump()
        if self.trace_log is not None:
            self.trace_log.write(obs._record())

    @property
    def counts(self) -> dict[str, int]:
        """Traces, observations (spans + generations), generations, scores, errors so far."""
        spans, generations = self._ended["span"].value, self._ended["generation"].value
        return {"traces": self._ended["trace"].value, "observations": spans + generations,
                "generations": generations, "scores": self._scores.value,
                "errors": self._errors.value}

    # -- public API --------------------------------------------------------------------------------
    def create_trace(self, name: str, *, user_id: str | None = None,
                     session_id: str | None = None, tags: list[str] | None = None,
                     metadata: dict | None = None, input: Any = None) -> TraceContext | DummyTrace:
        """A trace context (use with ``with``); ``.id`` is its 32-hex trace id."""
        if not self._active:
            return DummyTrace()
        return TraceContext(self, name, user_id, session_id, tags, metadata, input)

    def create_span(self, trace_id: str | None, name: str, *, input: Any = None,
                    metadata: Any = None) -> SpanContext | DummySpan:
        """A span context under the current observation of that trace (or its root)."""
        if not self._active:
            return _DUMMY_SPAN
        # SpanContext(self, name, trace_id, input, metadata), its __init__'s stores inline:
        # one Python call less per span on the frame loop's thread.
        span = _new_object(SpanContext)
        span._tracker = self
        span.name = name
        span.trace_id = trace_id
        span.input = input
        span.metadata = metadata
        return span

    def start_generation(self, trace_id: str | None, name: str, model: str | None = None,
                         input: Any = None, metadata: Any = None,
                         model_parameters: dict | None = None,
                         prompt: Any = None) -> GenerationContext | DummyGeneration:
        """A generation context whose clock starts on ``__enter__`` (before the model call).

        ``prompt``: the PromptClient from ``get_prompt`` the input was built from; Langfuse
        links the generation to that prompt version (a fallback prompt is not linked).
        """
        if not self._active:
            return _DUMMY_GENERATION
        # GenerationContext(...), its __init__'s stores inline (as in create_span)
        gen = _new_object(GenerationContext)
        gen._tracker = self
        gen.name = name
        gen.trace_id = trace_id
        gen.input = input
        gen.metadata = metadata
        gen.model = model
        gen.model_parameters = model_parameters
        if prompt is not None:
            gen.prompt = prompt
        return gen

    def log_generation(self, trace_id: str | None, name: str, model: str | None = None,
                       input: Any = None, output: Any = None, *, start_time: Any = None,
                       end_time: Any = None, completion_start_time: Any = None,
                       usage: dict | None = None, metadata: Any = None,
                       level: str | None = None, status_message: str | None = None) -> str | None:
        """Legacy: record a finished generation from its timings; returns its id.

        Deprecated: use ``start_generation`` before the call. Start/end are taken from
        ``start_time``/``end_time`` (float epoch or datetime; default now).
        """
        self._warn("log_generation", "log_generation() is deprecated: open "
                   "start_generation() before the model call instead")
        if not self._active:
            return _DUMMY_GENERATION.id
        gen = GenerationContext(self, name, trace_id, model=model, input=input,
                                metadata=metadata)
        gen.legacy = True
        now = time.time_ns()
        start = to_utc(start_time)
        end = to_utc(end_time)
        gen.start_ns = _dt_to_ns(start) if start is not None else now
        end_ns = _dt_to_ns(end) if end is not None else max(now, gen.start_ns)
        parent_ctx, gen.parent_id, gen.trace_id = self._resolve_parent(trace_id)
        if self._sdk is None:
            gen.id = "%016x" % _rand(64)
            gen.trace_id = gen.trace_id or "%032x" % _rand(128)
        else:
            from langfuse import LangfuseGeneration

            # v5 has no start_time argument; an OTel span from a tracer with the SDK's
            # scope (name + public_key, which its exporter filter checks) can take one.
            tracer = self._provider.get_tracer("langfuse-sdk", attributes={
                "public_key": self.public_key})
            context = parent_ctx if parent_ctx is not None else self._otel_context.get_current()
            otel_span = tracer.start_span(name, context=context, start_time=gen.start_ns)
            gen._obs = LangfuseGeneration(otel_span=otel_span, langfuse_client=self._sdk,
                                          input=input, model=model, metadata=metadata)
            gen._otel = otel_span
            gen.id, gen.trace_id = gen._obs.id, gen._obs.trace_id
        gen.update(output=output, usage=usage, completion_start_time=completion_start_time,
                   level=level, status_message=status_message)
        if gen._obs is not None:
            gen._obs.end(end_time=end_ns)
        gen.end_ns = end_ns
        self._finished(gen)
        return gen.id

    def get_prompt(self, name: str, *, label: str | None = "production",
                   fallback: str | None = None, cache_ttl_s: float | None = None,
                   fetch_timeout_s: float | None = None, max_retries: int = 0,
                   on_error: Callable[[str], None] | None = None) -> Any:
        """A Langfuse text prompt (the SDK's PromptClient) by name and label, or None; never raises.

        None when tracing is disabled or the fetch failed (not found, host down, keys
        rejected): the reason goes to ``on_error(reason)`` when given, else into one warning
        per prompt name (later failures are counted). The SDK keeps the prompt cached for
        ``cache_ttl_s`` (0: fetch every time) and serves an expired one while it refreshes
        in the background; with no cached entry the call fetches, up to ``fetch_timeout_s``
        per try. With ``fallback`` a failed first fetch returns the SDK's fallback prompt,
        which generations do not link, instead of None.
        """
        sdk = self._sdk
        if sdk is None:
            return None
        try:
            return sdk.get_prompt(name, label=label, type="text", fallback=fallback,
                                  cache_ttl_seconds=cache_ttl_s, max_retries=max_retries,
                                  fetch_timeout_seconds=fetch_timeout_s)
        except Exception as exc:  # prompt management must never stop the program
            import httpx

            status = getattr(exc, "status_code", None)
            if status == 404:
                reason = f"not found: {name!r} has no version labelled {label!r}"
            elif status in (401, 403):
                reason = f"rejected: HTTP {status} (check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY)"
            elif status is not None:
                reason = f"unreachable: HTTP {status} from {self.host}"
            elif isinstance(exc, httpx.HTTPError):
                reason = f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
            else:
                reason = f"failed: {type(exc).__name__}: {exc}"
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
        if data_type is None and type(value) is float and _isfinite(value):
            dtype = "NUMERIC"  # normalize_score's common case, without the call
        else:
            value, dtype = normalize_score(value, data_type)
        if not self._active:
            return
        if trace_id is None or (observation_id is None and not score_trace):
            trace_id, observation_id = self._score_target(name, trace_id, observation_id,
                                                          score_trace)
        elif score_trace:
            observation_id = None
        self._bump_score()
        sdk = self._sdk
        if sdk is not None:
            sdk.create_score(name=name, value=value, data_type=dtype, trace_id=trace_id,
                             observation_id=observation_id, comment=comment)
        if self.trace_log is not None:
            self.trace_log.write({
                "type": "score", "trace_id": trace_id, "id": "%016x" % _rand(64),
                "observation_id": observation_id,
                "target": "observation" if observation_id else "trace",
                "name": name, "value": value, "data_type": dtype, "comment": comment,
                "timestamp": iso_utc(datetime.now(timezone.utc)),
            })
        # The logger's own per-level answer (None until asked since the last level change)
        # instead of a log.isEnabledFor call a score; log.debug checks again anyway.
        debug = _LOG_LEVEL_CACHE.get(_DEBUG)
        if debug or (debug is None and log.isEnabledFor(_DEBUG)):
            log.debug("Score logged: %s=%s (type=%s)", name, value, dtype)

    def _score_target(self, name: str, trace_id: str | None, observation_id: str | None,
                      score_trace: bool) -> tuple[str, str | None]:
        """(trace id, observation id) of a score whose trace or observation is implicit."""
        current = _CURRENT.get()
        if current is not None and current._tracker is not self:
            current = None
        if trace_id is None:
            if current is None:
                raise ValueError(f"log_score({name!r}) needs a trace_id outside a trace")
            trace_id = current.trace_id
        if score_trace:
            observation_id = None
        elif observation_id is None:
            if current is not None and current.trace_id == trace_id:
                observation_id = (current.observation_id if isinstance(current, TraceContext)
                                  else current.id)
            else:
                self._warn("score-no-observation", "score %r has no current observation in "
                           "its trace: it scores the whole trace", name)
        return trace_id, observation_id

    def flush(self, deadline_s: float = 10.0) -> bool:
        """Send what is queued; gives up after deadline_s (True when everything went out)."""
        if self._sdk is None or self._close_report is not None:
            return True
        return _run_with_deadline(self._sdk.flush, deadline_s, "langfuse-flush")

    def close(self, deadline_s: float = 5.0) -> CloseReport:
        """Flush and shut down within deadline_s, even with the host down; says what may be lost."""
        if self._close_report is not None:
            return self._close_report
        started = time.monotonic()
        completed = True
        self._closing = True
        if self._sdk is not None:
            resources = getattr(self._sdk, "_resources", None)
            if resources is not None:
                # The SDK registered resources.shutdown with atexit; that flush has no
                # timeout and would block exit again with the host down (stack.md pitfall 4).
                atexit.unregister(resources.shutdown)
            completed = _run_with_deadline(self._shutdown_sdk, deadline_s, "langfuse-close")
        if self.trace_log is not None:
            self.trace_log.close()
        self._close_report = self._report(completed, time.monotonic() - started, deadline_s)
        # Later calls on a closed tracker are no-ops, so a late worker cannot crash the loop.
        self._active = False
        self._sdk = None
        level = logging.INFO if self._close_report.observations_lost == 0 and \
            self._close_report.scores_lost == 0 else logging.WARNING
        log.log(level, "%s", self._close_report.message)
        return self._close_report

    def _shutdown_sdk(self) -> None:
        self._sdk.shutdown()
        self._provider.shutdown()
        resources = getattr(self._sdk, "_resources", None)
        if resources is not None:
            # Forget the singleton so a new tracker with the same key starts fresh.
            from langfuse._client.resource_manager import LangfuseResourceManager

            with LangfuseResourceManager._lock:
                if LangfuseResourceManager._instances.get(self.public_key) is resources:
                    del LangfuseResourceManager._instances[self.public_key]

    def _report(self, completed: bool, elapsed: float, deadline: float) -> CloseReport:
        counts = self.counts
        with self._lock:
            report = CloseReport(
                enabled=self._sdk is not None, completed=completed, elapsed_s=elapsed,
                deadline_s=deadline,
                observations=counts["traces"] + counts["observations"],
                observations_delivered=self._spans_ok, observations_failed=self._spans_failed,
                scores=counts["scores"], scores_delivered=self._scores_ok,
                trace_log_lines=self.trace_log.lines if self.trace_log else 0)
        if not report.enabled:
            where = f"; trace log {self.trace_log.path}: {report.trace_log_lines} lines" \
                if self.trace_log else ""
            report.observations_delivered = report.scores_delivered = 0
            report.message = f"Langfuse disabled: nothing sent{where}"
            return report
        delivery = self._delivery
        failing = delivery is not None and delivery.failing
        if completed and not failing:
            head = "Langfuse: delivered"
        elif completed:
            head = f"Langfuse: finished, with sending failing ({delivery.last_reason});"
        else:
            why = f"({delivery.last_reason})" if failing else "with the host not answering"
            head = f"Langfuse: gave up after {deadline:.1f} s {why};"
        report.message = (
            f"{head} {report.observations_delivered}/{report.observations} observations and "
            f"{report.scores_delivered}/{report.scores} scores acknowledged by {self.host}")
        if report.observations_lost or report.scores_lost:
            report.message += (f"; up to {report.observations_lost} observations and "
                               f"{report.scores_lost} scores may be lost")
        return report

    def stats(self) -> dict:
        """Counts of traced items, delivery and warnings, for the exit report."""
        counts = self.counts
        with self._lock:
            return {**counts, "spans_delivered": self._spans_ok,
                    "span_export_failures": self._spans_failed,
                    "scores_delivered": self._scores_ok, "warnings": dict(self._warn.counts),
                    "delivery_failures": self._delivery.failures if self._delivery else 0,
                    "delivery_outages": self._delivery.outages if self._delivery else 0,
                    "trace_log_lines": self.trace_log.lines if self.trace_log else 0}


class _CountingExporter:
    """Wraps the OTLP exporter to count spans the host acknowledged (for close())."""

    def __init__(self, inner: Any, tracker: LangfuseTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def export(self, spans: Any) -> Any:
        """Export and count."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        tracker = self._tracker
        tracker._delivery.claim_thread()  # the exporter's failed tries are counted as they happen
        begin_attempt()
        result = self._inner.export(spans)
        ok = result == SpanExportResult.SUCCESS
        with tracker._lock:
            if ok:
                tracker._spans_ok += len(spans)
            else:
                tracker._spans_failed += len(spans)
        reason = noted_reason()
        if ok:
            tracker._delivery.succeeded()
        elif reason is not None or not tracker._closing:  # not the exporter shut down by close()
            tracker._delivery.failed(reason or "the span export failed")
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return self._inner.force_flush(timeout_millis)


def _run_with_deadline(fn: Any, deadline_s: float, name: str) -> bool:
    """Run fn in a daemon thread; True if it finished within deadline_s."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except Exception as exc:  # reported below; tracing must never crash the program
            errors.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, deadline_s))
    if errors:
        log.warning("%s failed: %s", name, errors[0])
    return not thread.is_alive() and not errors


def _positive_float(value: float | None, env: str, default: float) -> float:
    if value is None:
        raw = os.environ.get(env)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            log.warning("%s=%r is not a number; using %s", env, raw, default)
            return default
    if not value > 0:
        raise ValueError(f"{env.lower()} must be positive, got {value}")
    return float(value)


def _positive_int(value: int | None, env: str) -> int | None:
    if value is None:
        raw = os.environ.get(env)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            log.warning("%s=%r is not an integer; using the SDK default", env, raw)
            return None
    if value <= 0:
        raise ValueError(f"{env.lower()} must be positive, got {value}")
    return int(value)
