"""Small statistics helpers shared by the stages, the report and the benchmarks."""
from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def describe(values: Iterable[float]) -> dict[str, float | None]:
    """avg / p50 / p95 / min / max of some values (all None when empty)."""
    data = [float(v) for v in values]
    if not data:
        return {"avg": None, "p50": None, "p95": None, "min": None, "max": None}
    return {
        "avg": sum(data) / len(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "min": min(data),
        "max": max(data),
    }


# Percentiles cover the most recent calls only, so a month-long camera run keeps bounded memory.
TIMING_WINDOW = 10_000


class ModelStats:
    """Counts (all calls) and latency figures (the last TIMING_WINDOW calls); thread-safe."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self.requests = 0
        self.successes = 0
        self.failures: Counter[str] = Counter()
        self._ttft_ms: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._latency_ms: deque[float] = deque(maxlen=TIMING_WINDOW)

    def record(self, result) -> None:
        """Record one GenerationResult-like object (success, error_kind, ttft_ms, latency_ms)."""
        with self._lock:
            self.requests += 1
            if result.success:
                self.successes += 1
            else:
                self.failures[result.error_kind or "error"] += 1
            if result.ttft_ms is not None:
                self._ttft_ms.append(result.ttft_ms)
            if result.latency_ms is not None:
                self._latency_ms.append(result.latency_ms)

    def as_dict(self) -> dict:
        """Everything, as plain JSON-able values."""
        with self._lock:
            return {
                "requests": self.requests,
                "successes": self.successes,
                "failures": dict(self.failures),
                "ttft_ms": describe(self._ttft_ms),
                "latency_ms": describe(self._latency_ms),
            }

    def format(self) -> str:
        """One human-readable block for the exit report."""
        d = self.as_dict()
        fails = ", ".join(f"{k}={v}" for k, v in sorted(d["failures"].items())) or "none"
        lines = [f"{self.label}: {d['requests']} requests, {d['successes']} ok, failures: {fails}"]
        for key in ("ttft_ms", "latency_ms"):
            s = d[key]
            if s["avg"] is None:
                continue
            lines.append(
                f"  {key[:-3]:<8} avg {s['avg']:.0f} ms  p50 {s['p50']:.0f}  p95 {s['p95']:.0f}"
                f"  min {s['min']:.0f}  max {s['max']:.0f}"
            )
        return "\n".join(lines)
