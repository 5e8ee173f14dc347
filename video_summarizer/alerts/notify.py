"""Notify first, describe after: the event listener that makes notifications from motion and captions.

On a ``motion`` start event a notification goes out at once (``event_type: motion``: source,
time, the moving area). When the next caption of that source comes (a frame from the motion's
start on), the rules are checked on it and the same notification (same ``id``) goes again,
``event_type: described``, with the caption and the matched rules. A caption that matches a
rule with no motion notification waiting is a notification of its own (``event_type: rule``).

It runs as an ``EventWriter`` listener in the thread that emits the caption, inside the frame's
trace, so each rule check is a span of that trace with an ``alert_match`` score (1 matched, 0
not; the rule's name and why in the comment). Sending is the senders' (alerts.delivery): the
listener only queues, so a target that is down never holds up a frame.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from datetime import datetime
from typing import Any, Callable, Sequence

from video_summarizer.alerts.delivery import Sender, status_counts
from video_summarizer.backends import FrameObserver
from video_summarizer.alerts.judge import Judge
from video_summarizer.alerts.rules import Check, Cooldowns, Rule, check
from video_summarizer.tracing.records import SpanRecord

DESCRIBE_WAIT_S = 120.0  # a motion notification not described by then is left as it is
SNAPSHOT_MAX_SIDE = 640
SNAPSHOT_QUALITY = 80


class Notifier:
    """Motion and caption events in; notifications to the senders, alert events and spans out."""

    def __init__(self, rules: Sequence[Rule], senders: Sequence[Sender], events: Any, tracker: Any, *,
                 judge: Judge | None = None, notify_first: bool = True, snapshots: bool = False,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = datetime.now) -> None:
        self.rules, self.senders, self.events, self.tracker = list(rules), list(senders), events, tracker
        self.judge, self.notify_first, self.snapshots = judge, notify_first, snapshots
        self._clock, self._now = clock, now
        self.cooldowns = Cooldowns(clock)
        self._open: dict[str, tuple[str, float, float]] = {}  # source -> (id, video time, opened at)
        self._notified: dict[str, str] = {}  # source -> trace id of the last described frame
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()  # (rule or "motion", status)
        self.recent: deque[dict] = deque(maxlen=50)
        self.notifications = self.held_back = 0

    def listen(self, event_type: str, record: dict) -> None:
        """The EventWriter listener."""
        if event_type == "motion" and record.get("state") == "start" and self.notify_first:
            self._motion(record)
        elif event_type == "caption":
            self._caption(record)

    def _motion(self, record: dict) -> None:
        source, now = str(record.get("source", "")), self._clock()
        with self._lock:
            waiting = self._open.get(source)
            if waiting is not None and now - waiting[2] < DESCRIBE_WAIT_S:
                return  # the same moment: its notification is still waiting for the caption
            nid = uuid.uuid4().hex
            self._open[source] = (nid, float(record.get("video_time") or 0.0), now)
        self._send({"id": nid, "event_type": "motion", "source": source, "time": record.get("time"),
                    "video_time": record.get("video_time"), "frame": record.get("frame"),
                    "area": record.get("area"), "box": record.get("box"), "caption": None, "rules": []})

    def _caption(self, record: dict) -> None:
        source = str(record.get("source", ""))
        checks = self.check_rules(record)
        matched = [c for c in checks if c.matched and c.reason != "cooldown"]
        video_time = float(record.get("video_time") or 0.0)
        with self._lock:
            waiting = self._open.get(source)
            if waiting is not None and video_time + 1e-6 >= waiting[1]:
                del self._open[source]
            else:
                waiting = None
            if waiting is None and not matched:
                return
            self._notified[source] = str(record.get("trace_id"))
        self._send({"id": waiting[0] if waiting else uuid.uuid4().hex,
                    "event_type": "described" if waiting else "rule", "source": source,
                    "time": record.get("time"), "video_time": record.get("video_time"),
                    "frame": record.get("frame"), "caption": record.get("caption"),
                    "faces": record.get("faces") or [], "trace_id": record.get("trace_id"),
                    "rules": [{"name": c.rule.name, "condition": c.rule.condition, "confidence": c.confidence,
                               "reason": c.reason} for c in matched]})

    def check_rules(self, record: dict) -> list[Check]:
        """Every rule watching the source, checked, cooled down, each traced as a span with its score."""
        source, trace_id = str(record.get("source", "")), record.get("trace_id")
        judged = self.judge.take(str(record.get("caption") or "")) if self.judge else None
        now, out = self._now(), []
        for rule in self.rules:
            if not (rule.watches(source) and rule.active(now)):
                continue
            start = time.time()
            result = check(rule, record, judged)
            if result.matched and not self.cooldowns.take(rule, source):
                result = Check(rule, True, result.confidence, "cooldown")
                self.held_back += 1
            self._trace(trace_id, result, start)
            out.append(result)
        return out

    def _trace(self, trace_id: Any, result: Check, start: float) -> None:
        rule = result.rule
        meta = {"rule": rule.name, "kind": rule.kind, "matched": result.matched, "confidence": result.confidence,
                "held_back": result.reason == "cooldown"}
        recorded = self.tracker.record_span(trace_id, SpanRecord(
            "alert_check", start, time.time(), metadata=meta, input={"condition": rule.condition},
            output={"matched": result.matched, "reason": result.reason}))
        self.tracker.log_score(trace_id, "alert_match", 1.0 if result.matched else 0.0, data_type="NUMERIC",
                               comment=f"rule {rule.name}: {result.reason}", observation_id=recorded.span_id)

    def _send(self, message: dict) -> None:
        with self._lock:
            self.notifications += 1
        for sender in self.senders:
            sender.put(dict(message))
        if not self.senders:
            self.outcome(message, "", "not_sent", 0, "no --notify target")

    def outcome(self, message: dict, target: str, status: str, attempts: int, reason: str | None) -> None:
        """A sender's word on one message: an `alert` event, counted by rule and status."""
        if message.get("kind") == "snapshot":
            return
        names = [r["name"] for r in message.get("rules") or ()]
        record = {"id": message.get("id"), "stage": message.get("event_type"), "source": message.get("source"),
                  "rules": names, "caption": message.get("caption"), "video_time": message.get("video_time"),
                  "trace_id": message.get("trace_id"), "target": target, "status": status,
                  "attempts": attempts, "reason": reason}
        with self._lock:
            for name in names or ["motion" if message.get("event_type") == "motion" else "described"]:
                self.counts[(name, status)] += 1
            self.recent.append(record)
        self.events.emit("alert", **record)

    def snapshot(self, image: Any, record: dict, matches: list) -> None:
        """A frame observer: the captioned frame of a notification, as a JPEG for the MQTT image entity."""
        source = str(record.get("source", ""))
        if not self.snapshots or not self.senders:
            return
        with self._lock:
            if self._notified.get(source) != str(record.get("trace_id")):
                return
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, SNAPSHOT_MAX_SIDE / max(h, w))
        small = cv2.resize(image, (int(w * scale), int(h * scale))) if scale < 1.0 else image
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
        if ok:
            for sender in self.senders:
                sender.put({"kind": "snapshot", "source": source, "jpeg": jpeg.tobytes()})

    def close(self, deadline_s: float = 2.0) -> None:
        """Send what is waiting within the deadline (shared by the targets), then stop the senders."""
        end = time.monotonic() + deadline_s
        for sender in self.senders:
            sender.close(max(0.0, end - time.monotonic()))

    def format_stats(self) -> str | None:
        """The exit report's line (None: nothing was notified)."""
        if not self.notifications and not self.held_back:
            return None
        c = status_counts(self.senders)
        judge = "" if self.judge is None else f"; judge answered {self.judge.answered} of {self.judge.asked} captions"
        return (f"Alerts: {self.notifications} notification(s), {c['delivered']} delivered, {c['waiting']} waiting, "
                f"{c['dropped']} dropped, {c['rejected']} rejected; {self.held_back} match(es) held back by "
                f"cooldown{judge}")


class AlertObserver(FrameObserver):
    """The notifier as a frame observer: snapshots of notified frames, and its exit report line."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def __call__(self, image: Any, record: dict, matches: list) -> None:
        """A captioned frame (its JPEG goes out when it was notified and --notify-snapshots is on)."""
        self.notifier.snapshot(image, record, matches)

    def format_stats(self) -> str | None:
        """The notifier's exit report line."""
        return self.notifier.format_stats()
