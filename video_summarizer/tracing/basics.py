"""What the tracker needs that involves no SDK: score values, ids, settings, no-op contexts.

Kept apart from ``langfuse_tracker`` so that the tracker module holds the SDK calls and
little else; nothing here imports ``langfuse``, ``opentelemetry`` or ``httpx`` at import time.
"""
from __future__ import annotations

import logging
import math
import numbers
import random
import threading
from typing import Any, Callable

SCORE_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")


def hex_id(bits: int) -> str:
    """A random id of ``bits`` bits in hex (16 hex: an observation, 32: a trace)."""
    return f"{random.getrandbits(bits):0{bits // 4}x}"  # ids, not secrets


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


class WarnOnce:
    """Warn once per key, count always."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: Any) -> None:
        with self._lock:
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
        if n == 0:
            self.log.warning(message + " (warning shown once; occurrences are counted)", *args)


def trace_metadata(metadata: Any) -> dict | None:
    """Trace metadata as propagate_attributes accepts it (str keys, no None values)."""
    if not isinstance(metadata, dict):
        return None
    return {str(k): v for k, v in metadata.items() if v is not None} or None


def positive_float(value: float | None, env: str, default: float) -> float:
    """``value`` (None: ``default``), checked positive; ``env`` names it in the error."""
    if value is None:
        return default
    if not value > 0:
        raise ValueError(f"{env.lower()} must be positive, got {value}")
    return float(value)


def positive_int(value: int | None, env: str) -> int | None:
    """``value`` (None: the SDK's default), checked positive; ``env`` names it in the error."""
    if value is None:
        return None
    if value <= 0:
        raise ValueError(f"{env.lower()} must be positive, got {value}")
    return int(value)


def run_with_deadline(fn: Callable[[], Any], deadline_s: float, name: str,
                      logger: logging.Logger) -> bool:
    """Run fn in a daemon thread; True if it finished within deadline_s without raising."""
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
        logger.warning("%s failed: %s", name, errors[0])
    return not thread.is_alive() and not errors


def prompt_failure(exc: Exception, name: str, label: str | None, host: str) -> str:
    """Why a prompt fetch failed, in a few words (not found, rejected, unreachable)."""
    import httpx

    status = getattr(exc, "status_code", None)
    if status == 404:
        return f"not found: {name!r} has no version labelled {label!r}"
    if status in (401, 403):
        return f"rejected: HTTP {status} (check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY)"
    if status is not None:
        return f"unreachable: HTTP {status} from {host}"
    if isinstance(exc, httpx.HTTPError):
        return f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
    return f"failed: {type(exc).__name__}: {exc}"[:300]


# -- no-op ("Dummy") contexts: the disabled mode without a trace log --------------------------
class _DummyObservation:
    """A span or generation that records nothing."""

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


class DummySpan(_DummyObservation):
    """No-op span context."""


class DummyGeneration(_DummyObservation):
    """No-op generation context."""


class DummyTrace(_DummyObservation):
    """No-op trace context; its id is random so logs and events can still cite it."""

    observation_id = _DummyObservation.id

    def __init__(self) -> None:
        super().__init__(hex_id(128))
        self.id = self.trace_id


_DUMMY_SPAN = DummySpan()
_DUMMY_GENERATION = DummyGeneration()
