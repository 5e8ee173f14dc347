"""The --metrics-port server: Prometheus text at /metrics, /healthz, and a page to watch the run.

The page (``/``, files in ``video_summarizer/watch/web/``) polls ``/api/state`` every two seconds and
shows per source the newest captioned frame with its faces boxed and named (``/frame.jpg``,
encoded from memory: the frame is never written anywhere), the last captions with their
times, the rolling summary with its citations linking to those captions, the statistics and
the last hour of caption TTFT and latency. The server binds 127.0.0.1 unless --metrics-host
says otherwise; a frame shows who is on camera, so every path but /healthz needs a token
(--metrics-token, or one made at start and printed once) and the Host header is checked:
``guard`` has the rules, the security headers and the bounds on connections.

Fed only from the hooks beside the loop: an ``EventWriter`` listener, ``Stages.frame_observers``
(the image as the caption model received it: faces blurred when --blur-faces is on) and
``Stages.source_observers``. Uses the standard library's ``http.server``: a few routes of
text and one JPEG need no web framework.
"""
from __future__ import annotations

import errno
import json
import logging
import re
import socket
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import SplitResult, parse_qs

from video_summarizer.backends import FrameObserver
from video_summarizer.errors import InputError
from video_summarizer.watch.metrics import CONTENT_TYPE, RunMetrics
from video_summarizer.timecodes import format_video_time
from video_summarizer.watch.guard import (
    REQUEST_TIMEOUT_S,
    WILDCARDS,
    Access,
    BoundedServer,
    GuardedHandler,
    check_watch_options,
)

if TYPE_CHECKING:
    from video_summarizer.pipeline import SourceRun, Stages

log = logging.getLogger(__name__)

KEPT_CAPTIONS = 30  # per source, newest first on the page
KEPT_ALERTS = 20  # notifications listed, newest first
CLIP_THUMB_SIDE = 160  # the clip strip's thumbnails (longest side, pixels)
CHART_WINDOW_S = 3600.0
CHART_POINTS = 3600  # a bound even for a caption a second
_STAMP = re.compile(r"\[\d+:\d\d(?:\.\d+)?(?:\s*-\s*\d+:\d\d(?:\.\d+)?)?\]")  # [mm:ss(.f)], or a range, as summaries cite
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/watch.js": ("watch.js", "text/javascript; charset=utf-8"),
          "/watch.css": ("watch.css", "text/css; charset=utf-8")}


class _SourcePage:
    """What the page shows of one source."""

    def __init__(self, label: str, live: bool) -> None:
        self.label = label
        self.live = live
        self.frame: tuple[int, Any, dict, list] | None = None  # (seq, image, caption record, matches)
        self.frame_seq = 0
        self.jpeg: tuple[int, bytes] | None = None  # the newest frame encoded, by seq
        self.captions: deque[dict] = deque(maxlen=KEPT_CAPTIONS)
        self.summary: dict | None = None
        self.vlm_series: deque[tuple[float, float | None, float]] = deque(maxlen=CHART_POINTS)
        self.llm_series: deque[tuple[float, float | None, float]] = deque(maxlen=CHART_POINTS)


class PageState(FrameObserver):
    """The page's data per source, kept from the hooks; bounded however long the run.

    A frame observer (``Stages.frame_observers``): called with each captioned frame."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _SourcePage] = {}
        self.alerts: deque[dict] = deque(maxlen=KEPT_ALERTS)  # the newest notifications, any source

    def _page(self, label: str) -> _SourcePage:
        page = self._sources.get(label)
        if page is None:
            page = self._sources[label] = _SourcePage(label, live=False)
        return page

    def on_source(self, run: SourceRun) -> None:
        """A source starts (Stages.source_observers): whether its times are wall-clock."""
        with self._lock:
            self._page(run.label).live = bool(run.source.live)

    def __call__(self, image: Any, record: dict, matches: list) -> None:
        """The newest captioned frame (Stages.frame_observers); a reference, encoded when asked for."""
        with self._lock:
            page = self._page(record.get("source", "?"))
            page.frame_seq += 1
            page.frame = (page.frame_seq, image, record, list(matches))

    def on_event(self, event_type: str, record: dict) -> None:
        """Captions, summaries and alerts (EventWriter listener)."""
        if event_type == "alert":
            with self._lock:
                self.alerts.append(record)
            return
        if event_type not in ("caption", "summary"):
            return
        now = self._clock()
        with self._lock:
            page = self._page(record.get("source", "?"))
            if event_type == "caption":
                page.captions.append(record)
                page.vlm_series.append((now, record.get("ttft_ms"), record.get("latency_ms") or 0.0))
            else:
                page.summary = record
                page.llm_series.append((now, record.get("ttft_ms"), record.get("latency_ms") or 0.0))

    def frame_jpeg(self, label: str, clip_frame: int | None = None) -> bytes | None:
        """The newest captioned frame of a source as JPEG, its faces boxed and named; or, given
        clip_frame, that frame of its clip as a small thumbnail (None: no such frame)."""
        with self._lock:
            page = self._sources.get(label)
            if page is None or page.frame is None:
                return None
            seq, image, record, matches = page.frame
            if clip_frame is not None:
                frames = _clip_frames(record)
                if not 0 <= clip_frame < len(frames):
                    return None
                return _thumbnail_jpeg(frames[clip_frame].image)
            if page.jpeg is not None and page.jpeg[0] == seq:
                return page.jpeg[1]
        data = _encode_with_boxes(image, matches)
        with self._lock:
            page.jpeg = (seq, data)
        return data

    def snapshot(self, metrics: RunMetrics) -> dict:
        """Everything the page shows, as JSON-able values."""
        now = self._clock()
        stats = {label: (s, running) for label, s, running in metrics.sources()}
        out = []
        with self._lock:
            pages = list(self._sources.values())
            for page in pages:
                out.append({
                    "label": page.label,
                    "live": page.live,
                    "frame": _frame_json(page),
                    "captions": [_caption_json(page, c) for c in reversed(page.captions)],
                    "summary": _summary_json(page, page.summary),
                    "series": {"vlm": _series(page.vlm_series, now), "llm": _series(page.llm_series, now)},
                })
        for item in out:
            s, running = stats.get(item["label"], ({}, False))
            item["stats"], item["running"] = s, running
        for label, (s, running) in stats.items():  # a source that has not captioned yet
            if not any(item["label"] == label for item in out):
                out.append({"label": label, "live": False, "frame": None, "captions": [], "summary": None,
                            "series": {"vlm": [], "llm": []}, "stats": s, "running": running})
        health = metrics.health()
        stages = metrics.stages
        models = {}
        if stages is not None:
            for key, part in (("vlm", stages.vlm), ("llm", stages.summarizer)):
                if part.stats is not None:
                    models[key] = {"model": part.name, **part.stats.as_dict()}
        with self._lock:
            alerts = [_alert_json(self._sources.get(a.get("source")) or _SourcePage("?", False), a)
                      for a in reversed(self.alerts)]
        return {"now": now, "health": {"ok": health.ok, "reason": health.reason, "sources": health.sources},
                "sources": out, "models": models, "alerts": alerts,
                "langfuse": stages.tracker.stats() if stages is not None else None}


def _when(page: _SourcePage, video_time: float | None) -> str:
    """A caption's time as the summary cites it: mm:ss of video, or the wall clock for live sources."""
    if video_time is None:
        return ""
    if page.live:
        return time.strftime("%H:%M:%S", time.localtime(video_time))
    return format_video_time(video_time)


def _frame_json(page: _SourcePage) -> dict | None:
    if page.frame is None:
        return None
    seq, _image, record, matches = page.frame
    clip = [{"frame": f.index, "at": _when(page, f.video_time)} for f in _clip_frames(record)]
    return {"seq": seq, "frame": record.get("frame"), "at": _when(page, record.get("video_time")),
            "caption": record.get("caption"), "faces": [m.name for m in matches],
            "clip": clip if len(clip) > 1 else []}


def _clip_frames(record: dict) -> tuple:
    """The frames of the clip a caption covers (its record's "clip", from the loop), or none."""
    clip = record.get("clip")
    return tuple(getattr(clip, "frames", ()) or ())


def _thumbnail_jpeg(image: Any) -> bytes:
    """A clip frame as a small JPEG for the page's strip."""
    from video_summarizer.frames import to_jpeg_bytes

    return to_jpeg_bytes(image, CLIP_THUMB_SIDE, 75)


def _alert_json(page: _SourcePage, a: dict) -> dict:
    return {"id": a.get("id"), "stage": a.get("stage"), "source": a.get("source"), "time": a.get("time"),
            "at": _when(page, a.get("video_time")), "rules": a.get("rules") or [], "caption": a.get("caption"),
            "status": a.get("status"), "target": a.get("target")}


def _caption_json(page: _SourcePage, c: dict) -> dict:
    return {"frame": c.get("frame"), "at": _when(page, c.get("video_time")), "time": c.get("time"),
            "caption": c.get("caption"), "faces": c.get("faces") or [],
            "ttft_ms": c.get("ttft_ms"), "latency_ms": c.get("latency_ms")}


def _summary_json(page: _SourcePage, s: dict | None) -> dict | None:
    if s is None:
        return None
    sentences = []
    for sent in s.get("sentences") or []:
        cites: dict[str, dict] = {}  # one link per time cited: to the first caption at that time
        for c in sent.get("cites", []):
            at = _when(page, c.get("video_time"))
            cites.setdefault(at, {"frame": c.get("frame"), "at": at})
        # The stamps become links to the captions: the text goes without them.
        text = " ".join(_STAMP.sub("", sent.get("text", "")).split()).replace(" .", ".")
        sentences.append({"text": text, "cites": list(cites.values())})
    return {"text": s.get("text"), "time": s.get("time"), "final": s.get("final"),
            "window": [_when(page, t) for t in s.get("window") or []], "sentences": sentences}


def _series(points: deque, now: float) -> list[list]:
    return [[round(t - now, 1), ttft, lat] for t, ttft, lat in list(points) if now - t <= CHART_WINDOW_S]


def _encode_with_boxes(image: Any, matches: list) -> bytes:
    """JPEG of a copy of the frame with each face's box and name drawn on it."""
    import cv2  # already loaded by the run's sources

    out = image.copy()
    for m in matches:
        top, right, bottom, left = (int(v) for v in m.box)
        colour = (80, 200, 80) if m.name != "unknown" else (60, 160, 255)  # BGR: known green, else orange
        cv2.rectangle(out, (left, top), (right, bottom), colour, 2)
        label = m.name if m.distance is None or m.name == "unknown" else f"{m.name} {m.distance:.2f}"
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(top, h + base + 2)
        cv2.rectangle(out, (left, y - h - base - 2), (left + w + 4, y), colour, -1)
        cv2.putText(out, label, (left + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return buf.tobytes()


class _Handler(GuardedHandler):
    """The routes, once the Host and the token are checked (guard)."""

    def route(self, url: SplitResult, authorized: bool) -> None:
        """/metrics, /healthz, /api/state, /frame.jpg and the page's files."""
        watch = self.server.watch
        try:
            if url.path == "/healthz":
                health = watch.metrics.health()
                # A probe without the token learns up or down; the reasons name sources and models.
                reason = health.reason if authorized else ("ok" if health.ok else "unhealthy")
                self.send_body(200 if health.ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
            elif url.path == "/metrics":
                self.send_body(200, watch.metrics.exposition(), CONTENT_TYPE)
            elif url.path == "/api/state":
                body = json.dumps(watch.page.snapshot(watch.metrics), default=str).encode()
                self.send_body(200, body, "application/json")
            elif url.path == "/frame.jpg":
                query = parse_qs(url.query)
                label, part = query.get("source", [""])[0], query.get("clip", [""])[0]
                data = watch.page.frame_jpeg(label, int(part) if part.isdigit() else None)
                if data is None:
                    self.send_body(404, b"no captioned frame yet\n", "text/plain")
                else:
                    self.send_body(200, data, "image/jpeg")
            elif url.path in STATIC:
                name, ctype = STATIC[url.path]
                self.send_body(200, resources.files("video_summarizer.watch.web").joinpath(name).read_bytes(), ctype)
            else:
                self.send_body(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            raise  # the client went away or stopped reading: nothing to answer (do_GET drops it)
        except Exception as e:  # one bad request never ends the server; said with --debug
            log.debug("watch: %s failed", url.path, exc_info=True)
            self.send_body(500, f"{type(e).__name__}: {e}\n".encode(), "text/plain")


class _Server(BoundedServer):
    watch: "WatchServer"


class _Server6(_Server):
    address_family = socket.AF_INET6


class WatchServer:
    """/metrics, /healthz and the page, on threads of their own; bound at construction."""

    def __init__(self, host: str, port: int, *, token: str | None = None, allow_hosts: Iterable[str] = (),
                 interval_s: float = 5.0, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.metrics = RunMetrics(interval_s=interval_s)
        self.page = PageState()
        cls = _Server6 if ":" in host else _Server
        self._server = cls((host, port), _Handler, request_timeout_s=request_timeout_s)  # OSError: in use, ...
        self._server.watch = self
        self.host, self.port = host, self._server.server_address[1]
        # After binding: the cookie is named after the port. Without a token one is made now.
        self.access = self._server.access = Access(token, host, self.port, allow_hosts)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The page's address (on a wildcard bind: by loopback, the name this machine answers)."""
        host = self.host
        if host in WILDCARDS:
            host = "::1" if host == "::" else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> "WatchServer":
        """Serve, and sample the sources' frame counts every second (for /healthz)."""
        self._server.start()
        t = threading.Thread(target=self._sample, name="watch-sample", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.metrics.sample()

    def on_event(self, event_type: str, record: dict) -> None:
        """The EventWriter listener: metrics first, then the page."""
        self.metrics.on_event(event_type, record)
        self.page.on_event(event_type, record)

    def attach(self, stages: Stages) -> Stages:
        """Register on the run's stages (source and frame observers); returns them."""
        self.metrics.attach(stages)
        stages.source_observers.append(self.page.on_source)
        stages.frame_observers.append(self.page)
        return stages

    def close(self) -> None:
        """Stop serving and free the port."""
        self._stop.set()
        self._server.close()


def start_watch(options: Any, interval_s: float, events: Any, stack: ExitStack) -> WatchServer | None:
    """The server for --metrics-port (options: WatchOptions; None without a port), bound now: a bad port
    is said before models load. interval_s: --interval, how often the page expects a frame."""
    if options.metrics_port is None:
        return None
    host = options.metrics_host
    check_watch_options(host, options.metrics_token, options.metrics_allow_host)  # the CLI checked already
    try:
        watch = WatchServer(host, options.metrics_port, token=options.metrics_token,
                            allow_hosts=options.metrics_allow_host, interval_s=interval_s)
    except socket.gaierror as e:
        raise InputError(f"cannot listen on {host!r}: {e.strerror or e}", option="--metrics-host") from e
    except OSError as e:
        raise _bind_error(e, host, options.metrics_port) from e
    stack.callback(watch.close)
    events.add_listener(watch.on_event)
    watch.start()
    url = watch.url
    if watch.access.generated:
        # Said once, straight to stderr: this line is how the user gets in (no log filter may mask it).
        sys.stderr.write(f"Watch page: {url}?token={watch.access.token} (a token made for this run; "
                         f"/metrics takes it as Authorization: Bearer; health: {url}healthz)\n")
        sys.stderr.flush()
    else:
        log.info("Watch page: %s?token=<--metrics-token> (metrics: %smetrics with Authorization: Bearer, "
                 "health: %shealthz)", url, url, url)
    return watch


def _bind_error(e: OSError, host: str, port: int) -> InputError:
    if e.errno == errno.EADDRINUSE:
        return InputError(f"port {port} on {host} is in use (another run or service?); choose another port",
                          option="--metrics-port")
    if e.errno == errno.EACCES:
        return InputError(f"port {port} on {host} is not permitted (ports below 1024 need root or "
                          "CAP_NET_BIND_SERVICE); choose one above 1024", option="--metrics-port")
    if e.errno == errno.EADDRNOTAVAIL:
        return InputError(f"{host} is not an address of this machine", option="--metrics-host")
    return InputError(f"cannot listen on {host}:{port}: {e.strerror or e}", option="--metrics-port")
