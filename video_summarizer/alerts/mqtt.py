"""The MQTT target (paho-mqtt, callback API v2): notifications as topics, Home Assistant discovery.

``--notify mqtt://[user:pass@]host[:port][/prefix]`` (``mqtts://`` for TLS). Messages go with
QoS 1 and each counts as delivered at the broker's PUBACK. A message handed to paho whose
PUBACK did not come before a disconnect is resent by paho on reconnect, so a retry waits for it
instead of publishing it again; while disconnected nothing is handed to paho (the sender keeps it).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from video_summarizer import defaults as D
from video_summarizer.alerts.delivery import DeliveryError
from video_summarizer.alerts.discovery import Topics, configs
from video_summarizer.errors import InputError
from video_summarizer.redact import redact_url

OPTION = "--notify"
PROBE_TIMEOUT_S = 5.0
TOPIC_LEVEL_FORBIDDEN = set("+#\0")


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed mqtt:// URL (the password never printed: ``shown``)."""

    host: str
    port: int
    tls: bool
    prefix: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    shown: str = ""


def parse_broker_url(url: str) -> BrokerUrl:
    """mqtt(s)://[user:pass@]host[:port][/prefix]; anything else is an InputError naming --notify."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InputError(f"{shown}: {e}", option=OPTION) from None
    if not parts.hostname:
        raise InputError(f"{shown}: give the broker's host (mqtt://host:1883)", option=OPTION)
    if parts.query or parts.fragment:
        raise InputError(f"{shown}: an MQTT URL takes no ?query or #fragment", option=OPTION)
    prefix = unquote(parts.path).strip("/") or D.MQTT_PREFIX
    if set(prefix) & TOPIC_LEVEL_FORBIDDEN:
        raise InputError(f"{shown}: the topic prefix may not contain + or #", option=OPTION)
    tls = parts.scheme == "mqtts"
    return BrokerUrl(parts.hostname, port or (8883 if tls else 1883), tls, prefix,
                     unquote(parts.username) if parts.username else None,
                     unquote(parts.password) if parts.password else None, shown)


def _client(url: BrokerUrl, client_id: str = "") -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()
    return client


def probe_broker(url: BrokerUrl, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Connect, wait for the broker's answer, disconnect: an unreachable or refusing broker is an InputError."""
    client = _client(url)
    answer: list[Any] = []
    client.on_connect = lambda c, u, flags, rc, props: answer.append(rc)
    client.connect_timeout = timeout_s
    try:
        client.connect(url.host, url.port, keepalive=int(max(5, timeout_s)))
        end = time.monotonic() + timeout_s
        while not answer and time.monotonic() < end:
            client.loop(timeout=0.1)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot reach the MQTT broker at {url.shown}: {getattr(e, 'strerror', None) or e}",
                         option=OPTION) from None
    finally:
        client.disconnect()
    if not answer:
        raise InputError(f"the MQTT broker at {url.shown} did not answer in {timeout_s:.0f} s", option=OPTION)
    if answer[0].is_failure:
        raise InputError(f"the MQTT broker at {url.shown} refused the connection: {answer[0]}", option=OPTION)


class MqttTarget:
    """Publishes notifications to a broker; announces the entities of each source it sees."""

    def __init__(self, url: BrokerUrl, rules: Sequence[Any], *, motion: bool,
                 timeout_s: float = D.NOTIFY_TIMEOUT_S, discovery_prefix: str = D.HA_DISCOVERY_PREFIX) -> None:
        self.url, self.shown, self.topics = url, url.shown, Topics(url.prefix)
        self.rules, self.motion, self.timeout_s = list(rules), motion, timeout_s
        self.discovery_prefix = discovery_prefix
        self._announced: set[str] = set()
        self._lock = threading.Lock()
        self._pending: tuple[int, int, Any] | None = None  # (id of the message, step, its MQTTMessageInfo)
        self.last_error = "not connected yet"
        self._connected = threading.Event()
        self.client = _client(url)
        self.client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=int(D.NOTIFY_BACKOFF_MAX_S))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self, wait_s: float = PROBE_TIMEOUT_S) -> None:
        """Connect (paho reconnects by itself), waiting a little for the first connection: the broker
        answered the start-up check a moment ago, so the first notification should not find it missing."""
        for source in sorted({s for r in self.rules for s in r.sources}):
            self._announced.add(source)  # announced on connect: sources the rules name are known now
        self.client.connect_async(self.url.host, self.url.port, keepalive=30)
        self.client.loop_start()
        self._connected.wait(wait_s)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"refused: {reason}"
            return
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._connected.set()
        with self._lock:
            sources = sorted(self._announced)
        for source in sources:  # retained configs again: the broker may have restarted without them
            for topic, payload in self._configs(source):
                client.publish(topic, payload, qos=1, retain=True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.last_error = f"disconnected ({reason})"

    def _configs(self, source: str) -> list[tuple[str, str]]:
        rules = [(r.name, r.cooldown_s) for r in self.rules if r.watches(source)]
        return configs(self.topics, source, rules, motion=self.motion, discovery_prefix=self.discovery_prefix)

    def publications(self, message: dict) -> list[tuple[str, Any, bool]]:
        """(topic, payload, retain) of one message, in the order they are published."""
        source = message["source"]
        if message.get("kind") == "snapshot":
            return [(self.topics.snapshot(source), message["jpeg"], True)]
        out = []
        with self._lock:
            new = source not in self._announced
            self._announced.add(source)
        if new:
            out += [(topic, payload, True) for topic, payload in self._configs(source)]
        body = json.dumps(message, ensure_ascii=False, default=str)
        out.append((self.topics.event(source), body, False))
        if message.get("event_type") == "motion":
            out.append((self.topics.state(source, "motion"), "ON", False))
        for rule in message.get("rules") or ():
            out.append((self.topics.rule_event(source, rule["name"]), body, False))
            out.append((self.topics.state(source, rule["name"]), "ON", False))
        return out

    def send(self, message: dict) -> None:
        """Publish the message's topics, each acknowledged; a retry resumes where the last try stopped."""
        steps = message.setdefault("_mqtt_steps", self.publications(message))  # fixed at the first try
        done = message.setdefault("_mqtt_done", 0)
        for step in range(done, len(steps)):
            pending = self._pending if self._pending and self._pending[:2] == (id(message), step) else None
            if pending is None:
                if not self.client.is_connected():
                    raise DeliveryError(f"broker {self.last_error}")
                topic, payload, retain = steps[step]
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                self._pending = pending = (id(message), step, info)
            try:
                pending[2].wait_for_publish(timeout=self.timeout_s)
            except (RuntimeError, ValueError) as e:
                self._pending = None
                raise DeliveryError(str(e)) from None
            if not pending[2].is_published():
                raise DeliveryError(f"no acknowledgement in {self.timeout_s:.0f} s ({self.last_error})")
            self._pending = None
            message["_mqtt_done"] = step + 1

    def close(self) -> None:
        """Say offline (retained), then disconnect."""
        if self.client.is_connected():
            info = self.client.publish(self.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
