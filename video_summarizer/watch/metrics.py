"""What a supervisor reads: Prometheus metrics and a health verdict, fed from the stages' hooks.

``RunMetrics`` is filled from beside the loop, never from inside it:

- ``on_event(type, record)`` (an ``EventWriter`` listener): caption and summary timings into
  histograms by model, the newest success per source, the final statistics of each source;
- ``on_source(run)`` (a ``Stages.source_observers`` hook): the ``SourceRun`` whose counters
  are read at scrape time, so ``/metrics`` shows the very numbers the exit report prints;
- ``attach(stages)``: the models' ``ModelStats``, the outage monitors and the tracker's
  ``stats()``, also read at scrape time.

Everything goes into a registry of its own (``prometheus_client.CollectorRegistry``), never the
global one, so a second run in one process (tests, a batch) starts from zero. prometheus_client
is imported here only: this module is imported only with ``--metrics-port``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from video_summarizer.outages import duration

if TYPE_CHECKING:
    from video_summarizer.pipeline import SourceRun, Stages

# "Frames arrive and captions succeed within the last few minutes"; at least three intervals,
# so a camera captioned once a minute is not called unhealthy between two captions.
HEALTH_WINDOW_S = 180.0
# Seconds: a first token from a GPU server comes in tens of ms, a CPU caption in tens of seconds.
TIMING_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# SourceRun.stats() keys that only grow, and the metric each becomes (labels: source, and reason).
_SOURCE_COUNTERS = {
    "frames_read": ("summarizer_frames_read", "Frames decoded from the source.", {}),
    "selected": ("summarizer_frames_selected", "Frames selected for a caption.", {}),
    "captioned": ("summarizer_frames_captioned", "Frames captioned.", {}),
    "caption_failures": ("summarizer_caption_failures", "Selected frames whose caption failed.", {}),
    "dropped_busy": ("summarizer_frames_dropped", "Frames dropped (busy: every caption slot taken; "
                     "replaced: a newer frame came before it was read).", {"reason": "busy"}),
    "dropped_replaced": ("summarizer_frames_dropped", "", {"reason": "replaced"}),
    "skipped_interval": ("summarizer_frames_skipped", "Frames not selected (interval: between two "
                         "due times; unchanged: too like the last one).", {"reason": "interval"}),
    "skipped_unchanged": ("summarizer_frames_skipped", "", {"reason": "unchanged"}),
    "summaries": ("summarizer_summaries", "Rolling and final summaries written.", {}),
    "summaries_merged": ("summarizer_summaries_merged", "Summary windows folded into the next one (the "
                         "summary model slower than --summary-interval).", {}),
    "summary_failures": ("summarizer_summary_failures", "Summaries that failed.", {}),
    "citations_dropped": ("summarizer_citations_dropped", "Summary citations that matched no caption.", {}),
    "job_errors": ("summarizer_job_errors", "Frames whose processing raised.", {}),
    "observer_errors": ("summarizer_observer_errors", "Frame observers (dataset, page) that raised.", {}),
}
# tracker.stats() keys that only grow; any other number it carries (an outbox's size, a queue)
# is shown as a gauge under its own name, so new delivery figures appear without a change here.
_TRACKER_COUNTERS = {"traces", "observations", "generations", "scores", "errors", "spans_delivered",
                     "span_export_failures", "scores_delivered", "delivery_failures", "delivery_outages",
                     "trace_log_lines"}


@dataclass
class _Source:
    """What is known of one source: its loop while it runs, its final statistics once done."""

    label: str
    run: SourceRun | None = None
    started_at: float = 0.0
    final: dict | None = None
    frames_seen: int = 0  # frames_read when last sampled
    last_frame_at: float | None = None  # when frames_read last grew (sampled)
    last_caption_at: float | None = None
    captions: int = 0

    def stats(self) -> dict:
        """The source's counters: final when done, else the loop's own live ones."""
        if self.final is not None:
            return self.final
        return self.run.stats() if self.run is not None else {}


@dataclass
class Health:
    """The verdict /healthz answers: ok or not, and why in words."""

    ok: bool
    reason: str
    sources: dict = field(default_factory=dict)


class RunMetrics:
    """The run's metrics registry and health, fed by the event listener and the stage hooks."""

    def __init__(self, *, interval_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = max(HEALTH_WINDOW_S, 3.0 * interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self.stages: Stages | None = None  # attached once built: the models load after the server starts
        self.registry = CollectorRegistry(auto_describe=True)
        self._hist = {
            (stage, what): Histogram(f"summarizer_{stage}_{what}_seconds",
                                     f"{stage.upper()} {'time to first token' if what == 'ttft' else 'latency'}"
                                     " of successful calls, by model.", ["model"],
                                     registry=self.registry, buckets=TIMING_BUCKETS)
            for stage in ("vlm", "llm") for what in ("ttft", "latency")}
        self.notifications = Counter("summarizer_notifications", "Notifications (--notify), by rule (motion, "
                                     "described: none matched) and outcome (delivered, dropped, rejected, "
                                     "undelivered, not_sent).", ["rule", "outcome"], registry=self.registry)
        self.registry.register(_LiveCollector(self))

    # -- hooks ----------------------------------------------------------------------------

    def attach(self, stages: Stages) -> None:
        """Read the models' statistics, outage monitors and the tracker from these stages."""
        self.stages = stages
        stages.source_observers.append(self.on_source)

    def on_source(self, run: SourceRun) -> None:
        """A source starts reading (Stages.source_observers)."""
        with self._lock:
            src = self._sources.setdefault(run.label, _Source(run.label))
            src.run, src.final, src.started_at = run, None, self._clock()

    def on_event(self, event_type: str, record: dict) -> None:
        """An event of the run (EventWriter listener)."""
        if event_type == "caption":
            self._observe("vlm", record)
            with self._lock:
                src = self._sources.setdefault(record.get("source", "?"), _Source(record.get("source", "?")))
                src.last_caption_at = self._clock()
                src.captions += 1
        elif event_type == "summary":
            self._observe("llm", record)
        elif event_type == "alert":  # one per notification and target, with its outcome
            for rule in record.get("rules") or [record.get("stage") or "?"]:
                self.notifications.labels(rule=str(rule), outcome=str(record.get("status"))).inc()
        elif event_type == "stats" and record.get("scope") != "run" and "frames_read" in record:
            label = record.get("source", "?")
            final = {k: v for k, v in record.items() if k not in ("type", "time", "source")}
            with self._lock:
                src = self._sources.setdefault(label, _Source(label))
                src.final, src.run = final, None  # its loop is done: drop it (a batch of thousands)

    def _observe(self, stage: str, record: dict) -> None:
        model = self._model(stage)
        for what in ("ttft", "latency"):
            value = record.get(f"{what}_ms")
            if isinstance(value, (int, float)):
                self._hist[(stage, what)].labels(model=model).observe(value / 1000.0)

    def _model(self, stage: str) -> str:
        stages = self.stages
        if stages is None:  # an event before the stages are attached
            return "unknown"
        return (stages.vlm if stage == "vlm" else stages.summarizer).name

    # -- reading ---------------------------------------------------------------------------

    def sources(self) -> list[tuple[str, dict, bool]]:
        """(label, statistics, still running) per source, in the order they started."""
        with self._lock:
            items = list(self._sources.values())
        return [(s.label, s.stats(), s.final is None) for s in items]

    def caption_estimate(self, label: str) -> float | None:
        """Seconds a caption takes on a running source (loop.pacing.CaptionPace), once its first are timed."""
        with self._lock:
            src = self._sources.get(label)
            run = src.run if src is not None else None
        pace = getattr(run, "pace", None)
        return pace.estimate if pace is not None else None

    def sample(self) -> None:
        """Note which sources read frames since the last call (the server calls it every second)."""
        now = self._clock()
        with self._lock:
            for src in self._sources.values():
                if src.run is None:
                    continue
                read = src.run.counters.frames_read
                if read != src.frames_seen:
                    src.frames_seen, src.last_frame_at = read, now

    def health(self) -> Health:
        """Healthy while every running source reads frames and gets captions within the window."""
        self.sample()
        now = self._clock()
        with self._lock:
            items = list(self._sources.values())
        if not items:
            return Health(False, "starting: no source has started reading yet (models may be loading)")
        reasons, lines, detail = [], [], {}
        for src in items:
            if src.final is not None:
                lines.append(f"{src.label}: finished ({src.captions} captions)")
                detail[src.label] = {"running": False}
                continue
            frame_age = now - (src.last_frame_at or src.started_at)
            # The models are loaded before a source starts: its first caption is due within the window.
            caption_age = now - (src.last_caption_at or src.started_at)
            detail[src.label] = {"running": True, "last_frame_s": round(frame_age, 1),
                                 "last_caption_s": round(caption_age, 1)}
            if frame_age > self.window_s:
                reasons.append(f"{src.label}: no frame read for {duration(frame_age)}")
            if caption_age > self.window_s:
                why = self._vlm_reason()
                reasons.append(f"{src.label}: no caption succeeded for {duration(caption_age)}"
                               + (f" (last failure: {why})" if why else ""))
            if frame_age <= self.window_s and caption_age <= self.window_s:
                lines.append(f"{src.label}: last frame {duration(frame_age)} ago, "
                             f"last caption {duration(caption_age)} ago")
        if reasons:
            return Health(False, "\n".join(reasons), detail)
        return Health(True, "ok\n" + "\n".join(lines), detail)

    def _vlm_reason(self) -> str | None:
        return self.stages.vlm_outage.last_reason if self.stages is not None else None

    def exposition(self) -> bytes:
        """The Prometheus text of every metric, now."""
        self.sample()
        return generate_latest(self.registry)


class _LiveCollector:
    """Read at scrape time: the sources' counters, the models' and the tracker's statistics."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list:
        return []  # nothing to check at registration: every family is built per scrape

    def collect(self) -> Iterator[Any]:
        yield from self._sources()
        stages = self.metrics.stages
        if stages is not None:
            yield from self._models(stages)
            yield from self._outages(stages)
            yield from _tracker_families(stages.tracker.stats())
        health = self.metrics.health()
        yield _gauge("summarizer_healthy", "1 while /healthz answers 200.", [], [([], 1 if health.ok else 0)])

    def _sources(self) -> Iterator[Any]:
        families: dict[str, CounterMetricFamily] = {}
        running = GaugeMetricFamily("summarizer_source_running", "1 while the source is being read.",
                                    labels=["source"])
        pace = GaugeMetricFamily("summarizer_caption_seconds_estimate", "Seconds a caption takes on the "
                                 "source: the median of its first captions, then a moving mean.", labels=["source"])
        for label, stats, live in self.metrics.sources():
            running.add_metric([label], 1 if live else 0)
            estimate = self.metrics.caption_estimate(label)
            if estimate is not None:
                pace.add_metric([label], estimate)
            for key, (name, doc, extra) in _SOURCE_COUNTERS.items():
                if key not in stats:
                    continue
                family = families.get(name)
                if family is None:
                    family = families[name] = CounterMetricFamily(
                        name, doc or _SOURCE_COUNTERS[_first_key(name)][1], labels=["source", *extra])
                family.add_metric([label, *extra.values()], stats[key])
        yield running
        yield pace
        yield from families.values()

    def _models(self, stages: Stages) -> Iterator[Any]:
        requests = CounterMetricFamily("summarizer_model_requests", "Model calls, by stage and model.",
                                       labels=["stage", "model"])
        failures = CounterMetricFamily("summarizer_failures", "Failed model calls, by stage, model and "
                                       "kind (timeout, server_error, connection, ...).",
                                       labels=["stage", "model", "kind"])
        for stage, part in (("vlm", stages.vlm), ("llm", stages.summarizer)):
            if part.stats is None:
                continue
            d = part.stats.as_dict()
            requests.add_metric([stage, part.name], d["requests"])
            for kind, n in sorted(d["failures"].items()):
                failures.add_metric([stage, part.name, kind], n)
        yield requests
        yield failures

    def _outages(self, stages: Stages) -> Iterator[Any]:
        family = GaugeMetricFamily("summarizer_outage", "1 while the stage fails (vlm, llm, langfuse).",
                                   labels=["stage"])
        for stage, monitor in (("vlm", stages.vlm_outage), ("llm", stages.llm_outage)):
            family.add_metric([stage], 1 if monitor.failing else 0)
        failing = stages.tracker.stats().get("delivery_failing")
        if isinstance(failing, bool):  # shown once the tracker says it
            family.add_metric(["langfuse"], 1 if failing else 0)
        yield family


def _first_key(name: str) -> str:
    return next(k for k, (n, _doc, _extra) in _SOURCE_COUNTERS.items() if n == name)


def _gauge(name: str, doc: str, labels: list[str], values: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _tracker_families(stats: dict) -> Iterator[Any]:
    """tracker.stats() as metrics: counters for what only grows, gauges for the rest."""
    for key, value in sorted(stats.items()):
        name = f"summarizer_langfuse_{key}"
        if isinstance(value, bool):
            yield _gauge(name, f"Langfuse delivery: {key} (1 = true).", [], [([], int(value))])
        elif isinstance(value, (int, float)):
            if key in _TRACKER_COUNTERS:
                family = CounterMetricFamily(name, f"Langfuse tracing: {key.replace('_', ' ')}.")
                family.add_metric([], value)
                yield family
            else:
                yield _gauge(name, f"Langfuse delivery: {key.replace('_', ' ')}.", [], [([], value)])
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            family = CounterMetricFamily(name, f"Langfuse tracing: {key}, by kind.", labels=["kind"])
            for kind, n in sorted(value.items()):
                family.add_metric([str(kind)], n)
            yield family
