"""A video served over HTTP that dies (503) after some plays and may come back: a live stream
for the reconnect tests.

    with ClipServer(clip_bytes, good=1, outage=5) as server:
        open_source(server.url, ...)   # play 1 served, the next 5 requests 503, then served again
"""
from __future__ import annotations

import http.server
import threading


class ClipServer(http.server.ThreadingHTTPServer):
    """Serves the clip for the first ``good`` requests, then answers 503: a stream that dies.
    With ``outage``, only the ``outage`` requests after those get 503; later ones are served."""

    def __init__(self, clip: bytes, good: int, outage: int | None = None, *, userinfo: str = ""):
        self.clip, self.good, self.outage, self.requests = clip, good, outage, 0
        super().__init__(("127.0.0.1", 0), _ClipHandler)
        self.url = f"http://{userinfo}127.0.0.1:{self.server_address[1]}/live.webm"

    def down(self) -> bool:
        """Whether the request being answered gets 503."""
        if self.requests <= self.good:
            return False
        return self.outage is None or self.requests <= self.good + self.outage

    def __enter__(self) -> "ClipServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _ClipHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        if self.server.down():
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/webm")
        self.send_header("Content-Length", str(len(self.server.clip)))
        self.end_headers()
        self.wfile.write(self.server.clip)

    def log_message(self, *args):
        pass
