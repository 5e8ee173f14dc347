"""A real MQTT broker for the tests (Debian's mosquitto) and a subscriber that records every message.

::

    with MosquittoBroker(tmp_path) as broker:          # 127.0.0.1, a free port, no persistence
        with Recorder(broker.port) as rec:               # subscribed to '#'
            ...
            rec.wait_for(lambda msgs: len(msgs) >= 3)
        broker.stop(); broker.start()                     # the same port again: an outage

The broker is a child process ended by its pid. ``MOSQUITTO`` is None where it is not installed
(the tests skip, saying so; .ci/run installs it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
SKIP_REASON = "mosquitto is not installed (apt-get install mosquitto; .ci/run does it)"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """mosquitto on 127.0.0.1:port as a child process."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = Path(folder) / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 5.0) -> "MosquittoBroker":
        """Start it and wait until the port takes connections."""
        assert MOSQUITTO, SKIP_REASON
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen in time")

    def stop(self) -> None:
        """End it by its pid (and wait, so the port is free again)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Message:
    """One message as the subscriber got it."""

    topic: str
    payload: bytes
    retain: bool
    at: float = 0.0  # time.monotonic() when it arrived

    @property
    def text(self) -> str:
        """The payload as UTF-8."""
        return self.payload.decode("utf-8", errors="replace")


class Recorder:
    """A paho subscriber to '#' (QoS 1) recording every message; subscribed before __enter__ returns."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Message] = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, client, userdata, msg) -> None:
        with self._cv:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))
            self._cv.notify_all()

    def wait_for(self, done: Callable[[list[Message]], bool], timeout_s: float = 10.0) -> list[Message]:
        """Wait until done(messages) holds; the messages (raises AssertionError on timeout)."""
        with self._cv:
            if not self._cv.wait_for(lambda: done(self.messages), timeout=timeout_s):
                raise AssertionError(f"timed out; got {[(m.topic, m.text[:80]) for m in self.messages]}")
            return list(self.messages)

    def topics(self, prefix: str = "") -> list[str]:
        """The topics received, in order, under prefix."""
        with self._cv:
            return [m.topic for m in self.messages if m.topic.startswith(prefix)]

    def __enter__(self) -> "Recorder":
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the recorder did not subscribe"
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()
