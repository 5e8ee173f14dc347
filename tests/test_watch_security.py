"""The --metrics-port server is safe to leave on a network: a token for everything but /healthz's
verdict, the Host header checked (DNS rebinding), security headers on every answer, no address
beyond loopback without a token, and slow clients that cost no thread and starve no request.

The server runs in this process (the real WatchServer on 127.0.0.1, spoken to over real HTTP);
the refused remote bind runs the CLI, since its exit code and what it did not load are the point."""
from __future__ import annotations

import http.client
import json
import re
import selectors
import socket
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_runner import CLI, cli_env, run_here
from tests.test_metrics import TOKEN, _source_run, free_port

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def request(port: int, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one request; http.client follows no redirect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture()
def server():
    """A WatchServer on a free loopback port with the tests' token, a frame and a caption to serve."""
    from video_summarizer.watch.server import WatchServer

    watch = WatchServer("127.0.0.1", 0, token=TOKEN, allow_hosts=("proxy.example.org",), request_timeout_s=2.0)
    watch.page(np.full((120, 160, 3), 90, np.uint8),
                        {"source": "cam0", "frame": 3, "video_time": 1.5, "caption": "SECRET-CAPTION"}, [])
    watch.on_event("caption", {"source": "cam0", "frame": 3, "caption": "SECRET-CAPTION", "latency_ms": 5.0})
    watch.start()
    try:
        yield watch
    finally:
        watch.close()


DATA_PATHS = ("/", "/api/state", "/metrics", "/frame.jpg?source=cam0", "/watch.js", "/watch.css")


def test_a_rebinding_host_is_misdirected(server):
    # A page on attacker.example whose name now resolves to 127.0.0.1: its requests carry its own Host.
    for path in (*DATA_PATHS, "/healthz"):
        status, _h, body = request(server.port, path, {**BEARER, "Host": f"attacker.example:{server.port}"})
        assert status == 421, (path, status)
        assert b"SECRET-CAPTION" not in body and b"summarizer_" not in body
    for host in ("0.0.0.0", "127.0.0.1.attacker.example", "localhost.attacker.example"):
        assert request(server.port, "/api/state", {**BEARER, "Host": host})[0] == 421, host
    # This machine's own names, with or without a port, and the name given by --metrics-allow-host
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST",
                 f"[::1]:{server.port}", "proxy.example.org", "proxy.example.org.:443"):
        status, _h, body = request(server.port, "/api/state", {**BEARER, "Host": host})
        assert status == 200 and json.loads(body)["sources"][0]["label"] == "cam0", (host, status)


def test_without_the_token_nothing_is_served(server):
    cookie = server.access.cookie_name
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Cookie": f"{cookie}=wrong-token-0123456789"},
                    {"Cookie": f"summarizer_watch_1={TOKEN}"}):  # another port's cookie
        for path in DATA_PATHS:
            status, h, body = request(server.port, path, headers)
            assert status == 401, (path, headers, status)
            assert h["www-authenticate"] == 'Bearer realm="video-summarizer"'
            assert b"SECRET-CAPTION" not in body and b"summarizer_" not in body and b"<script" not in body
    # ?token= with a wrong value sets no cookie
    status, h, _ = request(server.port, "/?token=wrong-token-0123456789")
    assert status == 401 and "set-cookie" not in h


def test_healthz_without_the_token_says_only_ok_or_unhealthy(server):
    server.metrics.on_source(_source_run("cam0"))  # reading frames: healthy until its first caption is due
    assert request(server.port, "/healthz")[::2] == (200, b"ok\n")
    status, _h, body = request(server.port, "/healthz", BEARER)
    assert status == 200 and body.startswith(b"ok\ncam0: last frame"), body
    from video_summarizer.watch.server import WatchServer

    starting = WatchServer("127.0.0.1", 0, token=TOKEN).start()  # no source yet: the models loading
    try:
        assert request(starting.port, "/healthz")[::2] == (503, b"unhealthy\n")
        assert request(starting.port, "/healthz", BEARER)[::2] == \
            (503, b"starting: no source has started reading yet (models may be loading)\n")
    finally:
        starting.close()


def test_prometheus_reads_metrics_with_a_bearer_token(server):
    # what opens /metrics is the token: a scrape without it, or with another, gets nothing
    assert request(server.port, "/metrics")[0] == 401
    assert request(server.port, "/metrics", {"Authorization": "Bearer another-token-0123456789"})[0] == 401
    for scheme in ("Bearer", "bearer"):
        status, h, body = request(server.port, "/metrics", {"Authorization": f"{scheme} {TOKEN}"})
        assert status == 200 and h["content-type"].startswith("text/plain; version=")
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"summarizer_healthy", "summarizer_vlm_latency_seconds"} <= names


def test_the_page_swaps_the_token_in_its_url_for_a_cookie(server):
    status, h, body = request(server.port, f"/?token={TOKEN}")
    assert (status, h["location"], body) == (303, "/", b"")  # the token leaves the address bar
    name, _, rest = h["set-cookie"].partition("=")
    value, *attributes = [part.strip() for part in rest.split(";")]
    assert name == f"summarizer_watch_{server.port}" and value == TOKEN
    assert set(attributes) == {"Path=/", "HttpOnly", "SameSite=Strict"}
    cookie = {"Cookie": f"other=1; {name}={value}"}
    assert request(server.port, "/api/state", cookie)[0] == 200
    status, h, body = request(server.port, "/frame.jpg?source=cam0", cookie)
    assert status == 200 and h["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    # as a browser does it: the redirect followed, the cookie kept, the page and its data served
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"http://127.0.0.1:{server.port}/?token={TOKEN}", timeout=5) as page:
        assert page.url == f"http://127.0.0.1:{server.port}/" and b'<script src="/watch.js">' in page.read()
    with opener.open(f"http://127.0.0.1:{server.port}/api/state", timeout=5) as state:
        assert json.loads(state.read())["sources"][0]["captions"][0]["caption"] == "SECRET-CAPTION"
    assert [c.name for c in jar] == [name]


def test_a_token_made_at_start_is_printed_once_as_the_pages_url(capsys):
    from video_summarizer.options import WatchOptions
    from video_summarizer.outputs import EventWriter
    from video_summarizer.watch.server import start_watch

    with ExitStack() as stack:
        watch = start_watch(WatchOptions(metrics_port=free_port()), 5.0, EventWriter(None), stack)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "token=" in line]
        assert len(lines) == 1, err
        m = re.match(rf"Watch page: http://127\.0\.0\.1:{watch.port}/\?token=([A-Za-z0-9_-]{{43}}) ", lines[0])
        assert m and m.group(1) == watch.access.token, lines
        assert request(watch.port, "/metrics")[0] == 401
        assert request(watch.port, "/metrics", {"Authorization": f"Bearer {m.group(1)}"})[0] == 200
        assert request(watch.port, f"/?token={m.group(1)}")[0] == 303
    # a given token is never printed
    with ExitStack() as stack:
        start_watch(WatchOptions(metrics_port=free_port(), metrics_token=TOKEN), 5.0, EventWriter(None), stack)
    assert TOKEN not in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_remote_bind_without_a_token_is_refused_before_anything_loads(tmp_path, clips, host):
    port = free_port()
    args = [sys.executable, CLI, "--vlm-base-url", "http://127.0.0.1:9/v1", "--no-faces",
            "--source", str(clips.numbered().path), "--events", str(tmp_path / "events.jsonl"),
            "--metrics-port", str(port), "--metrics-host", host]
    started = time.monotonic()
    proc = run_here(args, cli_env(tmp_path), cwd=tmp_path, timeout=60)
    took = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"Error: --metrics-host: {host} is not a loopback address"), lines
    assert "SUMMARIZER_METRICS_TOKEN" in lines[0]
    assert took < 20, took  # no model, no connection to the VLM: only Python's start and the imports
    assert not (tmp_path / "events.jsonl").exists()
    with socket.socket() as s:  # nothing listened
        s.bind(("127.0.0.1", port))


def test_the_token_checks_name_their_option():
    from video_summarizer.errors import InputError
    from video_summarizer.watch.guard import check_watch_options, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.0.2.1"))
    check_watch_options("127.0.0.1", None)  # a token is made at start
    check_watch_options("0.0.0.0", TOKEN, ("proxy.example.org",))
    for args, option in ((("0.0.0.0", None), "--metrics-host"), (("127.0.0.1", "short"), "--metrics-token"),
                         (("127.0.0.1", "a token with spaces in it"), "--metrics-token"),
                         (("127.0.0.1", None, ("http://proxy/",)), "--metrics-allow-host")):
        with pytest.raises(InputError) as e:
            check_watch_options(*args)
        assert e.value.option == option, (args, e.value)


def test_a_wildcard_bind_with_a_token_answers_by_loopback_but_not_to_its_wildcard_name():
    from video_summarizer.watch.server import WatchServer

    watch = WatchServer("0.0.0.0", 0, token=TOKEN).start()
    try:
        assert watch.url == f"http://127.0.0.1:{watch.port}/"
        assert request(watch.port, "/metrics", BEARER)[0] == 200
        assert request(watch.port, "/metrics", {**BEARER, "Host": f"0.0.0.0:{watch.port}"})[0] == 421
        assert request(watch.port, "/metrics")[0] == 401
    finally:
        watch.close()


def _closed_within(socks: list[socket.socket], seconds: float) -> int:
    """How many of these connections the server closed (EOF or reset) within the time."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + seconds
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data or data.startswith(b"HTTP/1.0 408"):
                sel.unregister(key.fileobj)
                closed += 1
    sel.close()
    return closed


def test_slow_clients_hold_no_thread_and_starve_no_request(server):
    threads = threading.active_count()
    slow = []
    try:
        for _ in range(200):  # a request that never ends its head (slowloris)
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        time.sleep(0.5)
        assert threading.active_count() <= threads + 1, (threads, threading.active_count())
        started = time.monotonic()
        status, _h, body = request(server.port, "/api/state", BEARER)
        answered_s = time.monotonic() - started
        assert status == 200 and json.loads(body)["sources"], status
        assert answered_s < 2.0, answered_s
        # each is closed once its head is overdue (2 s here) or when 128 more wait
        assert _closed_within(slow, 2.0 + 3.0) == 200
        assert threading.active_count() <= threads + 1
    finally:
        for s in slow:
            s.close()


def test_every_answer_carries_the_security_headers(server):
    cookie = {"Cookie": f"{server.access.cookie_name}={TOKEN}"}
    answers = [request(server.port, p, cookie) for p in (*DATA_PATHS, "/healthz", "/nothing-here")]
    answers += [request(server.port, "/api/state"), request(server.port, "/", {"Host": "attacker.example"}),
                request(server.port, f"/?token={TOKEN}"), request(server.port, "/", cookie, method="POST"),
                request(server.port, "/", cookie, method="DELETE")]
    assert sorted({status for status, _h, _b in answers}) == [200, 303, 401, 404, 421, 501, 503]
    for status, h, _body in answers:
        csp = dict(part.strip().partition(" ")[::2] for part in h["content-security-policy"].split(";"))
        assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'", csp
        assert csp["frame-ancestors"] == "'none'" and "unsafe" not in h["content-security-policy"]
        assert (h["x-content-type-options"], h["x-frame-options"], h["referrer-policy"]) == \
            ("nosniff", "DENY", "no-referrer"), status
        assert h["cache-control"] == "no-store", status
        assert "python" not in h["server"].lower()
    # answers made before any handler: a head too large, a head overdue (2 s here)
    for sent, status in ((b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000, b"431"), (b"GET / HTTP/1.1\r\n", b"408")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(sent)
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.0 " + status), answer[:40]
        assert b"X-Frame-Options: DENY\r\n" in answer and b"Content-Security-Policy: default-src 'none';" in answer
    # The page needs nothing the policy forbids: no inline script or style, no script built from text.
    web = Path(__file__).resolve().parent.parent / "video_summarizer" / "watch" / "web"
    page = (web / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/watch.js">'] and " style=" not in page
    assert "<style" not in page and not re.search(r"\bon[a-z]+=", page)
    assert not re.search(r"innerHTML|eval\(|new Function|setAttribute\(\"style", (web / "watch.js").read_text())
