"""The offline trace log: one JSON line per finished trace, observation and score.

``LangfuseTracker(trace_log=PATH)`` appends to PATH, one line per record, flushed per line,
thread-safe, whether or not Langfuse is enabled. ``trace_report.py PATH`` turns it into
the dashboards' figures. Timestamps are UTC ISO-8601 with microseconds and a ``Z``.

Fields:

- every line: ``type`` (``trace`` | ``span`` | ``generation`` | ``score``), ``trace_id``
  (32 hex), ``name``;
- trace: ``id`` (= trace_id), ``observation_id`` (root span), ``start``, ``end``,
  ``latency_ms``, ``level``, ``status_message``, ``user_id``, ``session_id``, ``tags``,
  ``metadata``;
- span / generation: ``id`` (16 hex), ``parent_id``, ``start``, ``end``, ``latency_ms``,
  ``level`` (``DEFAULT`` or ``ERROR``), ``status_message``, ``metadata``; generations add
  ``model``, ``completion_start_time`` (null when no token came), ``ttft_ms``
  (= completion_start_time - start, as Langfuse computes it), ``usage``, ``legacy``,
  ``prompt_name`` / ``prompt_version`` (the managed prompt it is linked to, else null),
  ``frame`` (``{"bytes", "sha256"}`` of the JPEG the model got with --trace-frames, never
  its pixels; null otherwise);
- score: ``id`` (the id Langfuse receives), ``observation_id`` (null for a trace score),
  ``target`` (``trace`` | ``observation``), ``value``, ``data_type`` (NUMERIC | BOOLEAN |
  CATEGORICAL), ``comment``, ``timestamp``.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from video_summarizer.errors import InputError
from video_summarizer.files import NOT_WRITTEN, make_private_dir, open_private

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_utc(value: Any) -> datetime | None:
    """A float epoch / aware datetime / naive local datetime as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        # astimezone() reads a naive datetime as local time, which is what
        # datetime.fromtimestamp(t) (the integration guide's idiom) produced.
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


def ns_to_datetime(ns: int) -> datetime:
    """Epoch nanoseconds as an aware UTC datetime (to the microsecond, as Langfuse stores it)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(value: datetime) -> int:
    """An aware datetime as epoch nanoseconds, exactly (no float rounding)."""
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def frame_digest(jpeg: bytes) -> dict:
    """What the trace log keeps of a traced frame: its size and SHA-256, never its pixels."""
    import hashlib

    return {"bytes": len(jpeg), "sha256": hashlib.sha256(jpeg).hexdigest()}


def observation_times(start_ns: int | None, end_ns: int | None) -> dict:
    """The ``start`` / ``end`` / ``latency_ms`` fields of a trace or observation line."""
    return {
        "start": iso_utc(ns_to_datetime(start_ns)) if start_ns is not None else None,
        "end": iso_utc(ns_to_datetime(end_ns)) if end_ns is not None else None,
        "latency_ms": (end_ns - start_ns) / 1e6
        if start_ns is not None and end_ns is not None else None,
    }


class TraceLog:
    """Thread-safe JSON Lines appender, flushed per line (see the module docstring).

    A file that cannot be written (a full disk) is said once naming --trace-log; the log then
    stops (a line cut by the disk is not followed by more), later records are counted as
    failures, and the exit names it (files.NOT_WRITTEN). Its folder is made 0700, the file 0600.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = 0) -> None:
        self.path = os.fspath(path)
        folder = os.path.dirname(self.path)
        try:
            if folder:
                make_private_dir(folder)
            if max_bytes:  # --trace-log-max-mb: PATH rotated to PATH.1 ... PATH.5
                from video_summarizer.rotation import RotatingLines

                self._fh: Any = RotatingLines(self.path, max_bytes)
            else:
                self._fh = open_private(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write the trace log {self.path}: {e.strerror or e}",
                             option="--trace-log") from e
        self._lock = threading.Lock()
        self.lines = 0
        self.failures = 0

    def write(self, record: dict) -> None:
        """Append one record as a line; a failed write is said once, then counted."""
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
                self._drop(exc)

    def _drop(self, error: OSError) -> None:
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except OSError:  # the buffered rest fails again: already said
            pass
        NOT_WRITTEN.record("--trace-log", self.path, error,
                           f"the run goes on without it after {self.lines} lines")

    def close(self) -> None:
        """Close the file; later writes are counted as failures."""
        with self._lock:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.close()
                except OSError as exc:
                    NOT_WRITTEN.record("--trace-log", self.path, exc)
