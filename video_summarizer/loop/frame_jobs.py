"""A source's frame jobs: the slot budget, one daemon thread a job, the futures waited on.

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

from video_summarizer.results import MotionReading

log = logging.getLogger("video_summarizer.pipeline")
_POLL_S = 0.2  # how often a wait without end looks at the stop event


@dataclass
class Job:
    """One selected frame on its way through the stages."""

    seq: int
    frame_index: int
    video_time: float  # seconds of video (files) or epoch seconds (live)
    captured_at: float
    image: Any
    summary_due: bool
    earlier: list[Future] = field(default_factory=list)
    caption_input: dict = field(default_factory=dict)  # prompt, model, version: for frame observers
    motion: MotionReading | None = None  # the motion detector's reading of this frame (None: motion off)
    clip: Any = None  # results.Clip: the frames the caption covers (None: the key frame alone)


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
    summaries_merged: int = 0  # summary requests folded into the next (the model slower than the interval)
    summary_failures: int = 0
    citations_dropped: int = 0  # summary citations that matched no caption
    observer_errors: int = 0  # frame observers (dataset, page) that raised


class FrameJobs:
    """Runs each frame's job on its own thread within the slot budget; the drain waits for them."""

    def __init__(self, slots: threading.Semaphore, stop_event: threading.Event) -> None:
        self.slots = slots  # the run's caption-call budget, shared by its sources
        self.stop_event = stop_event
        self._lock = threading.Lock()
        self._pending: list[Future] = []

    def try_slot(self) -> bool:
        """Live: a free slot now, or none (the frame is dropped)."""
        return self.slots.acquire(blocking=False)

    def wait_for_slot(self) -> bool:
        """File: wait for a free slot (the decoder waits with it); False when stopping."""
        while not self.slots.acquire(timeout=_POLL_S):
            if self.stop_event.is_set():
                return False
        return True

    def pending(self) -> list[Future]:
        """The jobs still running (a summary waits for those before its frame)."""
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            return list(self._pending)

    def submit(self, name: str, work: Callable[[], None], on_error: Callable[[BaseException], None]) -> None:
        """Run work on a daemon thread holding the slot taken for it; its error goes to on_error."""
        future: Future = Future()
        with self._lock:
            self._pending.append(future)

        def run() -> None:
            error: BaseException | None = None
            try:
                work()
            except BaseException as e:  # reported and counted; the loop goes on
                error = e
                on_error(e)
            finally:
                # Always resolved, whatever the reporting above raised: the drain, and a later
                # frame's summary, wait on this future.
                self.slots.release()
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

        threading.Thread(target=run, name=name, daemon=True).start()

    def drain(self, timeout: float, *, bounded: bool) -> int:
        """Wait for in-flight jobs: all of them, or up to `timeout` once stopping; how many are left."""
        with self._lock:
            pending = list(self._pending)
        if wait_until_stopped(pending, self.stop_event, timeout, bounded=bounded):
            return 0
        return sum(1 for f in pending if not f.done())


def select_frame(selector: Any, frame: Any, jobs: FrameJobs, *, live: bool) -> bool | None:
    """Whether the loop takes this frame. A file waits for a free slot; a live source's frame that
    the selector wants (due, or a motion start) takes a free slot now or is dropped: None, and the
    next newest frame will do (a motion start stays wanted until a slot is free)."""
    if not live:
        return selector.select(frame) and jobs.wait_for_slot()
    if not selector.wants(frame):
        return selector.select(frame)  # counts the interval skip
    if not jobs.try_slot():
        return None
    if selector.select(frame):
        return True
    jobs.slots.release()
    return False


def wait_until_stopped(futures: list[Future], stop: threading.Event, timeout: float, *, bounded: bool) -> bool:
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


def run_bounded(fn: Callable[[], None], timeout: float, stop: threading.Event, *, bounded: bool) -> bool:
    """Run fn on a daemon thread and wait as wait_until_stopped does; True if it finished (its
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
    if not wait_until_stopped([done], stop, timeout, bounded=bounded):
        return False
    done.result()
    return True


def source_stats(c: RunCounters, selector: Any, source: Any) -> dict:
    """A source's counters plus its selector's skips and the frames the source itself replaced."""
    return {
        "frames_read": c.frames_read,
        "selected": c.selected,
        "captioned": c.captioned,
        "caption_failures": c.caption_failures,
        "dropped_busy": c.dropped_busy,
        "dropped_replaced": getattr(source, "frames_dropped", 0),
        **{k: v for k, v in selector.counts().items() if k != "selected"},  # skips
        "summaries": c.summaries,
        "summaries_merged": c.summaries_merged,
        "summary_failures": c.summary_failures,
        "citations_dropped": c.citations_dropped,
        "job_errors": c.job_errors,
        "observer_errors": c.observer_errors,
    }


def run_final(fn: Callable[[], None], label: str, timeout: float, stop: threading.Event, *, bounded: bool) -> None:
    """Run the final summary as run_bounded does; when stopping, its error or its time-out is a warning
    (the document with its captions matters more), otherwise its error is raised."""
    try:
        finished = run_bounded(fn, timeout, stop, bounded=bounded)
    except Exception:
        if not bounded:
            raise
        log.warning("%s: final summary failed; writing the captions instead", label, exc_info=True)
        return
    if not finished:
        log.warning("%s: final summary did not finish within %.0f s; writing the captions instead", label, timeout)
