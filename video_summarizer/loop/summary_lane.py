"""One source's summaries on a lane of their own: a caption never waits on a summary.

A frame whose caption makes a summary window due hands the lane a request and goes on; the
lane's one thread writes the summaries one after the other. At most one request waits: when
the summary model is slower than --summary-interval, a newer request replaces the waiting one
and, since a summary takes every caption not yet summarized up to its frame, the next summary
covers everything since the last one (the windows merge: said once, counted as
``summaries_merged``). At the end the lane is drained (bounded by the shutdown deadline when
stopping, when nothing new is started) and the final summary takes whatever is left.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from video_summarizer.citations import CitableCaption
from video_summarizer.loop.caption_store import SummaryLog
from video_summarizer.loop.emit import summary_event
from video_summarizer.loop.frame_jobs import RunCounters, wait_until_stopped
from video_summarizer.results import SummaryOutcome, TimedCaption

log = logging.getLogger("video_summarizer.pipeline")
_POLL_S = 0.2  # how often a wait for earlier frames looks at the stop event


@dataclass
class SummaryRequest:
    """A window made due by one frame's caption: summarize every caption up to that frame."""

    upto_seq: int  # the due frame's place in the source's selected frames
    trace: Any  # the due frame's trace (tracing.frame_trace.FrameTrace, held): the summary's span goes there
    earlier: list[Future] = field(default_factory=list)  # frames before it still being captioned


class SummaryLane:
    """A worker thread writing one source's summaries; one request at most waits, merged with the next."""

    def __init__(self, label: str, write: Callable[[SummaryRequest], None], dropped: Callable[[SummaryRequest], None],
                 stop_event: threading.Event, counters: RunCounters) -> None:
        self.label = label
        self._write = write  # writes the window's summary (SourceRun)
        self._dropped = dropped  # a request that will not be written: its trace is finished without it
        self._stop = stop_event
        self._counters = counters
        self._cond = threading.Condition()
        self._waiting: SummaryRequest | None = None
        self._closing = False
        self._done: Future = Future()
        self._thread: threading.Thread | None = None

    def request(self, request: SummaryRequest) -> None:
        """Queue a window's summary; a request already waiting is merged into this newer one."""
        with self._cond:
            late = self._closing  # a frame abandoned at the drain finished late: the final summary covers it
            replaced = request if late else self._waiting
            if not late:
                self._waiting = request
                self._counters.summaries_merged += replaced is not None
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"summary-{self.label}", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
            first_merge = not late and replaced is not None and self._counters.summaries_merged == 1
        if first_merge:
            log.info("%s: the summary model is slower than --summary-interval: each summary now covers every "
                     "caption since the last one (windows merged; said once, counted as summaries_merged)",
                     self.label)
        if replaced is not None:
            self._dropped(replaced)

    def _next(self) -> SummaryRequest | None:
        """The waiting request, once there is one; None when closing with nothing left (or stopping)."""
        with self._cond:
            while self._waiting is None and not self._closing:
                self._cond.wait()
            request, self._waiting = self._waiting, None
        if request is not None and self._stop.is_set():  # stopping: the final summary takes its captions
            self._dropped(request)
            return None
        return request

    def _run(self) -> None:
        try:
            while (request := self._next()) is not None:
                try:
                    self._write(request)
                except Exception:  # noqa: BLE001 - the lane goes on; the next summary covers this window
                    log.warning("%s: a summary failed; the next one covers its captions", self.label, exc_info=True)
        finally:
            self._done.set_result(None)

    def close(self, timeout: float, *, bounded: bool) -> bool:
        """No more requests: write what waits and wait for the lane (as frame_jobs.wait_until_stopped
        waits); True when it finished. When stopping nothing new starts: the final summary covers it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            started = self._thread is not None
        if not started:
            return True
        return wait_until_stopped([self._done], self._stop, timeout, bounded=bounded)


class SummaryWriter:
    """Writes one source's summaries: the prompt (the window and the summary so far), the call, its
    citations checked, the trace and the event. The lane and the final summary call it, one at a time."""

    def __init__(self, label: str, stages: Any, summaries: SummaryLog, counters: RunCounters) -> None:
        self.label = label
        self.stages = stages  # pipeline.Stages (the loop package does not import the pipeline)
        self.summaries = summaries
        self.counters = counters

    def write(self, trace: Any, window: list[TimedCaption], citable: list[CitableCaption], *,
              final: bool = False) -> SummaryOutcome | None:
        """Roll the window's captions into the summary, trace it (on that trace) and emit it."""
        if not window:
            return None
        summary = self._call(window, citable, final=final)
        trace.summary(summary)
        self._emit(summary, citable, trace.trace_id)
        return summary

    def _call(self, window: list[TimedCaption], citable: list[CitableCaption], *, final: bool) -> SummaryOutcome:
        llm, prompts = self.stages.summarizer, self.stages.prompts
        managed = prompts.summary() if prompts is not None else None
        system = {"system_prompt": managed.template} if managed else {}
        messages = llm.build_messages(window, self.summaries.rolling, final=final, **system)
        start = time.time()
        result = llm.generate(messages)
        end = time.time()
        grounded = self.summaries.ground(result.summary, citable) if result.success else None
        return SummaryOutcome(result, messages, managed, tuple(window), final, grounded, start, end, model=llm.name)

    def _emit(self, summary: SummaryOutcome, citable: list[CitableCaption], trace_id: str) -> None:
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


def wait_earlier(earlier: list[Future], stop: threading.Event) -> bool:
    """Wait for the frames before a due one (their captions belong in its window); False when stopping first."""
    while earlier:
        _done, not_done = wait(earlier, timeout=_POLL_S)
        if stop.is_set() and not_done:
            return False
        earlier = list(not_done)
    return True
