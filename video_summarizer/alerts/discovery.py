"""Home Assistant MQTT discovery: the configs that make each rule and source an entity, and the topics.

Per source: a ``binary_sensor`` per rule that watches it (and ``motion`` with --notify-first),
turned on by a match and off by Home Assistant after the rule's cooldown (``off_delay``); an
``event`` entity whose events are the notifications (the caption and rules as attributes); an
``image`` entity showing the snapshot of the last notified frame. All share the availability
topic, which the broker sets to offline by the last will when the run goes away. The configs
are retained, so Home Assistant finds them whenever it (re)starts.
"""
from __future__ import annotations

import json
import re
from typing import Iterable

from video_summarizer import defaults as D

EVENT_TYPES = ["motion", "described", "rule"]
MIN_OFF_DELAY_S = 10  # a sensor stays on at least this long, so a 0 s cooldown still shows


def node_id(prefix: str) -> str:
    """The Home Assistant node id of a topic prefix (letters, digits, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix) or "video_summarizer"


def _object(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", source)


class Topics:
    """The topics under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip("/")

    @property
    def availability(self) -> str:
        """online / offline (retained; offline is the last will)."""
        return f"{self.prefix}/status"

    def event(self, source: str) -> str:
        """A source's notifications, first and update alike (JSON with event_type)."""
        return f"{self.prefix}/{source}/event"

    def state(self, source: str, rule: str) -> str:
        """ON when the rule (or motion) fires on the source."""
        return f"{self.prefix}/{source}/{rule}/state"

    def rule_event(self, source: str, rule: str) -> str:
        """The match of the rule on the source (JSON)."""
        return f"{self.prefix}/{source}/{rule}/event"

    def snapshot(self, source: str) -> str:
        """The JPEG of the source's last notified frame (retained)."""
        return f"{self.prefix}/{source}/snapshot"


def configs(topics: Topics, source: str, rules: Iterable[tuple[str, float]], *, motion: bool,
            discovery_prefix: str = D.HA_DISCOVERY_PREFIX) -> list[tuple[str, str]]:
    """(topic, JSON payload) of the discovery configs of one source; rules: (name, cooldown s)."""
    node, obj = node_id(topics.prefix), _object(source)
    device = {"identifiers": [f"{node}_{obj}"], "name": f"Video summarizer {source}",
              "manufacturer": "real-time-summarizer", "model": "watch rules"}
    common = {"availability_topic": topics.availability, "device": device}
    out = []
    sensors = ([("motion", D.ALERT_COOLDOWN_S)] if motion else []) + list(rules)
    for rule, cooldown in sensors:
        payload = {**common, "name": rule, "unique_id": f"{node}_{obj}_{rule}",
                   "state_topic": topics.state(source, rule), "payload_on": "ON", "payload_off": "OFF",
                   "off_delay": int(max(MIN_OFF_DELAY_S, cooldown)),
                   "json_attributes_topic": topics.rule_event(source, rule)}
        if rule == "motion":
            payload["device_class"] = "motion"
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{obj}_{rule}/config", payload))
    out.append((f"{discovery_prefix}/event/{node}/{obj}_notification/config",
                {**common, "name": "notification", "unique_id": f"{node}_{obj}_notification",
                 "state_topic": topics.event(source), "event_types": EVENT_TYPES}))
    out.append((f"{discovery_prefix}/image/{node}/{obj}_snapshot/config",
                {**common, "name": "snapshot", "unique_id": f"{node}_{obj}_snapshot",
                 "image_topic": topics.snapshot(source), "content_type": "image/jpeg"}))
    return [(topic, json.dumps(payload, sort_keys=True)) for topic, payload in out]
