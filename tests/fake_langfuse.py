"""A local stand-in for the Langfuse server: records what the real SDK sends, at the protocol level.

It listens on 127.0.0.1 and understands the endpoints the SDK uses:

- ``POST /api/public/otel/v1/traces``: OTLP protobuf (gzip or plain), decoded into ``spans``;
- ``POST /api/public/scores``: a JSON array of scores (SDK 5), kept in ``scores``;
- ``POST /api/public/ingestion``: a batch of events (SDK 4); the ``score-create`` events'
  bodies go to ``scores`` too, so a test reads scores the same way whatever the SDK
  (answered 207 with one success per event, as Langfuse does);
- ``GET /api/public/projects``: what ``auth_check()`` asks for;
- ``GET /api/public/v2/prompts/{name}?label=|version=``: answered from the prompts the test
  gives (``prompts=[text_prompt(...)]`` or ``add_prompt``), 404 for an unknown name or label;
  ``prompt_requests()`` lists what was asked, ``prompt_delay_s`` slows the answers down;
- media (create, upload URL, upload, patch), datasets (create, get, items) and dataset run
  items: ``srv.data`` (tests/fake_langfuse_datasets.py): ``uploads``, ``media_links()``,
  ``item_creates``, ``dataset_items(name)``, ``run_items(srv.spans)``.

Modes: ``"ok"`` answers like Langfuse, ``"401"`` rejects every request, ``"500"`` fails every
request, ``"refuse"`` is a port with nothing listening (connection refused) and ``"hang"``
accepts connections and never answers; ``"503"`` answers every request 503 (overloaded
or down for maintenance). ``ok`` / ``401`` / ``500`` / ``503`` may be switched during a run
(``srv.mode = "503"``); ``port=`` listens on a given port, e.g. a working receiver at the address
of one that refused or hung for a whole run (``FakeLangfuseServer("ok", port=down.port)``). What Langfuse *keeps* is one observation per span id and one score
per score id (a repeated id updates the same row): ``span_receipts`` / ``score_receipts``
count every receipt by id, ``kept_span_ids()`` / ``kept_score_ids()`` are the ids kept, and
``reply_delay_s`` answers late after recording (the host processed a batch whose answer
the client gave up on). Used by the tracker tests, the integrator's end-to-end
tests and ``bench/bench_tracing.py``::

    with FakeLangfuseServer(public_key="pk-lf-test", secret_key="sk-lf-test") as srv:
        tracker = LangfuseTracker(public_key=..., secret_key=..., base_url=srv.base_url)
        ...
        assert srv.wait_for(n_spans=6, n_scores=7)
        srv.spans[0]["attributes"]["langfuse.observation.type"]

    with FakeLangfuseServer(prompts=[text_prompt("video-caption", "Describe.{{faces}}",
                                                 version=3, labels=["production"])]) as srv:
        ...
        srv.prompt_requests("video-caption")  # [{"name", "label", "version", "status"}]
"""
from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fake_langfuse_datasets import DatasetState

MODES = ("ok", "refuse", "hang", "401", "500", "503")
TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
INGESTION_PATH = "/api/public/ingestion"
PROJECTS_PATH = "/api/public/projects"
PROMPTS_PATH = "/api/public/v2/prompts/"


def text_prompt(name: str, prompt: str, *, version: int = 1,
                labels: list[str] | tuple[str, ...] = ("production",),
                tags: list[str] | tuple[str, ...] = (), config: dict | None = None,
                commit_message: str | None = None) -> dict:
    """A text prompt version as Langfuse's prompt API returns it (the SDK's Prompt_Text)."""
    return {
        "type": "text",
        "name": name,
        "version": int(version),
        "prompt": prompt,
        "labels": list(labels),
        "tags": list(tags),
        "config": config if config is not None else {},
        "commitMessage": commit_message,
        "resolutionGraph": None,
    }


def _any_value(value: Any) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def decode_otlp(body: bytes) -> list[dict]:
    """Decode an ExportTraceServiceRequest into one plain dict per span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            scope = {
                "name": scope_spans.scope.name,
                "attributes": {kv.key: _any_value(kv.value) for kv in scope_spans.scope.attributes},
            }
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "attributes": {kv.key: _any_value(kv.value) for kv in span.attributes},
                        "scope": scope,
                        "resource": resource,
                    }
                )
    return spans


class FakeLangfuseServer:
    """Records the SDK's span and score requests on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        mode: str = "ok",
        *,
        public_key: str | None = None,
        secret_key: str | None = None,
        prompts: list[dict] | None = None,
        port: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.public_key = public_key
        self.secret_key = secret_key
        self.spans: list[dict] = []
        self.scores: list[dict] = []
        self.requests: list[dict] = []  # method, path, status, headers (Authorization masked)
        self.auth_failures = 0
        self.prompts: list[dict] = list(prompts or [])  # versions served by the prompt API
        self.prompt_delay_s = 0.0  # set to make the prompt API slow (a struggling host)
        # Media uploads, datasets and dataset runs (tests/fake_langfuse_datasets.py).
        self.data = DatasetState()
        self.span_receipts: Counter[str] = Counter()  # span id -> times received
        self.score_receipts: Counter[str] = Counter()  # score id -> times received
        self.reply_delay_s = 0.0  # spans and scores: recorded, then answered this late
        self._cond = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._sock: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # 0: any free port. A test gives the port of a receiver it stopped ("refuse" or "hang"
        # for a whole run) to bring a working one up at the same address (the outbox's folder
        # is per host: --send-outbox must find the same one).
        self.port = port

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The URL to hand to the SDK (``base_url=``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeLangfuseServer":
        """Start listening (or, for 'refuse', pick a port nobody listens on)."""
        if self.mode == "refuse":
            probe = socket.socket()
            probe.bind(("127.0.0.1", self.port))
            self.port = probe.getsockname()[1]
            probe.close()  # closed, so connecting to it is refused
        elif self.mode == "hang":
            self._sock = socket.socket()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(("127.0.0.1", self.port))
            self._sock.listen(128)
            self._sock.settimeout(0.2)
            self.port = self._sock.getsockname()[1]
            self._thread = threading.Thread(target=self._hold_connections, daemon=True)
            self._thread.start()
        else:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
            self._httpd.daemon_threads = True
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop held connections."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._sock is not None:
            self._sock.close()
        for conn in self._held:
            try:
                conn.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeLangfuseServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _hold_connections(self) -> None:
        # Accept and never answer: the client sees a connection that times out on read.
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self._held.append(conn)

    # -- queries ---------------------------------------------------------------------------
    def wait_for(self, n_spans: int = 0, n_scores: int = 0, timeout: float = 10.0) -> bool:
        """Wait until at least n_spans spans and n_scores scores arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.spans) < n_spans or len(self.scores) < n_scores:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def spans_named(self, name: str) -> list[dict]:
        """All received spans with this name."""
        with self._cond:
            return [s for s in self.spans if s["name"] == name]

    def add_prompt(self, prompt: dict) -> None:
        """Serve one more prompt version (a ``text_prompt(...)`` dict) from now on."""
        with self._cond:
            self.prompts.append(prompt)

    def prompt_requests(self, name: str | None = None) -> list[dict]:
        """The prompt API requests received (of that prompt): name, label, version, status."""
        found = []
        with self._cond:
            requests = list(self.requests)
        for request in requests:
            parts = urlsplit(request["path"])
            if request["method"] != "GET" or not parts.path.startswith(PROMPTS_PATH):
                continue
            query = parse_qs(parts.query)
            entry = {
                "name": unquote(parts.path[len(PROMPTS_PATH):]),
                "label": query.get("label", [None])[0],
                "version": int(query["version"][0]) if "version" in query else None,
                "status": request["status"],
            }
            if name is None or entry["name"] == name:
                found.append(entry)
        return found

    def find_prompt(self, name: str, label: str | None = None,
                    version: int | None = None) -> dict | None:
        """The version Langfuse would serve: by version, else by label (default production)."""
        with self._cond:
            versions = [p for p in self.prompts if p["name"] == name]
        if version is not None:
            matches = [p for p in versions if p["version"] == version]
        elif label == "latest":
            matches = versions
        else:
            matches = [p for p in versions if (label or "production") in p["labels"]]
        return max(matches, key=lambda p: p["version"]) if matches else None

    def traces(self) -> dict[str, list[dict]]:
        """Received spans grouped by trace id."""
        grouped: dict[str, list[dict]] = {}
        with self._cond:
            for span in self.spans:
                grouped.setdefault(span["trace_id"], []).append(span)
        return grouped

    # -- request handling (called from the handler threads) ---------------------------------
    def _authorized(self, header: str | None) -> bool:
        if self.public_key is None:
            return True
        expected = base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return header == f"Basic {expected}"

    def _record(self, method: str, path: str, status: int, headers: dict) -> None:
        safe = {k: ("***" if k.lower() == "authorization" else v) for k, v in headers.items()}
        with self._cond:
            self.requests.append({"method": method, "path": path, "status": status, "headers": safe})

    def _add(self, spans: list[dict] = (), scores: list[dict] = ()) -> None:
        with self._cond:
            self.spans.extend(spans)
            self.scores.extend(scores)
            self.span_receipts.update(s["span_id"] for s in spans)
            self.score_receipts.update(str(s.get("id")) for s in scores)
            self._cond.notify_all()
        if self.reply_delay_s and (spans or scores):
            time.sleep(self.reply_delay_s)

    def kept_span_ids(self) -> set[str]:
        """The span ids Langfuse would keep: each once, however often received."""
        with self._cond:
            return set(self.span_receipts)

    def kept_score_ids(self) -> set[str]:
        """The score ids Langfuse would keep: each once, however often received."""
        with self._cond:
            return set(self.score_receipts)


def _handler_for(server: FakeLangfuseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add
        # ~40 ms to every keep-alive request and the SDK's score batches crawl.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            server._record(self.command, self.path, status, dict(self.headers))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            return raw

        def _refused(self) -> bool:
            if server.mode == "500":
                self._reply(500, b'{"message":"internal error"}')
                return True
            if server.mode == "503":
                self._reply(503, b'{"message":"service unavailable"}')
                return True
            if server.mode == "401" or not server._authorized(self.headers.get("Authorization")):
                server.auth_failures += 1
                self._reply(401, b'{"message":"Invalid credentials"}')
                return True
            return False

        def do_GET(self) -> None:
            if server.data.handle(server, self, "GET"):  # media and datasets (fake_langfuse_datasets)
                return
            if self._refused():
                return
            if self.path.split("?")[0] == PROJECTS_PATH:
                body = {
                    "data": [
                        {
                            "id": "proj-test",
                            "name": "fake",
                            "organization": {"id": "org-test", "name": "fake-org"},
                            "metadata": {},
                        }
                    ]
                }
                self._reply(200, json.dumps(body).encode())
            elif self.path.startswith(PROMPTS_PATH):
                self._prompt()
            else:
                self._reply(404, b'{"message":"not found"}')

        def _prompt(self) -> None:
            if server.prompt_delay_s > 0:
                time.sleep(server.prompt_delay_s)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            name = unquote(parts.path[len(PROMPTS_PATH):])
            label = query.get("label", [None])[0]
            try:
                version = int(query["version"][0]) if "version" in query else None
            except ValueError:
                self._reply(400, b'{"message":"version must be an integer"}')
                return
            found = server.find_prompt(name, label, version)
            if found is None:
                wanted = f"version {version}" if version is not None else f"label {label or 'production'}"
                body = {"error": "LangfuseNotFoundError",
                        "message": f"Prompt not found: '{name}' with {wanted}"}
                self._reply(404, json.dumps(body).encode())
            else:
                self._reply(200, json.dumps(found).encode())

        def do_PUT(self) -> None:  # a media upload to the URL the fake handed out
            if not server.data.handle(server, self, "PUT", self._body()):
                self._reply(404, b'{"message":"not found"}')

        def do_PATCH(self) -> None:  # a media upload's status
            if not server.data.handle(server, self, "PATCH", self._body()):
                self._reply(404, b'{"message":"not found"}')

        def do_POST(self) -> None:
            body = self._body()
            if server.data.handle(server, self, "POST", body):  # media and datasets
                return
            if self._refused():
                return
            path = self.path.split("?")[0]
            if path == TRACES_PATH:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceResponse,
                )

                server._add(spans=decode_otlp(body))
                self._reply(
                    200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                )
            elif path == SCORES_PATH:
                data = json.loads(body or b"[]")
                server._add(scores=data if isinstance(data, list) else [data])
                self._reply(202, b'{"message":"Accepted"}')
            elif path == INGESTION_PATH:
                events = json.loads(body or b"{}").get("batch") or []
                # null fields dropped: SDK 5 leaves them out, and Langfuse reads both alike
                server._add(scores=[{k: v for k, v in e["body"].items() if v is not None}
                                    for e in events if e.get("type") == "score-create"])
                successes = [{"id": e.get("id"), "status": 201} for e in events]
                self._reply(207, json.dumps({"successes": successes, "errors": []}).encode())
            else:
                self._reply(404, b'{"message":"not found"}')

    return Handler


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer.
    For what the SDK's background threads deliver, or log, some time after a call."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
