"""A local webhook receiver: records each POST (headers, JSON body, time) and answers as scripted."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HookReceiver:
    """On 127.0.0.1, a free port; ``script`` holds the answers to come: (status, headers), then 200s."""

    def __init__(self, script: list[tuple[int, dict]] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[dict] = []  # {"time", "headers", "body", "raw", "status"}
        self._cv = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cv:
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                    receiver.received.append({"time": time.monotonic(), "headers": dict(self.headers),
                                              "raw": raw, "body": json.loads(raw), "status": status})
                    receiver._cv.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/hook"""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> list[dict]:
        """The bodies answered with a 2xx, in order."""
        with self._cv:
            return [r["body"] for r in self.received if 200 <= r["status"] < 300]

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[dict]:
        """Wait for n requests (any answer); all received so far."""
        with self._cv:
            if not self._cv.wait_for(lambda: len(self.received) >= n, timeout=timeout_s):
                raise AssertionError(f"{len(self.received)} of {n} requests came")
            return list(self.received)

    def __enter__(self) -> "HookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
