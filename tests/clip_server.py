"""Videos served over HTTP from 127.0.0.1: live streams for the source tests.

A stream dies (503) after some plays and may come back, for the reconnect tests; several
paths on one server are several cameras behind one recorder; any bytes with any content type
stand for a server that answers with something that is not a video.

    with ClipServer(clip_bytes, good=1, outage=5) as server:
        open_source(server.url, ...)   # play 1 served, the next 5 requests 503, then served again
    with ClipServer(clips={"/cam1/live.avi": a, "/cam2/live.avi": b}, good=9) as server:
        open_source(server.url_for("/cam1/live.avi"))
"""
from __future__ import annotations

import http.server
import threading
from collections import Counter


class ClipServer(http.server.ThreadingHTTPServer):
    """Serves the clip for the first ``good`` requests of each path, then answers 503: a stream
    that dies. With ``outage``, only the ``outage`` requests after those get 503; later ones are
    served. ``clips`` maps paths to clips (one camera each); a path not in it gets 404."""

    def __init__(self, clip: bytes | None = None, good: int = 1, outage: int | None = None, *,
                 userinfo: str = "", clips: dict[str, bytes] | None = None,
                 content_type: str = "video/webm"):
        self.clips = dict(clips) if clips else {"/live.webm": clip or b""}
        self.good, self.outage, self.content_type = good, outage, content_type
        self.requests = 0  # all paths together
        self.requests_by_path: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ClipHandler)
        self._userinfo = userinfo
        self.url = self.url_for(next(iter(self.clips)))

    def url_for(self, path: str) -> str:
        """The URL of one of the served paths (with the userinfo given, if any)."""
        return f"http://{self._userinfo}127.0.0.1:{self.server_address[1]}{path}"

    def count(self, path: str) -> int:
        """Count a request for ``path``; returns how many that path has had, this one included."""
        with self._lock:
            self.requests += 1
            self.requests_by_path[path] += 1
            return self.requests_by_path[path]

    def down(self, nth: int) -> bool:
        """Whether the nth request of a path gets 503."""
        if nth <= self.good:
            return False
        return self.outage is None or nth <= self.good + self.outage

    def __enter__(self) -> "ClipServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _ClipHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        nth = self.server.count(path)
        clip = self.server.clips.get(path)
        if clip is None:
            self.send_error(404)
            return
        if self.server.down(nth):
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(clip)))
        self.end_headers()
        try:
            self.wfile.write(clip)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader closed the stream first, as a live reader that stops does

    def log_message(self, *args):
        pass
