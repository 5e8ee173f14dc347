"""The tracker's SDK client: whether one may be built, building it, closing it within a deadline.

Public SDK API only (``Langfuse(...)`` with a span exporter, tracer provider, HTTP client and
span filter of our own); delivery is counted by tracing.delivery, refused items kept by the outbox.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from video_summarizer.tracing.basics import mask_secret, run_with_deadline
from video_summarizer.tracing.delivery import (
    SCORES,
    SPANS,
    CloseReport,
    CountingSpanExporter,
    Delivery,
    DeliveryMonitor,
    close_report,
    counting_transport,
    quiet_sdk_delivery_logs,
)
from video_summarizer.tracing.journal import journal_span_processor

log = logging.getLogger("video_summarizer.tracker")
TRACER_SCOPE = "video_summarizer.tracker"  # our own OTel spans (generations recorded from their stamps)

# The SDK keeps one client per public key and process: the keys our trackers built one for.
_KEYS_IN_USE: set[str] = set()
_KEYS_LOCK = threading.Lock()


@dataclass
class Client:
    """What one built SDK client consists of."""

    sdk: Any  # langfuse.Langfuse
    provider: Any  # our OTel TracerProvider
    delivery: Delivery
    sdk_major: int


def disabled_reason(public_key: str | None, secret: str | None, enabled: bool = True) -> str | None:
    """Why no client may be built (tracing off, keys missing, key already in use), else None (key taken)."""
    if not enabled:
        return "LANGFUSE_TRACING_ENABLED=false"
    missing = [name for name, value in (("LANGFUSE_PUBLIC_KEY", public_key),
                                        ("LANGFUSE_SECRET_KEY", secret)) if not value]
    if missing:
        return f"{' and '.join(missing)} not set (source setup_langfuse.sh to configure)"
    with _KEYS_LOCK:
        if public_key in _KEYS_IN_USE:
            # The SDK would hand this tracker the first one's client (host, exporter,
            # queues), closed or not: what it traced would go there or nowhere.
            return (f"public key {mask_secret(public_key)} already has a Langfuse "
                    "client in this process (the SDK keeps one per key); one tracker per key")
        _KEYS_IN_USE.add(public_key)
    return None


def _should_export(span: Any) -> bool:
    """The SDK's default filter, plus our own spans (record_span / record_generation)."""
    from langfuse.span_filter import is_default_export_span

    return is_default_export_span(span) or (
        span.instrumentation_scope is not None and span.instrumentation_scope.name == TRACER_SCOPE)


def _exporter(host: str, headers: dict, timeout_s: float) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{host}/api/public/otel/v1/traces", headers=headers,
                            timeout=timeout_s, compression=Compression.Gzip)


def build_client(host: str, public_key: str, secret: str, *, timeout_s: float, flush_at: int | None,
                 report_every_s: float, progress: Callable[[], str], outbox: Any = None) -> Client:
    """The SDK client on a provider of our own, its deliveries counted (and journaled with an outbox)."""
    import httpx
    from langfuse import Langfuse
    from langfuse import __version__ as sdk_version
    from opentelemetry.sdk.trace import TracerProvider

    # Our own provider: no global OTel state, and no OTel atexit hook that could block
    # on a dead host (close_client owns the shutdown).
    provider = TracerProvider(shutdown_on_exit=False)
    delivery = Delivery(DeliveryMonitor(host, progress, report_every_s=report_every_s))
    quiet_sdk_delivery_logs()
    # Langfuse's documented OTLP endpoint: Basic auth; SDK 5's servers take spans
    # straight into the v4 data model with the ingestion-version header.
    auth = base64.b64encode(f"{public_key}:{secret}".encode()).decode("ascii")
    headers = {"Authorization": f"Basic {auth}"}
    sdk_major = int(sdk_version.split(".")[0])
    if sdk_major >= 5:
        headers["x-langfuse-ingestion-version"] = "4"
    if outbox is not None:
        outbox.attach(delivery, host, public_key, headers)
        if outbox.journal is not None:
            # Added before the SDK's processor: OTel calls processors in the order they
            # were added, so each span is on disk before the SDK can queue or send it.
            provider.add_span_processor(journal_span_processor(outbox.journal, _should_export))
    try:
        sdk = Langfuse(
            public_key=public_key, secret_key=secret, base_url=host, timeout=timeout_s, flush_at=flush_at,
            httpx_client=httpx.Client(timeout=timeout_s, transport=counting_transport(delivery)),
            tracer_provider=provider, span_exporter=CountingSpanExporter(_exporter(host, headers, timeout_s), delivery),
            should_export_span=_should_export)
    except Exception:
        if outbox is not None:  # its sender thread and journal: nothing to keep
            outbox.close(0.0, False)
        raise
    return Client(sdk, provider, delivery, sdk_major)


def close_client(client: Client | None, *, outbox: Any, trace_log: Any, counts: Callable[[], dict],
                 host: str, deadline_s: float) -> CloseReport:
    """Flush and shut down within deadline_s, even with the host down; the report says what waits in the outbox."""
    started = time.monotonic()
    completed = True
    if client is not None:
        client.delivery.closing = True

        def shutdown() -> None:
            client.sdk.shutdown()
            client.provider.shutdown()  # the SDK flushes our provider but does not shut it down

        # shutdown() flushes, joins the SDK's threads and unregisters its atexit hook;
        # none of it has a timeout, hence the daemon thread.
        completed = run_with_deadline(shutdown, deadline_s, "langfuse-close", log)
        # Whatever is still in flight or queued now fails at once: nothing the SDK
        # still tries (its atexit flush included) can hold the exit up.
        client.delivery.close()
        if outbox is not None:  # sends what it holds if time is left and the host answers
            outbox.close(deadline_s - (time.monotonic() - started), completed and not client.delivery.monitor.failing)
    if trace_log is not None:
        trace_log.close()
    return close_report(counts(), client.delivery if client else None, host, trace_log, completed=completed,
                        elapsed_s=time.monotonic() - started, deadline_s=deadline_s)


def tracker_stats(counts: dict, delivery: Delivery | None, warnings: dict, trace_log: Any) -> dict:
    """Counts of traced items, delivery and warnings, for the exit report and /metrics."""
    monitor = delivery.monitor if delivery else None
    return {**counts,
            "spans_delivered": delivery.acknowledged[SPANS] if delivery else 0,
            "span_export_failures": delivery.unacknowledged[SPANS] if delivery else 0,
            "scores_delivered": delivery.acknowledged[SCORES] if delivery else 0,
            "warnings": dict(warnings),
            "delivery_failures": monitor.failures if monitor else 0,
            "delivery_outages": monitor.outages if monitor else 0,
            "trace_log_lines": trace_log.lines if trace_log else 0}
