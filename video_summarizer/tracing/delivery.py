"""What Langfuse acknowledged, counted where it is sent, and said in a few log lines.

The tracker hands the SDK two things of its own, through the SDK's public parameters
(``Langfuse(span_exporter=..., httpx_client=...)``):

- ``CountingSpanExporter`` wraps the OTLP exporter: every span batch's outcome;
- ``CountingTransport`` is the httpx transport of the SDK's API client: every score batch's
  outcome, on both score paths (SDK 5: ``POST /api/public/scores``, a JSON array; SDK 4:
  ``POST /api/public/ingestion``, a batch of ``score-create`` events).

Both report to one ``Delivery``, which counts what the host acknowledged, by kind, and
passes what it did not acknowledge to ``Delivery.on_unacknowledged(kind, items)`` (spans:
OTel ``ReadableSpan``s; scores: the score bodies as sent, ids included). That hook is where
an on-disk outbox keeps them and sends them again with the same ids (``outbox.Outbox``).
After ``Delivery.close()`` both answer at once without sending (spans FAILURE, requests a
``httpx.ConnectError``), so no flush the SDK still attempts (its atexit hook) can block exit.

With the host down, the SDK and its exporter log every failed batch, retry and prompt fetch:
about a line a second on a busy camera. ``DeliveryMonitor`` (an ``outages.OutageMonitor``)
logs instead

- one WARNING when sending starts failing, with a short reason ("Connection refused",
  "timed out", "HTTP 401 ... check the keys");
- one WARNING every ``report_every_s`` (10 minutes) while it goes on, with how much of what
  was traced the host has acknowledged so far;
- one INFO when sending works again, with how long it failed.

``quiet_sdk_delivery_logs()`` turns the SDK's and the exporter's per-batch lines into DEBUG
records of this module's logger (shown with ``--debug``); the SDK's other warnings, such as
scores the host answered but rejected as invalid, are left as they are.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from video_summarizer.outages import DEFAULT_REPORT_EVERY_S, OutageMonitor, one_line

log = logging.getLogger(__name__)

SPANS, SCORES = "spans", "scores"
SCORES_PATH = "/api/public/scores"  # SDK 5
INGESTION_PATH = "/api/public/ingestion"  # SDK 4: score-create events
# Loggers whose warnings about a failed delivery are per batch or retry.
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.common.http")
_SDK_LOGGER = "langfuse"
# Prompt fetches are not deliveries: prompts.py says what each falls back to, once.
_PROMPT_MESSAGES = ("Error while fetching prompt", "Prompt '%s' not found during refresh")
_KEYS_HINT = "check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY"
# Span and score ids acknowledged lately, per kind: an id the SDK's late try and the outbox
# both delivered is one row in Langfuse (kept once per id), counted once. Minutes of ids
# (~2 MB each), not a month.
_ACKED_WINDOW = 20_000

# Per thread: the reason of the last failed send on this thread (set by the transport, or
# noted from the exporter's own log record), which also marks the SDK's next lines there
# as about that failure.
_THREAD = threading.local()
_install_lock = threading.Lock()
_installed = False


def http_reason(status: int, text: str = "") -> str:
    """ "HTTP 500", "HTTP 401 Unauthorized: check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY"."""
    reason = f"HTTP {status}" + (f" {text.strip()}" if text.strip() else "")
    return f"{reason}: {_KEYS_HINT}" if status in (401, 403) else reason


def short_reason(text: str) -> str:
    """The cause in a delivery error's text, short enough for one log line."""
    match = re.search(r"code: (\d{3}), reason: ([^\n]*)", text)  # the OTLP exporter's HTTP error
    if match:
        return http_reason(int(match.group(1)), match.group(2))
    match = re.search(r"status_code: (\d{3})", text)  # the SDK's API errors
    if match:
        return http_reason(int(match.group(1)))
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)  # Connection refused, Name or service not known
    if match:
        return match.group(1).strip()
    if re.search(r"timed? ?out|timeout", text, re.IGNORECASE):
        return "timed out"
    return one_line(text, 120)


class DeliveryMonitor(OutageMonitor):
    """Langfuse delivery outcomes in, a bounded number of log lines out (see the module docstring).

    ``progress()`` returns the "so far" text of the periodic line, e.g. "12/3456 observations
    and 0/789 scores acknowledged so far"; it is called without the monitor's lock held.
    """

    def __init__(self, host: str, progress: Callable[[], str] | None = None, *,
                 report_every_s: float = DEFAULT_REPORT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        where = host.replace("{", "{{").replace("}", "}}")
        super().__init__(
            log,
            failing=f"Langfuse: cannot send to {where} ({{reason}}); going on without it, "
                    "said again every {every} while it lasts",
            still=f"Langfuse: sending to {where} still failing after {{since}} ({{reason}})"
                  + ("; {progress}" if progress is not None else ""),
            back=f"Langfuse: sending to {where} works again after {{since}} of failures",
            progress=progress, report_every_s=report_every_s, clock=clock)


class Delivery:
    """Counts of what the host acknowledged (by kind), the monitor told of each outcome."""

    def __init__(self, monitor: DeliveryMonitor) -> None:
        self.monitor = monitor
        self.acknowledged = {SPANS: 0, SCORES: 0}
        self.unacknowledged = {SPANS: 0, SCORES: 0}
        # Issue 14's outbox hooks in here: (kind, items the host did not acknowledge).
        self.on_unacknowledged: Callable[[str, Sequence[Any]], None] | None = None
        # (kind, items the host acknowledged: spans or score bodies): the outbox learns the
        # host answers again, which score retries landed, and what its journal may forget.
        self.on_acknowledged: Callable[[str, Sequence[Any]], None] | None = None
        self.outbox: Any = None  # an outbox.Outbox once attached: what waits there
        self.closing = False  # close() has begun: the exporter's own shutdown is no outage
        self.closed = False  # nothing is sent any more
        self._lock = threading.Lock()
        # Ids acknowledged lately, by kind: an id the SDK's late try and the outbox both
        # delivered is one observation or score in Langfuse (kept once per id), counted once.
        self._acked: dict[str, OrderedDict[str, None]] = {SPANS: OrderedDict(), SCORES: OrderedDict()}

    def sent(self, kind: str, acknowledged: int, items: Sequence[Any] = (),
             ids: Sequence[str] = ()) -> None:
        """The host acknowledged ``acknowledged`` items of ``kind`` (``items``: which, if known;
        ``ids``: their span or score ids, when the items are not at hand). An id acknowledged
        before is not counted again."""
        _THREAD.reason = None
        with self._lock:
            ids = list(ids) or item_ids(kind, items)
            if ids:
                acked = self._acked[kind]
                repeats = sum(1 for i in ids if i in acked)
                acknowledged = max(0, acknowledged - repeats)
                for i in ids:
                    acked[i] = None
                    acked.move_to_end(i)
                while len(acked) > _ACKED_WINDOW:
                    acked.popitem(last=False)
            self.acknowledged[kind] += acknowledged
        self.monitor.succeeded()
        hook = self.on_acknowledged
        if hook is not None:
            hook(kind, items)

    def all_acknowledged(self, score_ids: Sequence[str]) -> bool:
        """Whether the host acknowledged every one of these scores lately (the id window)."""
        with self._lock:
            return bool(score_ids) and all(i in self._acked[SCORES] for i in score_ids)

    def refused(self, kind: str, items: Sequence[Any], reason: str | None) -> None:
        """A batch the host did not acknowledge, for ``reason`` (None: unknown)."""
        with self._lock:
            self.unacknowledged[kind] += len(items)
        # Marks this thread: the SDK's own lines about this failure go to DEBUG.
        _THREAD.reason = reason or f"the {kind} batch was not sent"
        if not self.closed and (reason is not None or not self.closing):
            self.monitor.failed(_THREAD.reason)
        hook = self.on_unacknowledged
        if hook is not None and items:
            hook(kind, items)

    def close(self) -> None:
        """From now on the exporter and the transport send nothing and answer at once."""
        self.closing = self.closed = True


@dataclass
class CloseReport:
    """What close() achieved: delivered counts and what may have been lost."""

    enabled: bool
    completed: bool  # the SDK finished shutting down within the deadline
    elapsed_s: float
    deadline_s: float
    observations: int = 0  # traces' root spans + spans + generations handed to the SDK
    observations_delivered: int = 0  # acknowledged by the host (2xx)
    observations_failed: int = 0  # in batches the host did not acknowledge
    scores: int = 0
    scores_delivered: int = 0
    trace_log_lines: int = 0
    message: str = ""
    observations_in_outbox: int = 0  # this run's, kept on disk to be sent again
    scores_in_outbox: int = 0

    @property
    def observations_lost(self) -> int:
        """Observations neither acknowledged by the host nor kept in the outbox."""
        return max(0, self.observations - self.observations_delivered - self.observations_in_outbox)

    @property
    def scores_lost(self) -> int:
        """Scores neither acknowledged by the host nor kept in the outbox."""
        return max(0, self.scores - self.scores_delivered - self.scores_in_outbox)

    def __str__(self) -> str:
        return self.message



def close_report(counts: dict, delivery: Delivery | None, host: str, trace_log: Any, *,
                 completed: bool, elapsed_s: float, deadline_s: float) -> CloseReport:
    """The report of a tracker's close(): what was traced, what the host acknowledged."""
    report = CloseReport(
        enabled=delivery is not None, completed=completed, elapsed_s=elapsed_s,
        deadline_s=deadline_s, observations=counts["traces"] + counts["observations"],
        scores=counts["scores"], trace_log_lines=trace_log.lines if trace_log else 0)
    if delivery is None:
        where = f"; trace log {trace_log.path}: {report.trace_log_lines} lines" if trace_log else ""
        report.message = f"Langfuse disabled: nothing sent{where}"
        return report
    report.observations_delivered = delivery.acknowledged[SPANS]
    report.observations_failed = delivery.unacknowledged[SPANS]
    report.scores_delivered = delivery.acknowledged[SCORES]
    outbox = delivery.outbox
    if outbox is not None:
        waiting = outbox.waiting(ours=True)
        report.observations_in_outbox, report.scores_in_outbox = waiting[SPANS], waiting[SCORES]
    monitor = delivery.monitor
    if completed and not monitor.failing:
        head = "Langfuse: delivered"
    elif completed:
        head = f"Langfuse: finished, with sending failing ({monitor.last_reason});"
    else:
        why = f"({monitor.last_reason})" if monitor.failing else "with the host not answering"
        head = f"Langfuse: gave up after {deadline_s:.1f} s {why};"
    report.message = (
        f"{head} {report.observations_delivered}/{report.observations} observations and "
        f"{report.scores_delivered}/{report.scores} scores acknowledged by {host}")
    note = outbox.exit_note() if outbox is not None else ""
    report.message += f"; {note}" if note else ""
    if report.observations_lost or report.scores_lost:
        report.message += (f"; up to {report.observations_lost} observations and "
                           f"{report.scores_lost} scores may be lost")
    return report


def stats_line(stats: dict, langfuse_on: bool, disabled_reason: str | None,
               trace_log: Any, report: CloseReport | None = None) -> str:
    """A tracker's ``stats()`` as one human line, in the close line's terms.

    Observations count the traces' root spans, as Langfuse and the close line do. What the
    close line states (what was acknowledged; without Langfuse, the trace log's lines) comes
    from its ``report`` once closed, and is left to that line before: it is printed after the
    statistics, with the final counts, and each count is said once.
    """
    s = stats
    line = (f"Tracing: {s['traces']} traces, {s['traces'] + s['observations']} observations "
            f"({s['generations']} generations, {s['errors']} errors), {s['scores']} scores")
    if langfuse_on:
        if report is not None:
            line += (f"; Langfuse acknowledged {report.observations_delivered}/{report.observations} "
                     f"observations and {report.scores_delivered}/{report.scores} scores")
        if s["delivery_outages"]:
            line += f"; {s['delivery_failures']} failed sends to Langfuse in {s['delivery_outages']} outage(s)"
    else:
        line += f"; Langfuse off ({disabled_reason})"
    if trace_log is not None and (langfuse_on or report is not None):
        line += f"; trace log {trace_log.path}: {s['trace_log_lines']} lines"
    if s["warnings"]:
        line += "; warnings: " + ", ".join(f"{k} x{n}" for k, n in sorted(s["warnings"].items()))
    return line


class CountingSpanExporter:
    """An OTel span exporter around another one: counts each batch's outcome in a Delivery."""

    def __init__(self, inner: Any, delivery: Delivery) -> None:
        self.inner = inner
        self.delivery = delivery

    def export(self, spans: Sequence[Any]) -> Any:
        """Export through the inner exporter (unless closed) and count the outcome."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.delivery.closed:
            self.delivery.refused(SPANS, spans, None)
            return SpanExportResult.FAILURE
        _THREAD.reason = None  # the exporter logs a failed try's reason on this thread
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.delivery.sent(SPANS, len(spans), spans)  # the spans: the journal settles them
        else:
            self.delivery.refused(SPANS, spans, getattr(_THREAD, "reason", None))
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here; the inner exporter's answer."""
        return self.inner.force_flush(timeout_millis)


def item_ids(kind: str, items: Sequence[Any]) -> list[str]:
    """The ids of a batch: span ids (16 hex digits) of ReadableSpans, score ids of score items."""
    if kind == SPANS:
        return [format(span.context.span_id, "016x") for span in items if hasattr(span, "context")]
    return [score_id(item) for item in items if isinstance(item, dict)]


def score_id(item: dict) -> str:
    """A score item's score id (SDK 5: the score itself; SDK 4: the score-create event's body)."""
    body = item.get("body") if isinstance(item.get("body"), dict) else item
    return str(body.get("id"))


def score_items(method: str, path: str, body: bytes) -> list | None:
    """The scores a request carries (SDK 5's array or SDK 4's score-create events), or
    None when it is no score delivery."""
    if method != "POST" or not path.endswith((SCORES_PATH, INGESTION_PATH)):
        return None
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return []
    if path.endswith(SCORES_PATH):
        return data if isinstance(data, list) else [data]
    batch = data.get("batch") if isinstance(data, dict) else None
    return [event for event in batch or () if isinstance(event, dict)
            and event.get("type") == "score-create"]


def _rejected(response: Any) -> int:
    """How many items of a 2xx answer the host still rejected (a 207's ``errors``)."""
    try:
        data = json.loads(response.content or b"null")
    except ValueError:
        return 0
    errors = data.get("errors") if isinstance(data, dict) else None
    return len(errors) if isinstance(errors, list) else 0


class CountingTransport:
    """The httpx transport of the SDK's API client: counts score deliveries in a Delivery.

    Other requests (prompts, auth check) pass through untouched. After the Delivery is
    closed every request fails at once with ``httpx.ConnectError``.
    """

    def __init__(self, delivery: Delivery, inner: Any = None) -> None:
        import httpx

        self.delivery = delivery
        self.inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        """Send one request (httpx's transport API), counting it if it carries scores."""
        import httpx

        items = score_items(request.method, request.url.path, request.read())
        if self.delivery.closed:
            if items is not None:
                self.delivery.refused(SCORES, items, None)
            raise httpx.ConnectError("the tracker is closed: nothing is sent", request=request)
        if items is None:
            return self.inner.handle_request(request)
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            self.delivery.refused(SCORES, items, short_reason(f"{type(exc).__name__}: {exc}"))
            raise
        if 200 <= response.status_code < 300:
            response.read()  # small: what the host said about each score
            rejected = min(len(items), _rejected(response))
            self.delivery.sent(SCORES, len(items) - rejected, items)
        else:
            self.delivery.refused(SCORES, items, http_reason(response.status_code))
        return response

    def close(self) -> None:
        """Close the inner transport's connections."""
        self.inner.close()


# httpx.Client(transport=...) takes any httpx.BaseTransport; subclassing it late keeps
# httpx out of the imports of a run without keys.
def counting_transport(delivery: Delivery) -> Any:
    """A CountingTransport that is an ``httpx.BaseTransport``."""
    import httpx

    class _Transport(CountingTransport, httpx.BaseTransport):
        pass

    return _Transport(delivery)


class _QuietDelivery(logging.Filter):
    """Turns the SDK's and the exporter's per-batch delivery lines into DEBUG lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            return self._quiet(record)
        except Exception:  # noqa: BLE001 - a filter that raises would raise in the SDK's thread
            return True

    def _quiet(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else ""
        if record.name == _SDK_LOGGER:
            # The SDK's lines about a send that just failed on this thread (its score
            # threads), whatever their wording, and its prompt-fetch failures.
            if getattr(_THREAD, "reason", None) is None and not template.startswith(_PROMPT_MESSAGES):
                return True  # not about delivery: as it is
        else:
            text = record.getMessage()
            if "shutdown" not in text.lower():
                # A failed try of a span batch: its reason, for the exporter wrapper.
                # ("Shutdown in progress, aborting retry." is our close() at work.)
                _THREAD.reason = short_reason(text)
        log.debug("%s: %s", record.name, record.getMessage())
        return False


def quiet_sdk_delivery_logs() -> None:
    """Install the filter on the SDK's and the exporter's loggers, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    quiet = _QuietDelivery()
    for name in (*_EXPORTER_LOGGERS, _SDK_LOGGER):
        logging.getLogger(name).addFilter(quiet)
