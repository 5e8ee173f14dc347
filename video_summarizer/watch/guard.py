"""The watch server's HTTP side: who may ask (a token, the Host header), what every answer
carries (security headers), and connections bounded so slow clients cannot starve the run.

Access: every path but ``/healthz`` needs the token, sent as ``Authorization: Bearer TOKEN``
(Prometheus' ``authorization`` setting) or as the cookie the page sets when opened once with
``?token=``. ``/healthz`` answers a probe that has no token with its status code and only
``ok`` or ``unhealthy``; the reasons need the token. Every request's Host header must name this
machine by a loopback name, the bound address, or a ``--metrics-allow-host``: a page on another
site that rebinds its own name to 127.0.0.1 is answered 421 (DNS rebinding).

Connections: one thread reads every connection's request head, non-blocking, up to
``REQUEST_TIMEOUT_S`` and ``MAX_HEAD_BYTES``; only a complete request reaches one of
``HANDLERS`` threads. So a client that sends half a request costs a socket, never a thread, and
past ``MAX_PENDING`` such sockets the oldest is closed.

Standard library only: ``check_watch_options`` runs before any model loads.
"""
from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import queue
import re
import secrets
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Iterable
from urllib.parse import SplitResult, parse_qs, urlsplit

from video_summarizer.errors import InputError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # every interface: no name a browser should use
MIN_TOKEN_CHARS = 16
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")  # fits a Bearer header and a cookie unquoted
REQUEST_TIMEOUT_S = 10.0  # a request head must arrive within this; each later read or write too
MAX_PENDING = 128  # connections whose request has not arrived yet; the oldest is closed past it
HANDLERS = 8  # requests answered at once
MAX_QUEUED = 64  # complete requests waiting for a handler; 503 past it
MAX_HEAD_BYTES = 16384
# The page loads its own script, style, frames and JSON, nothing else; no inline script or style.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                    ("Cross-Origin-Resource-Policy", "same-origin"), ("Cache-Control", "no-store"))


def host_name(value: str) -> str:
    """The name of a Host header or address without its port, brackets or final dot, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        value = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:  # name:port (a bare v6 address has more colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_loopback(host: str) -> bool:
    """True when every address the name stands for is this machine's loopback."""
    name = host_name(host)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if name in WILDCARDS:
        return False
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False  # unresolvable: the bind will say so, once a token is given
    return bool(infos) and all(ipaddress.ip_address(i[4][0].partition("%")[0]).is_loopback for i in infos)


def check_watch_options(host: str, token: str | None, allow_hosts: Iterable[str] = ()) -> None:
    """--metrics-token's form, and no address beyond loopback without one: said before any model loads."""
    if token is not None and (len(token) < MIN_TOKEN_CHARS or not TOKEN_CHARS.fullmatch(token)):
        raise InputError(f"give at least {MIN_TOKEN_CHARS} characters, letters, digits and -._~+/= only "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                         option="--metrics-token")
    for allowed in allow_hosts:
        if not host_name(allowed) or "/" in allowed or any(c.isspace() for c in allowed):
            raise InputError(f"{allowed!r} is not a host name (give the name a proxy or Prometheus uses, "
                             "e.g. camera-box or summarizer.example.org)", option="--metrics-allow-host")
    if token is None and not is_loopback(host):
        raise InputError(f"{host or '(every interface)'} is not a loopback address and the page shows "
                         "the frames and who is in them: give a token with SUMMARIZER_METRICS_TOKEN "
                         "(or --metrics-token), or bind 127.0.0.1 and use an SSH tunnel",
                         option="--metrics-host")


class Access:
    """The token and the Host names the server answers; checked in constant time."""

    def __init__(self, token: str | None, bound_host: str, port: int, allow_hosts: Iterable[str] = ()) -> None:
        self.generated = token is None
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self._token = self.token.encode()
        bound = host_name(bound_host)
        self.hosts = LOOPBACK_NAMES | {host_name(h) for h in allow_hosts} | ({bound} - WILDCARDS)
        # Cookies are not kept apart by port: two runs on one machine each have a name of their own.
        self.cookie_name = f"summarizer_watch_{port}"

    def host_ok(self, header: str | None) -> bool:
        """The Host header names this server (any port)."""
        return header is not None and host_name(header) in self.hosts

    def token_ok(self, value: str | None) -> bool:
        """The token, compared in constant time."""
        return value is not None and hmac.compare_digest(value.encode("utf-8", "surrogateescape"), self._token)

    def authorized(self, headers: Any) -> bool:
        """An Authorization: Bearer header or the page's cookie carries the token."""
        scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(credentials.strip()):
            return True
        for cookie_line in headers.get_all("Cookie") or []:
            for part in cookie_line.split(";"):
                name, sep, value = part.strip().partition("=")
                if sep and name == self.cookie_name and self.token_ok(value.strip().strip('"')):
                    return True
        return False

    def set_cookie(self) -> str:
        """The Set-Cookie value the page gets: script cannot read it, no other site sends it."""
        return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"


class GuardedHandler(BaseHTTPRequestHandler):
    """GET with the Host and the token checked, the security headers on every answer; ``route`` serves."""

    server: "BoundedServer"
    timeout = REQUEST_TIMEOUT_S
    server_version = "video-summarizer"
    public_paths = frozenset({"/healthz"})  # answered without the token, with less in them

    def __init__(self, request: Any, client_address: Any, server: Any, head: bytes = b"") -> None:
        self._head = head
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        """Read the request from the head the server already has (it came in without a thread)."""
        super().setup()
        self.rfile.close()
        self.rfile = io.BytesIO(self._head)

    def version_string(self) -> str:
        """The Server header: no Python version for a scanner to match."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("watch: " + format, *args)  # a scrape every 15 s is no line on stderr

    def end_headers(self) -> None:
        """Every answer, errors from http.server included, carries the security headers."""
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Check the Host and the token, take a ?token= into the cookie, then route."""
        access = self.server.access
        url = urlsplit(self.path)
        try:
            if not access.host_ok(self.headers.get("Host")):
                self.send_body(421, b"misdirected request: this server does not answer to that Host "
                               b"(--metrics-allow-host adds a name)\n", "text/plain; charset=utf-8")
            elif url.path == "/" and "token" in parse_qs(url.query):
                self._take_token(parse_qs(url.query)["token"][0])
            else:
                authorized = access.authorized(self.headers)
                if authorized or url.path in self.public_paths:
                    self.route(url, authorized)
                else:
                    self._unauthorized()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away or stopped reading

    def _take_token(self, token: str) -> None:
        if not self.server.access.token_ok(token):
            self._unauthorized()
            return
        # The token leaves the address bar (and the history) for the cookie.
        self.send_body(303, b"", "text/plain", headers=(("Location", "/"),
                                                          ("Set-Cookie", self.server.access.set_cookie())))

    def _unauthorized(self) -> None:
        self.send_body(401, b"401: this needs the token: open the page's URL with ?token= that the run "
                       b"printed, or send Authorization: Bearer TOKEN\n", "text/plain; charset=utf-8",
                       headers=(("WWW-Authenticate", 'Bearer realm="video-summarizer"'),))

    def route(self, url: SplitResult, authorized: bool) -> None:
        """Answer a request that passed the checks (``authorized``: it carries the token)."""
        self.send_body(404, b"not found\n", "text/plain")

    def send_body(self, status: int, body: bytes, ctype: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """One whole answer."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class BoundedServer(HTTPServer):
    """Bound at construction; ``start`` serves on HANDLERS + 1 threads, however many connect."""

    access: Access  # set once bound (the cookie is named after the port), before start
    request_queue_size = MAX_PENDING  # the listen backlog: a burst of connections waits in it, not 1 s per SYN retry

    def __init__(self, address: tuple, handler: type, *, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__(address, handler)  # raises OSError: in use, not permitted
        self.request_timeout_s = request_timeout_s
        self._pending: dict[socket.socket, tuple[float, bytearray, Any]] = {}  # oldest first
        self._queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """The thread that accepts and reads request heads, and the handlers."""
        self.socket.setblocking(False)
        targets = [(self._serve, "watch-http")] + [(self._work, f"watch-http-{i}") for i in range(HANDLERS)]
        for target, name in targets:
            # daemon: a browser holding a connection never holds up the exit
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop serving, close every connection and free the port."""
        self._stop.set()
        self._wake_w.send(b"x")
        if self._threads:
            self._threads[0].join(timeout=5)  # it accepts and queues nothing more
        while True:  # requests not answered yet: closed, the run is over
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].close()
        for _ in range(HANDLERS):
            self._queue.put_nowait(None)
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        sel = self._selector
        sel.register(self.socket, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        while not self._stop.is_set():
            try:
                for key, _ in sel.select(timeout=0.5):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is not self._wake_r:
                        self._read(key.fileobj)
                self._expire(time.monotonic())
            except Exception:  # one odd connection never ends the server; said with --debug
                log.debug("watch: serving failed", exc_info=True)
        for conn in list(self._pending):
            self._drop(conn)
        sel.close()

    def _accept(self) -> None:
        try:
            conn, addr = self.socket.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:  # out of file descriptors: said with --debug, tried again at the next event
            log.debug("watch: accept failed: %s", e)
            return
        if len(self._pending) >= MAX_PENDING:
            self._drop(next(iter(self._pending)))  # the oldest: a slow client, not the new request
        conn.setblocking(False)
        self._pending[conn] = (time.monotonic() + self.request_timeout_s, bytearray(), addr)
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        _deadline, head, addr = self._pending[conn]
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        head += data
        if b"\r\n\r\n" in head or b"\n\n" in head:
            self._selector.unregister(conn)
            del self._pending[conn]
            conn.setblocking(True)
            try:
                self._queue.put_nowait((conn, addr, bytes(head)))
            except queue.Full:
                _reply_and_close(conn, b"503 Service Unavailable", b"busy: try again\n")
        elif len(head) > MAX_HEAD_BYTES:
            self._drop(conn, b"431 Request Header Fields Too Large")

    def _expire(self, now: float) -> None:
        for conn, (deadline, _head, _addr) in list(self._pending.items()):
            if deadline > now:
                break  # oldest first: the rest are younger
            self._drop(conn, b"408 Request Timeout")

    def _drop(self, conn: socket.socket, status: bytes | None = None) -> None:
        self._selector.unregister(conn)
        del self._pending[conn]
        if status is None:
            conn.close()
        else:
            _reply_and_close(conn, status, b"")

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            conn, addr, head = item
            try:
                self.RequestHandlerClass(conn, addr, self, head)
            except Exception:  # one bad request never ends the server; said with --debug
                log.debug("watch: a request from %s failed", addr, exc_info=True)
            finally:
                self.shutdown_request(conn)


def _reply_and_close(conn: socket.socket, status: bytes, body: bytes) -> None:
    """A short answer without a handler; never blocks (what does not fit is dropped)."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS).encode()
    try:
        conn.setblocking(False)
        conn.send(b"HTTP/1.0 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\nConnection: close\r\n" + headers + b"\r\n" + body)
    except OSError:
        pass
    conn.close()
