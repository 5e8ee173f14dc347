"""The loop for one source: capture → select → faces → caption → summarize → emit.

Each selected frame becomes one job on its own worker thread, and the job's whole trace
(`frame_processing`: face_recognition span, vlm_caption span with its generation, and when
a summary window closes the llm_summarization span with its generation, then the scores)
opens and closes in that thread, so a frame's trace never mixes with another's. At most
``max_inflight`` jobs run at once: a live source drops frames while all are busy (and so
always captions the newest frame), a file source waits.

Workers are daemon threads on purpose: a model call that hangs past every timeout must not
keep the process alive after the shutdown deadline.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from video_summarizer import scores
from video_summarizer.backends import CaptionModel, FaceModel, FrameObserver, SummaryModel
from video_summarizer.citations import CitableCaption, GroundedSummary, ground_summary
from video_summarizer.frames import to_jpeg_bytes
from video_summarizer.outages import OutageMonitor
from video_summarizer.outputs import EventWriter, SummaryDocument
from video_summarizer.privacy import blur_faces
from video_summarizer.prompts import faces_sentence, render_caption
from video_summarizer.results import TimedCaption
from video_summarizer.timecodes import format_video_time, stamp_decimals
from video_summarizer.tracing.protocol import Tracker
from video_summarizer.tracing.records import GenerationRecord

log = logging.getLogger(__name__)

# Live runs last for weeks: keep the newest captions and summaries for the final document only.
MAX_KEPT_CAPTIONS = 5000
MAX_KEPT_SUMMARIES = 500
_POLL_S = 0.2  # how often a wait without end looks at the stop event


@dataclass
class PipelineConfig:
    """The loop's knobs (the CLI fills them from options)."""

    interval: float = 5.0
    min_change: float | None = None
    max_gap: float | None = None
    summary_interval: float = 60.0
    max_inflight: int = 2
    shutdown_timeout_s: float = 10.0
    vlm_worst_ms: float = 5000.0
    llm_worst_ms: float = 30000.0


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


@dataclass
class _Job:
    seq: int
    frame_index: int
    video_time: float  # seconds of video (files) or epoch seconds (live)
    captured_at: float
    image: Any
    summary_due: bool
    earlier: list[Future] = field(default_factory=list)
    caption_input: dict = field(default_factory=dict)  # prompt, model, version: for frame observers


@dataclass
class RunCounters:
    """What happened to the frames of one source."""

    frames_read: int = 0
    selected: int = 0
    captioned: int = 0
    caption_failures: int = 0
    dropped_busy: int = 0  # live: due for processing but every slot was busy
    job_errors: int = 0
    summaries: int = 0
    summary_failures: int = 0
    citations_dropped: int = 0  # summary citations that matched no caption
    observer_errors: int = 0  # frame observers (dataset, page) that raised


class SourceRun:
    """Runs one opened frame source through the stages and returns its SummaryDocument."""

    def __init__(
        self,
        source: Any,
        selector: Any,
        stages: Stages,
        config: PipelineConfig,
        *,
        session_id: str,
        stop_event: threading.Event,
        on_frame: Callable[[Any, "SourceRun"], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
        slots: threading.Semaphore | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> None:
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
        self._slots = slots if slots is not None else threading.BoundedSemaphore(max(1, config.max_inflight))
        self._lock = threading.Lock()
        self._captions: dict[int, TimedCaption] = {}
        self._caption_events: dict[int, dict] = {}
        self._citable: dict[int, CitableCaption] = {}  # captions not yet summarized, as citations name them
        self._rolling_cites: list[CitableCaption] = []  # what rolling_summary cites: its next prompt shows them
        self._last_summarized_seq = -1
        self.rolling_summary: str | None = None  # the newest summary, its invalid citations dropped
        self._summaries: list[dict] = []
        self._summary_sentences: list[dict] | None = None  # those of rolling_summary
        self._window_start: float | None = None
        self._first_ts = 0.0
        self._pending: list[Future] = []

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> SummaryDocument:
        """Read the source to its end (or until stopped), then write the final summary."""
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
            if self.source.live:
                if not self._live_select(frame):
                    continue
            elif not self.selector.select(frame) or not self._wait_for_slot():
                continue
            self._submit(self._make_job(seq, frame))
            seq += 1
        interrupted = self.stop_event.is_set()
        if self.on_read is not None:
            self.on_read()
        self._drain(bounded=interrupted)
        interrupted = self.stop_event.is_set()  # a signal may have come while draining
        summary = self._final_summary(bounded=interrupted)
        return self._document(summary, self.stop_event.is_set())

    def _live_select(self, frame: Any) -> bool:
        """Live: a due frame takes a free slot now, or is dropped (the next newest frame will do)."""
        if not self.selector.due(frame.timestamp):
            return self.selector.select(frame)  # counts the interval skip
        if not self._slots.acquire(blocking=False):
            self.counters.dropped_busy += 1
            return False
        if self.selector.select(frame):
            return True
        self._slots.release()
        return False

    def _wait_for_slot(self) -> bool:
        """File: wait for a free slot (the decoder waits with it); False when stopping."""
        while not self._slots.acquire(timeout=0.2):
            if self.stop_event.is_set():
                return False
        return True

    def _make_job(self, seq: int, frame: Any) -> _Job:
        ts = float(frame.timestamp)
        if self._window_start is None:
            self._window_start = self._first_ts = ts
        due = ts - self._window_start >= self.config.summary_interval
        if due:
            self._window_start = ts
        self.counters.selected += 1
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            earlier = list(self._pending) if due else []
        return _Job(seq, frame.index, ts, frame.captured_at, frame.image, due, earlier)

    def _submit(self, job: _Job) -> None:
        future: Future = Future()
        with self._lock:
            self._pending.append(future)

        def work() -> None:
            error: BaseException | None = None
            try:
                self._process(job)
            except BaseException as e:  # reported and counted; the loop goes on
                error = e
                self._job_failed(job, e)
            finally:
                # Always resolved, whatever the reporting above raised: the drain, and a later
                # frame's summary, wait on this future.
                self._slots.release()
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

        threading.Thread(target=work, name=f"frame-{job.frame_index}", daemon=True).start()

    def _job_failed(self, job: _Job, error: BaseException) -> None:
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
        """Wait for in-flight jobs: all of them, or up to the shutdown deadline once stopping
        (a signal that comes while waiting starts the deadline then)."""
        with self._lock:
            pending = list(self._pending)
        timeout = self.config.shutdown_timeout_s
        if not _wait_until_stopped(pending, self.stop_event, timeout, bounded=bounded):
            not_done = [f for f in pending if not f.done()]
            log.warning("%s: %d frame(s) still in flight after %.0f s; abandoned",
                        self.label, len(not_done), timeout)

    # -- one frame ----------------------------------------------------------------------

    def _process(self, job: _Job) -> None:
        tracker = self.stages.tracker
        with tracker.create_trace(
            "frame_processing",
            user_id=self.label,
            session_id=self.session_id,
            tags=["live" if self.source.live else "file"],
            metadata={"frame_index": job.frame_index, "video_time_s": round(job.video_time, 3),
                      "source": self.label},
        ) as trace:
            matches = self._recognize(trace.id, job)
            names = sorted({m.name for m in matches if m.name != "unknown"})
            result, vlm, sent = self._caption(trace.id, job, names, matches)
            overall = [scores.overall_from(vlm)]
            self._record_caption(job, matches, names, result, trace.id, sent)
            if job.summary_due:
                llm = self._summarize_window(trace.id, job)
                if llm is not None:
                    overall.append(scores.overall_from(llm))
            tracker.log_score(trace.id, "overall_quality", sum(overall) / len(overall),
                              score_trace=True, comment="mean of the stages' success, latency and quality")

    def _recognize(self, trace_id: str, job: _Job) -> list:
        faces = self.stages.faces
        if faces is None:
            return []
        with self.stages.tracker.create_span(trace_id, "face_recognition") as span:
            matches = faces.recognize(job.image, timestamp=job.video_time)
            span.update(output={
                "names": [m.name for m in matches],
                "distances": [None if m.distance is None else round(m.distance, 3) for m in matches],
                "boxes": [list(m.box) for m in matches],
                "reused": [m.reused for m in matches],  # identity carried from the previous frame
            })
        self.latest_faces = (job.video_time, matches)
        return matches

    def _caption(self, trace_id: str, job: _Job, names: list[str], matches: list) -> tuple[Any, dict, Any]:
        """Caption the frame (faces blurred when asked): the result, its scores, the image sent."""
        tracker, vlm, prompts = self.stages.tracker, self.stages.vlm, self.stages.prompts
        managed = prompts.caption() if prompts is not None else None
        prompt = render_caption(managed, faces_sentence(names)) if managed else vlm.build_prompt(names)
        image, privacy = job.image, {}
        if self.stages.blur_faces:
            # Names were found on the original; the model gets them as text, the faces blurred.
            image, blurred = blur_faces(job.image, [m.box for m in matches])
            privacy = {"blur_faces": True, "faces_blurred": blurred}
        traced = self.stages.trace_frames
        job.caption_input = {"prompt": prompt, "model": vlm.name, "source_spec": getattr(
            self.source, "content_path", None), "prompt_version": managed.version if managed else None}
        with tracker.create_span(trace_id, "vlm_caption", metadata={"faces": names, **privacy}):
            result = vlm.generate_caption(image, prompt)
            # Recorded after the call from the result's own stamps: one TTFT for events and Langfuse.
            gen_id = tracker.record_generation(trace_id, GenerationRecord(
                name="vlm_caption", model=vlm.name, input=prompt,
                metadata={"faces_detected": len(names), "frame_index": job.frame_index, **privacy,
                          **_prompt_metadata(managed), "api_time_ms": round(result.api_time, 1),
                          "image_prep_ms": round(result.image_prep_ms, 1)},
                result=result, prompt=managed.client if managed else None,
                image_jpeg=to_jpeg_bytes(image, *traced) if traced else None,  # after the blur
            ))
            values = scores.vlm_scores(result, worst_ms=self.config.vlm_worst_ms)
            _log_scores(tracker, trace_id, gen_id, values, result)
        return result, values, image

    def _record_caption(self, job: _Job, matches: list, names: list[str], result: Any, trace_id: str,
                        sent: Any = None) -> None:
        events = self.stages.events
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
        record = {
            "source": self.label,
            "frame": job.frame_index,
            "video_time": round(job.video_time, 3),
            "faces": names,
            "unknown_faces": sum(1 for m in matches if m.name == "unknown"),
            "caption": result.caption,
            "ttft_ms": None if result.ttft_ms is None else round(result.ttft_ms, 1),
            "latency_ms": round(result.latency_ms, 1),
            "frame_age_ms": round((result.start_time - job.captured_at) * 1000.0, 1),
            "trace_id": trace_id,
        }
        seconds = self._caption_time(job.video_time)
        with self._lock:
            self.counters.captioned += 1
            self._captions[job.seq] = TimedCaption(seconds, result.caption, tuple(names))
            self._caption_events[job.seq] = record
            self._citable[job.seq] = CitableCaption(seconds, {
                "frame": job.frame_index, "video_time": record["video_time"], "trace_id": trace_id})
            if len(self._caption_events) > MAX_KEPT_CAPTIONS:  # a month on a camera stays bounded
                del self._caption_events[min(self._caption_events)]
        events.emit("caption", **record)
        observed = {**record, **job.caption_input}  # the event's fields plus what the model was asked
        for observe in self.stages.frame_observers:
            try:
                observe(job.image if sent is None else sent, observed, matches)
            except Exception:  # an observer never stops the loop; counted, said once
                self.counters.observer_errors += 1
                if self.counters.observer_errors == 1:
                    log.warning("%s: a frame observer failed (said once)", self.label, exc_info=True)

    def _caption_time(self, ts: float) -> float:
        """Video time for files; seconds since the first selected frame for live sources."""
        return ts - self._first_ts if self.source.live else ts

    # -- summaries --------------------------------------------------------------------

    def _take_window(self, upto_seq: int | None) -> tuple[list[TimedCaption], list[CitableCaption]]:
        """The captions of the next window, and each as a citation names it."""
        with self._lock:
            seqs = sorted(s for s in self._captions
                          if s > self._last_summarized_seq and (upto_seq is None or s <= upto_seq))
            if seqs:
                self._last_summarized_seq = seqs[-1] if upto_seq is None else upto_seq
            return [self._captions.pop(s) for s in seqs], [self._citable.pop(s) for s in seqs]

    def _summarize_window(self, trace_id: str, job: _Job) -> dict | None:
        """Roll the captions up to this frame into the summary (in order: earlier jobs first)."""
        while job.earlier:
            _done, not_done = wait(job.earlier, timeout=0.5)
            if self.stop_event.is_set() and not_done:
                return None  # shutting down: the final summary takes these captions
            job.earlier = list(not_done)
        window, citable = self._take_window(job.seq)
        if not window:
            return None
        return self._summarize(trace_id, window, citable, final=False)[0]

    def _summarize(self, trace_id: str, window: list[TimedCaption], citable: list[CitableCaption], *,
                   final: bool) -> tuple[dict, Any]:
        tracker, llm, prompts = self.stages.tracker, self.stages.summarizer, self.stages.prompts
        managed = prompts.summary() if prompts is not None else None
        system = {"system_prompt": managed.template} if managed else {}
        messages = llm.build_messages(window, self.rolling_summary, final=final, **system)
        with tracker.create_span(trace_id, "llm_summarization",
                                 metadata={"captions": len(window), "final": final}):
            result = llm.generate(messages)
            gen_id = tracker.record_generation(trace_id, GenerationRecord(
                name="llm_summary", model=llm.name, input=messages, result=result,
                metadata={"captions": len(window), "final": final, **_prompt_metadata(managed)},
                prompt=managed.client if managed else None))
            values = scores.llm_scores(result, worst_ms=self.config.llm_worst_ms)
            _log_scores(tracker, trace_id, gen_id, values, result)
            grounded = self._ground(result.summary, citable) if result.success else None
            if grounded is not None and grounded.grounding is not None:
                tracker.log_score(trace_id, scores.GROUNDING_SCORE_NAME, grounded.grounding,
                                  observation_id=gen_id,
                                  comment=f"{grounded.grounded} of {len(grounded.sentences)} sentences cite "
                                          f"a caption; {grounded.dropped} citations dropped")
        record = {
            "source": self.label,
            # as the caption events give times: video seconds, or the wall clock of a live source
            "window": [citable[0].ref["video_time"], citable[-1].ref["video_time"]],
            "captions_used": len(window),
            "final": final,
            "trace_id": trace_id,
        }
        if grounded is not None:
            self.stages.llm_outage.succeeded()
            self.counters.summaries += 1
            self.counters.citations_dropped += grounded.dropped
            self.rolling_summary = grounded.text  # the next prompt sees only valid citations
            record.update(text=grounded.text, ttft_ms=_round(result.ttft_ms),
                          latency_ms=round(result.latency_ms, 1),
                          grounding=None if grounded.grounding is None else round(grounded.grounding, 3),
                          citations_dropped=grounded.dropped,
                          sentences=[sentence.to_json() for sentence in grounded.sentences])
            self._summary_sentences = record["sentences"]
            self._summaries.append(record)
            del self._summaries[:-MAX_KEPT_SUMMARIES]
            self.stages.events.emit("summary", **record)
        else:
            self.stages.llm_outage.failed(f"{result.error_kind}: {result.error}")
            self.counters.summary_failures += 1
            self.stages.events.emit("error", stage="llm", kind=result.error_kind, message=result.error,
                                    **{k: record[k] for k in ("source", "window", "trace_id")})
        return values, result

    def _ground(self, text: str, window: list[CitableCaption]) -> GroundedSummary:
        """The summary's citations checked against what the model was given: the captions of its
        window and those the summary so far cites; what it cites is carried to the next one."""
        pool = self._rolling_cites + window
        grounded = ground_summary(text, pool)
        cited = [ref for sentence in grounded.sentences for ref in sentence.cites]
        self._rolling_cites = [c for c in pool if c.ref in cited]
        return grounded

    def _final_summary(self, *, bounded: bool) -> str:
        """Summarize what the rolling summary has not seen yet; bounded when stopping."""
        window, citable = self._take_window(None)
        if not window:
            return self.rolling_summary or ""
        outcome: list = []
        timeout = self.config.shutdown_timeout_s
        try:
            finished = _run_bounded(lambda: outcome.append(self._final_trace(window, citable)), timeout,
                                    self.stop_event, bounded=bounded)
        except Exception:
            if not bounded:
                raise
            # Stopping: the document with its captions matters more than this error.
            log.warning("%s: final summary failed; writing the captions instead", self.label, exc_info=True)
            finished = True
        if not finished:
            log.warning("%s: final summary did not finish within %.0f s; writing the captions instead",
                        self.label, timeout)
        if outcome and outcome[0].success:
            return self.rolling_summary or ""  # the final summary, its invalid citations dropped
        return _fallback_summary(self.rolling_summary, window)

    def _final_trace(self, window: list[TimedCaption], citable: list[CitableCaption]) -> Any:
        tracker = self.stages.tracker
        with tracker.create_trace("video_summary", user_id=self.label, session_id=self.session_id,
                                  tags=["final"], metadata={"source": self.label,
                                                            "captions": len(window)}) as trace:
            values, result = self._summarize(trace.id, window, citable, final=True)
            tracker.log_score(trace.id, "overall_quality", scores.overall_from(values), score_trace=True,
                              comment="final summary: success, latency and quality")
        return result

    def _document(self, summary: str, interrupted: bool) -> SummaryDocument:
        with self._lock:
            captions = [self._caption_events[s] for s in sorted(self._caption_events)]
        return SummaryDocument(
            source=getattr(self.source, "spec", self.label),
            label=self.label,
            summary=summary,
            captions=captions,
            summaries=list(self._summaries),
            sentences=self._summary_sentences if summary and summary == self.rolling_summary else None,
            stats=self.stats(),
            interrupted=interrupted,
        )

    def stats(self) -> dict:
        """Counters of this source plus the selector's and the source's own."""
        c = self.counters
        return {
            "frames_read": c.frames_read,
            "selected": c.selected,
            "captioned": c.captioned,
            "caption_failures": c.caption_failures,
            "dropped_busy": c.dropped_busy,
            "dropped_replaced": getattr(self.source, "frames_dropped", 0),
            **{k: v for k, v in self.selector.counts().items() if k != "selected"},  # skips
            "summaries": c.summaries,
            "summary_failures": c.summary_failures,
            "citations_dropped": c.citations_dropped,
            "job_errors": c.job_errors,
            "observer_errors": c.observer_errors,
        }


def _prompt_metadata(managed: Any) -> dict:
    """Which prompt a generation used, for the trace (Langfuse also links a fetched one)."""
    if managed is None:
        return {}
    return {"prompt": managed.name, "prompt_source": managed.source, "prompt_version": managed.version}


def _log_scores(tracker: Tracker, trace_id: str, observation_id: str, values: dict, result: Any) -> None:
    comment = "ok" if result.success else f"failed: {result.error_kind}"
    for name, value in values.items():
        tracker.log_score(trace_id, name, value, observation_id=observation_id, comment=comment)


def _fallback_summary(previous: str | None, window: list[TimedCaption]) -> str:
    """The rolling summary plus the captions it has not seen, when no model summary is possible."""
    lines = [previous] if previous else []
    decimals = stamp_decimals(c.video_time for c in window)
    lines += [f"[{format_video_time(c.video_time, decimals)}] {c.text}" for c in window]
    return "\n".join(lines)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _wait_until_stopped(futures: list[Future], stop: threading.Event, timeout: float,
                        *, bounded: bool) -> bool:
    """Wait for the futures: without end until `stop` is set (at once when `bounded`), then at
    most `timeout` s more. True when all finished."""
    deadline = time.monotonic() + timeout if bounded else None
    pending = [f for f in futures if not f.done()]
    while pending:
        if deadline is None and stop.is_set():
            deadline = time.monotonic() + timeout
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        _done, not_done = wait(pending, timeout=_POLL_S if left is None else min(left, _POLL_S))
        pending = list(not_done)
    return True


def _run_bounded(fn: Callable[[], None], timeout: float, stop: threading.Event, *, bounded: bool) -> bool:
    """Run fn on a daemon thread and wait as _wait_until_stopped does; True if it finished (its
    error, if any, raised here as if it had run in this thread)."""
    done: Future = Future()

    def work() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the waiting thread
            done.set_exception(e)
        else:
            done.set_result(None)

    threading.Thread(target=work, name="final-summary", daemon=True).start()
    if not _wait_until_stopped([done], stop, timeout, bounded=bounded):
        return False
    done.result()
    return True
