"""Whether Langfuse is taking what the tracker sends, said in a few log lines, not a line a batch.

With the host down, the SDK and its OpenTelemetry exporter log every failed batch, retry
and prompt fetch: about a line a second on a busy camera, millions over a month of outage.
Instead, the tracker reports each delivery's outcome to a ``DeliveryMonitor`` (an
``outages.OutageMonitor``), which logs

- one WARNING when sending starts failing, with a short reason ("Connection refused",
  "timed out", "HTTP 401 ... check the keys");
- one WARNING every ``report_every_s`` (10 minutes) while it goes on, with how much of what
  was traced the host has acknowledged so far;
- one INFO when sending works again, with how long it failed.

A host that flaps prints at most one failing line per interval and one recovery line per
failing line. ``quiet_sdk_delivery_logs()`` turns the SDK's own per-batch lines into DEBUG
records of this module's logger (shown with ``--debug``); the SDK's other warnings, such as
scores the host rejected as invalid, are left as they are.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable

from video_summarizer.outages import DEFAULT_REPORT_EVERY_S, OutageMonitor, one_line

log = logging.getLogger(__name__)

# Loggers whose warnings about a failed delivery are per batch, retry or fetch.
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.common.http")
_SDK_LOGGER = "langfuse"
# The SDK's delivery messages (record.msg templates), by their start.
_SCORES_DROPPED = "API error: Failed to send"
_SDK_DELIVERY_MESSAGES = (_SCORES_DROPPED, "Error while fetching prompt",
                          "Prompt '%s' not found during refresh")
_KEYS_HINT = "check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY"

# Per thread: the monitor whose request this thread is sending (set by the tracker's httpx
# request hook), and the reason the SDK last logged for a failure on this thread.
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

    def claim_thread(self) -> None:
        """Mark the calling thread as sending for this monitor: the SDK and the exporter log a
        failed try on the thread that sent it, and those records are counted here."""
        _THREAD.monitor = self


def begin_attempt() -> None:
    """Forget the reason last noted on this thread, before a delivery whose failure it explains."""
    _THREAD.reason = None


def noted_reason() -> str | None:
    """The reason the SDK logged on this thread since ``begin_attempt()``, if any."""
    return getattr(_THREAD, "reason", None)


class _QuietDelivery(logging.Filter):
    """Turns the SDK's per-batch delivery messages into DEBUG lines, noting their reason."""

    def __init__(self, sdk_messages: frozenset[str]) -> None:
        super().__init__()
        self._sdk_messages = sdk_messages

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            return self._quiet(record)
        except Exception:  # noqa: BLE001 - a filter that raises would raise in the SDK's thread
            return True

    def _quiet(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else ""
        if record.name == _SDK_LOGGER and not template.startswith(_SDK_DELIVERY_MESSAGES):
            text = record.getMessage()
            if text not in self._sdk_messages:
                return True  # not about delivery: as it is
        else:
            text = record.getMessage()
        if "shutdown" in text.lower():
            # "Shutdown in progress, aborting retry.", "Exporter already shutdown, ...": our own
            # close() at work, not the host's answer; what it drops is in the exit report
            log.debug("%s: %s", record.name, text)
            return False
        reason = short_reason(text)
        _THREAD.reason = reason
        # A failed try of a span batch (the exporter retries, logging each) or a score batch
        # given up: counted by the monitor sending on this thread. Prompt fetches are not
        # deliveries (prompts.py says what they fall back to).
        if record.name != _SDK_LOGGER or template.startswith(_SCORES_DROPPED):
            monitor = getattr(_THREAD, "monitor", None)
            if monitor is not None:
                monitor.failed(reason)
        log.debug("%s: %s", record.name, text)
        return False


def quiet_sdk_delivery_logs() -> None:
    """Install the filter on the SDK's and exporter's loggers, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    messages: set[str] = set()
    try:  # the texts the SDK logs for an API error status (401, 500, ...) with no status in them
        from langfuse._utils.parse_error import (
            defaultErrorResponse,
            errorResponseByCode,
        )

        messages.update(errorResponseByCode.values())
        messages.add(defaultErrorResponse)
    except ImportError:  # another SDK layout: those lines stay as they are
        pass
    quiet = _QuietDelivery(frozenset(messages))
    for name in (*_EXPORTER_LOGGERS, _SDK_LOGGER):
        logging.getLogger(name).addFilter(quiet)
