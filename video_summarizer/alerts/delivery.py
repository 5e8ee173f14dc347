"""One sender thread per notification target: an ordered, bounded queue retried until it goes.

The frame loop only appends to the queue (never waits); the thread sends the oldest message,
and on a failure waits (0.5 s doubling to a minute, or the target's Retry-After, up to 10 minutes)
and sends the same message again, so messages arrive in the order they were made and each is
taken off the queue only once the target acknowledged it (an MQTT PUBACK, a 2xx): none is lost
or sent twice across an outage. A full queue drops its oldest waiting message (counted). A
target that is down is said once, then every interval while it lasts (outages.OutageMonitor).

Why our own queue: paho's is unbounded and says nothing per message, httpx retries no status
code, and the notifications of both targets need one order, one bound and one outcome each.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

from video_summarizer import defaults as D
from video_summarizer.outages import OutageMonitor

log = logging.getLogger("video_summarizer.alerts")

FIRST_BACKOFF_S = 0.5
RETRY_AFTER_MAX_S = D.OUTAGE_REPORT_EVERY_S  # a Retry-After of days is a misconfiguration, not a plan


class DeliveryError(Exception):
    """A message a target did not take: retried (after retry_after when given), or given up if permanent."""

    def __init__(self, reason: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.retry_after, self.permanent = retry_after, permanent


class Target(Protocol):
    """Where notifications go: an MQTT broker, a webhook."""

    shown: str  # the URL as it may be printed (no password)

    def start(self) -> None:
        """Connect (in the background); nothing is sent yet."""

    def send(self, message: dict) -> None:
        """Deliver one message, or raise DeliveryError."""

    def close(self) -> None:
        """Disconnect (saying offline where the target has a presence)."""


Outcome = Callable[[dict, str, str, int, "str | None"], None]  # message, target, status, attempts, reason


class Sender:
    """A target's queue and the thread that empties it in order."""

    def __init__(self, target: Target, on_outcome: Outcome, *, max_queued: int = D.NOTIFY_QUEUE_MAX,
                 backoff_max_s: float = D.NOTIFY_BACKOFF_MAX_S) -> None:
        self.target, self.on_outcome = target, on_outcome
        self.max_queued, self.backoff_max_s = max_queued, backoff_max_s
        self._queue: deque[dict] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._sending = False
        self.delivered = self.dropped = self.rejected = self.outcome_errors = 0
        shown = target.shown.replace("{", "{{").replace("}", "}}")
        self.outage = OutageMonitor(
            log, failing=f"Notify: {shown} failing ({{reason}}); notifications are kept and sent in order "
                         "when it answers, said again every {every} while it lasts",
            still=f"Notify: {shown} still failing after {{since}} ({{reason}}); {{progress}} waiting",
            back=f"Notify: {shown} answers again after {{since}}; the waiting notifications go now",
            progress=lambda: f"{self.queued()} notification(s)")
        self._thread = threading.Thread(target=self._run, name=f"notify-{type(target).__name__}", daemon=True)

    def start(self) -> "Sender":
        """Start the target and the thread."""
        self.target.start()
        self._thread.start()
        return self

    def queued(self) -> int:
        """Messages waiting (the one being sent included)."""
        with self._cv:
            return len(self._queue)

    def put(self, message: dict) -> None:
        """Queue a message (never blocks); a full queue drops its oldest waiting one."""
        dropped = None
        with self._cv:
            if len(self._queue) >= self.max_queued:
                # the head may be on the wire: the oldest that is not
                index = 1 if self._sending and len(self._queue) > 1 else 0
                dropped = self._queue[index]
                del self._queue[index]
                self.dropped += 1
            self._queue.append(message)
            self._cv.notify()
        if dropped is not None:
            self._tell(dropped, "dropped", 0, f"more than {self.max_queued} waiting")

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                message, self._sending = self._queue[0], True
            if not self._deliver(message):
                return  # closing while the target fails: what is left is close()'s to report

    def _deliver(self, message: dict) -> bool:
        """Send one message until the target takes it, refuses it for good, or the sender closes (False)."""
        attempts, wait = 0, FIRST_BACKOFF_S
        while True:
            attempts += 1
            try:
                self.target.send(message)
                status, reason = "delivered", None
                self.outage.succeeded()
                break
            except DeliveryError as e:
                if e.permanent:
                    status, reason = "rejected", str(e)
                    break
                self.outage.failed(str(e))
                # the target's own Retry-After is honoured (up to the outage report interval), else the backoff
                pause = min(e.retry_after, RETRY_AFTER_MAX_S) if e.retry_after is not None else wait
                wait = min(wait * 2, self.backoff_max_s)
                with self._cv:
                    self._cv.notify_all()  # a close() waiting for the queue need not wait for an outage
                    if self._closing or self._cv.wait_for(lambda: self._closing, timeout=pause):
                        self._sending = False
                        return False  # left in the queue: close() reports it undelivered
        with self._cv:
            if self._queue and self._queue[0] is message:
                self._queue.popleft()
            self._sending = False
            self._cv.notify_all()
            if status == "delivered":
                self.delivered += 1
            else:
                self.rejected += 1
        self._tell(message, status, attempts, reason)
        return True

    def _tell(self, message: dict, status: str, attempts: int, reason: str | None) -> None:
        """The outcome to the notifier; its failure never stops the thread (said once)."""
        try:
            self.on_outcome(message, self.target.shown, status, attempts, reason)
        except Exception:  # noqa: BLE001 - the queue must go on
            self.outcome_errors += 1
            if self.outcome_errors == 1:
                log.warning("Notify: reporting an outcome failed (said once)", exc_info=True)

    def close(self, deadline_s: float = 2.0) -> int:
        """Send what is queued within the deadline, then stop; the messages left are reported undelivered."""
        end = time.monotonic() + deadline_s
        with self._cv:
            self._cv.wait_for(lambda: not self._queue or self.outage.failing, timeout=max(0.0, deadline_s))
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout=max(0.1, end - time.monotonic()))
        with self._cv:
            left, self._queue = list(self._queue), deque()
        for message in left:
            self._tell(message, "undelivered", 0, "the run ended first")
        self.target.close()
        return len(left)


def status_counts(senders: list[Sender]) -> dict[str, Any]:
    """Delivered, dropped, rejected and waiting across the targets (for the exit report)."""
    return {"delivered": sum(s.delivered for s in senders), "dropped": sum(s.dropped for s in senders),
            "rejected": sum(s.rejected for s in senders), "waiting": sum(s.queued() for s in senders)}
