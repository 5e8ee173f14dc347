"""The loop for one source: capture → select → faces → caption → summarize → emit.

Each selected frame becomes one job on its own worker thread (loop.frame_jobs), and the
job's whole trace opens and closes in that thread, so a frame's trace never mixes with
another's. The loop hands each stage's outcome to tracing.frame_trace, which makes the
spans, generations and scores; the captions and summaries are kept in loop.caption_store.
At most ``max_inflight`` jobs run at once: a live source drops frames while all are busy
(and so always captions the newest frame), a file source waits.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from video_summarizer import defaults as D
from video_summarizer.backends import CaptionModel, FaceModel, FrameObserver, SummaryModel
from video_summarizer.citations import CitableCaption
from video_summarizer.loop.caption_store import MAX_KEPT_CAPTIONS, MAX_KEPT_SUMMARIES, CaptionStore, SummaryLog
from video_summarizer.loop.emit import caption_event, emit_motion, observe_frame, summary_event
from video_summarizer.loop.frame_jobs import FrameJobs, Job, RunCounters, run_final, select_frame, source_stats
from video_summarizer.outages import OutageMonitor
from video_summarizer.outputs import EventWriter, SummaryDocument
from video_summarizer.privacy import blur_faces
from video_summarizer.prompts import faces_sentence, render_caption
from video_summarizer.results import CaptionOutcome, FaceOutcome, SummaryOutcome, TimedCaption
from video_summarizer.timecodes import format_video_time, stamp_decimals
from video_summarizer.tracing.frame_trace import FrameTrace, FrameTracer, TraceSettings
from video_summarizer.tracing.protocol import Tracker

__all__ = ["MAX_KEPT_CAPTIONS", "MAX_KEPT_SUMMARIES", "PipelineConfig", "RunCounters", "SourceRun", "Stages"]

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """The loop's knobs (the CLI fills them from options)."""

    summary_interval: float = D.SUMMARY_INTERVAL_S
    max_inflight: int = D.INFLIGHT_SERVER
    shutdown_timeout_s: float = D.SHUTDOWN_TIMEOUT_S
    vlm_worst_ms: float = D.VLM_WORST_MS
    llm_worst_ms: float = D.LLM_WORST_MS


def _vlm_outages() -> OutageMonitor:
    return OutageMonitor(
        log, failing="VLM: captions failing ({reason}); frames are still tried, said again "
                     "every {every} while it lasts",
        still="VLM: captions still failing after {since} ({reason}); {failures} frames not "
              "captioned so far",
        back="VLM: captions work again after {since} ({failures} frames not captioned meanwhile)")


def _llm_outages() -> OutageMonitor:
    return OutageMonitor(
        log, failing="LLM: summaries failing ({reason}); said again every {every} while it lasts",
        still="LLM: summaries still failing after {since} ({reason}); {failures} failed so far",
        back="LLM: summaries work again after {since} ({failures} failed meanwhile)")


@dataclass
class Stages:
    """The stage objects one run uses; shared by all sources of a run."""

    tracker: Tracker  # LangfuseTracker (a named module: the package does not import it)
    vlm: CaptionModel
    summarizer: SummaryModel
    faces: FaceModel | None
    events: EventWriter
    blur_faces: bool = False  # blur every detected face in the frame sent to the VLM
    prompts: Any | None = None  # prompts.PromptSource; None: the models' built-in prompts
    # --trace-frames: (longest side, JPEG quality) of the frame put on each vlm_caption
    # generation as Langfuse media, as the model got it (blurred); None: no pixels traced.
    trace_frames: tuple[int, int] | None = None
    # Called after each caption with (image as the caption model received it, the caption event's
    # fields, the face matches): the dataset writer, the watch page. Events go to events' listeners.
    frame_observers: list[FrameObserver] = field(default_factory=list)
    # Called with each SourceRun as it starts reading: live counters for /metrics and the page.
    source_observers: list[Callable[[Any], None]] = field(default_factory=list)
    # A failing model said once, every 10 min while it lasts, and when it works again.
    vlm_outage: OutageMonitor = field(default_factory=_vlm_outages)
    llm_outage: OutageMonitor = field(default_factory=_llm_outages)


class SourceRun:
    """Runs one opened frame source through the stages and returns its SummaryDocument."""

    def __init__(self, source: Any, selector: Any, stages: Stages, config: PipelineConfig, *, session_id: str,
                 stop_event: threading.Event, on_frame: Callable[[Any, "SourceRun"], None] | None = None,
                 on_progress: Callable[[int], None] | None = None, slots: threading.Semaphore | None = None,
                 on_read: Callable[[], None] | None = None) -> None:
        self.source = source
        self.selector = selector
        self.stages = stages
        self.config = config
        self.session_id = session_id
        self.stop_event = stop_event
        self.on_frame = on_frame
        self.on_progress = on_progress
        self.on_read = on_read  # the source is read: a batch starts its next file meanwhile
        self.label = source.label
        self.counters = RunCounters()
        # (frame time, value) of the newest results, for the --display window
        self.latest_caption: tuple[float, str] = (0.0, "")
        self.latest_faces: tuple[float, list] = (0.0, [])
        # The run's caption-call budget, shared by all its sources (runner.Run passes it); a
        # source on its own gets max_inflight slots of its own.
        self.jobs = FrameJobs(slots if slots is not None else threading.BoundedSemaphore(max(1, config.max_inflight)),
                              stop_event)
        self.captions = CaptionStore()
        self.summaries = SummaryLog()
        self._lock = threading.Lock()  # the counters, from the job threads
        self._window_start: float | None = None
        self._first_ts = 0.0

    @property
    def rolling_summary(self) -> str | None:
        """The newest summary, its invalid citations dropped."""
        return self.summaries.rolling

    # -- the loop: capture -> select -> submit; drain; final summary; document -------------

    def run(self) -> SummaryDocument:
        """Read the source to its end (or until stopped), then write the final summary."""
        self.tracer = FrameTracer(self.stages.tracker, TraceSettings(  # the traces are made beside the loop
            self.label, self.session_id, bool(self.source.live), self.stages.trace_frames,
            self.config.vlm_worst_ms, self.config.llm_worst_ms))
        seq = 0
        for observe in self.stages.source_observers:
            observe(self)
        for frame in self.source:
            self.counters.frames_read += 1
            if self.on_progress is not None:
                self.on_progress(1)
            if self.on_frame is not None:
                self.on_frame(frame, self)
            if self.stop_event.is_set():
                break
            motion = self.selector.look(frame)  # every read frame: None when motion is off
            emit_motion(self.stages.events, self.label, frame.index, motion)
            # Clips: every read frame goes to the collector here, e.g.
            # self.clips.add(frame, motion_area=motion.area if motion is not None else None)
            if not self._select(frame):
                continue
            job = self._make_job(seq, frame)
            self.jobs.submit(f"frame-{job.frame_index}", lambda job=job: self._process(job),
                             lambda error, job=job: self._job_failed(job, error))
            seq += 1
        interrupted = self.stop_event.is_set()
        if self.on_read is not None:
            self.on_read()
        self._drain(bounded=interrupted)
        interrupted = self.stop_event.is_set()  # a signal may have come while draining
        summary = self._final_summary(bounded=interrupted)
        return self._document(summary, self.stop_event.is_set())

    def _select(self, frame: Any) -> bool:
        """File: wait for a slot; live: a due frame or motion start takes a free slot or is dropped."""
        taken = select_frame(self.selector, frame, self.jobs, live=bool(self.source.live))
        self.counters.dropped_busy += taken is None
        return bool(taken)

    def _make_job(self, seq: int, frame: Any) -> Job:
        ts = float(frame.timestamp)
        if self._window_start is None:
            self._window_start = self._first_ts = ts
        due = ts - self._window_start >= self.config.summary_interval
        if due:
            self._window_start = ts
        self.counters.selected += 1
        pending = self.jobs.pending()
        return Job(seq, frame.index, ts, frame.captured_at, frame.image, due, pending if due else [],
                   motion=self.selector.motion)

    def _job_failed(self, job: Job, error: BaseException) -> None:
        """Count and report a frame whose job raised; reporting never raises in turn."""
        with self._lock:
            self.counters.job_errors += 1
        log.debug("frame %s failed", job.frame_index, exc_info=error)
        try:
            self.stages.events.emit("error", source=self.label, frame=job.frame_index,
                                    stage="pipeline", message=str(error) or type(error).__name__)
        except Exception:  # noqa: BLE001 - counted above; the frame's future must still resolve
            log.debug("frame %s: its error event failed too", job.frame_index, exc_info=True)

    def _drain(self, *, bounded: bool) -> None:
        """Wait for in-flight jobs: all of them, or up to the shutdown deadline once stopping."""
        timeout = self.config.shutdown_timeout_s
        left = self.jobs.drain(timeout, bounded=bounded)
        if left:
            log.warning("%s: %d frame(s) still in flight after %.0f s; abandoned", self.label, left, timeout)

    # -- one frame ----------------------------------------------------------------------

    def _process(self, job: Job) -> None:
        """One frame, as the diagram reads: faces -> caption -> emit -> summary -> emit (traced beside)."""
        with self.tracer.frame(job.frame_index, job.video_time, job.motion) as trace:
            faces = self._faces(job)
            trace.faces(faces)
            if faces is not None and faces.failure is not None:
                raise faces.failure
            caption = self._caption(job, faces)
            trace.caption(caption, faces.names if faces else [], job.frame_index)
            self._emit_caption(job, faces, caption, trace.trace_id)
            if job.summary_due and self.jobs.wait_earlier(job):  # earlier frames' captions first
                self._summarize_window(trace, *self.captions.take_window(job.seq))

    def _faces(self, job: Job) -> FaceOutcome | None:
        faces = self.stages.faces
        if faces is None:
            return None
        start = time.time()
        try:
            matches = faces.recognize(job.image, timestamp=job.video_time)
        except Exception as e:  # noqa: BLE001 - the frame fails as before; its span says why first
            return FaceOutcome((), start, time.time(), failure=e)
        self.latest_faces = (job.video_time, matches)
        return FaceOutcome(tuple(matches), start, time.time())

    def _caption(self, job: Job, faces: FaceOutcome | None) -> CaptionOutcome:
        """Caption the frame (faces blurred when asked): the result, prompt and image sent."""
        vlm, prompts = self.stages.vlm, self.stages.prompts
        names = faces.names if faces else []
        managed = prompts.caption() if prompts is not None else None
        prompt = render_caption(managed, faces_sentence(names)) if managed else vlm.build_prompt(names)
        image, privacy = job.image, {}
        if self.stages.blur_faces:
            # Names were found on the original; the model gets them as text, the faces blurred.
            image, blurred = blur_faces(job.image, [m.box for m in faces.matches] if faces else [])
            privacy = {"blur_faces": True, "faces_blurred": blurred}
        job.caption_input = {"prompt": prompt, "model": vlm.name, "source_spec": getattr(
            self.source, "content_path", None), "prompt_version": managed.version if managed else None}
        start = time.time()
        result = vlm.generate_caption(image, prompt)
        return CaptionOutcome(result, prompt, managed, image, privacy, start, time.time(), model=vlm.name)

    def _emit_caption(self, job: Job, faces: FaceOutcome | None, caption: CaptionOutcome, trace_id: str) -> None:
        result, events = caption.result, self.stages.events
        matches = list(faces.matches) if faces else []
        if not result.success:
            with self._lock:
                self.counters.caption_failures += 1
            events.emit("error", source=self.label, frame=job.frame_index, stage="vlm",
                        video_time=round(job.video_time, 3), kind=result.error_kind,
                        message=result.error, trace_id=trace_id)
            self.stages.vlm_outage.failed(f"{result.error_kind}: {result.error}")
            return
        self.stages.vlm_outage.succeeded()
        self.latest_caption = (job.video_time, result.caption)
        names = faces.names if faces else []
        record = caption_event(self.label, job, names, matches, result, trace_id)
        seconds = self._caption_time(job.video_time)
        with self._lock:
            self.counters.captioned += 1
        self.captions.add(job.seq, TimedCaption(seconds, result.caption, tuple(names)), record, CitableCaption(
            seconds, {"frame": job.frame_index, "video_time": record["video_time"], "trace_id": trace_id}))
        events.emit("caption", **record)
        observe_frame(self.stages.frame_observers, caption.sent, {**record, **job.caption_input},  # + what was asked
                      matches, self.counters, self.label)

    def _caption_time(self, ts: float) -> float:
        """Video time for files; seconds since the first selected frame for live sources."""
        return ts - self._first_ts if self.source.live else ts

    # -- summaries --------------------------------------------------------------------

    def _summarize_window(self, trace: FrameTrace, window: list[TimedCaption],
                          citable: list[CitableCaption], *, final: bool = False) -> SummaryOutcome | None:
        """Roll the window's captions into the summary, trace it and emit it."""
        if not window:
            return None
        summary = self._summarize(window, citable, final=final)
        trace.summary(summary)
        self._emit_summary(summary, citable, trace.trace_id)
        return summary

    def _summarize(self, window: list[TimedCaption], citable: list[CitableCaption], *, final: bool) -> SummaryOutcome:
        llm, prompts = self.stages.summarizer, self.stages.prompts
        managed = prompts.summary() if prompts is not None else None
        system = {"system_prompt": managed.template} if managed else {}
        messages = llm.build_messages(window, self.summaries.rolling, final=final, **system)
        start = time.time()
        result = llm.generate(messages)
        end = time.time()
        grounded = self.summaries.ground(result.summary, citable) if result.success else None
        return SummaryOutcome(result, messages, managed, tuple(window), final, grounded, start, end, model=llm.name)

    def _emit_summary(self, summary: SummaryOutcome, citable: list[CitableCaption], trace_id: str) -> None:
        result, grounded = summary.result, summary.grounded
        record = summary_event(self.label, summary, [citable[0].ref["video_time"], citable[-1].ref["video_time"]],
                               trace_id)
        if grounded is None:
            self.stages.llm_outage.failed(f"{result.error_kind}: {result.error}")
            self.counters.summary_failures += 1
            self.stages.events.emit("error", stage="llm", kind=result.error_kind, message=result.error,
                                    **{k: record[k] for k in ("source", "window", "trace_id")})
            return
        self.stages.llm_outage.succeeded()
        self.counters.summaries += 1
        self.counters.citations_dropped += grounded.dropped
        self.summaries.add(record, grounded.text, record["sentences"])  # the next prompt sees only valid citations
        self.stages.events.emit("summary", **record)

    def _final_summary(self, *, bounded: bool) -> str:
        """Summarize what the rolling summary has not seen yet; bounded when stopping."""
        window, citable = self.captions.take_window(None)
        if not window:
            return self.rolling_summary or ""
        outcome: list = []

        def final() -> None:
            with self.tracer.final(len(window)) as trace:
                outcome.append(self._summarize_window(trace, window, citable, final=True))
        run_final(final, self.label, self.config.shutdown_timeout_s, self.stop_event, bounded=bounded)
        if outcome and outcome[0].result.success:
            return self.rolling_summary or ""  # the final summary, its invalid citations dropped
        return _fallback_summary(self.rolling_summary, window)

    def _document(self, summary: str, interrupted: bool) -> SummaryDocument:
        return SummaryDocument(
            source=getattr(self.source, "spec", self.label),
            label=self.label,
            summary=summary,
            captions=self.captions.events(),
            summaries=list(self.summaries.records),
            sentences=self.summaries.sentences if summary and summary == self.rolling_summary else None,
            stats=self.stats(),
            interrupted=interrupted,
        )

    def stats(self) -> dict:
        """Counters of this source plus the selector's and the source's own."""
        return source_stats(self.counters, self.selector, self.source)


def _fallback_summary(previous: str | None, window: list[TimedCaption]) -> str:
    """The rolling summary plus the captions it has not seen, when no model summary is possible."""
    lines = [previous] if previous else []
    decimals = stamp_decimals(c.video_time for c in window)
    lines += [f"[{format_video_time(c.video_time, decimals)}] {c.text}" for c in window]
    return "\n".join(lines)
