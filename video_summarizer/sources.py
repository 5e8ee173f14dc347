"""Frame sources: video files, stdin pipes, cameras and network streams, as iterables of frames.

Files (and non-live pipes) are read in order with ``grab()`` only; a frame's pixels are
converted (``retrieve()``) the first time ``frame.image`` is read, so frames the selector
skips on time cost no colour conversion. Live sources (cameras, streams, ``live=True``)
run a reader thread that keeps draining the device, so what the loop gets is always the
newest frame, never one that sat in a driver or network buffer.

OpenCV is imported on first use, never at import time.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

from video_summarizer.errors import InputError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

OPTION = "--source"

VIDEO_EXTENSIONS = frozenset(
    {
        ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mjpeg", ".mjpg", ".mkv", ".mov", ".mp4",
        ".mpeg", ".mpg", ".mts", ".mxf", ".ogv", ".ts", ".webm", ".wmv", ".y4m",
    }
)

_CAMERA_RE = re.compile(r"^(?:cam(\d+)|(\d+))$", re.IGNORECASE)
_DEVICE_RE = re.compile(r"^/dev/video(\d+)$")
_STREAM_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# Network reads must not hang the reader thread forever on a dead server.
_STREAM_TIMEOUT_MS = 5000
_MAX_RECONNECT_DELAY_S = 10.0
_SNIFF_BYTES = 12


class Frame:
    """One video frame: its index, its time and its BGR image, decoded on first access."""

    __slots__ = ("index", "timestamp", "captured_at", "_image", "_decode")

    def __init__(
        self,
        index: int,
        timestamp: float,
        captured_at: float,
        image: np.ndarray | None = None,
        *,
        decode: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if image is None and decode is None:
            raise ValueError("a Frame needs an image or a way to decode one")
        self.index = index
        self.timestamp = timestamp  # video seconds (files) / epoch seconds (live)
        self.captured_at = captured_at  # time.time() when grabbed, to measure staleness
        self._image = image
        self._decode = decode

    @property
    def image(self) -> np.ndarray:
        """The BGR pixels; decoded now if this is the first access."""
        if self._image is None:
            self._image = self._decode()
            self._decode = None
        return self._image

    @property
    def decoded(self) -> bool:
        """Whether the pixels have been decoded yet."""
        return self._image is not None

    def __repr__(self) -> str:
        return (
            f"Frame(index={self.index}, timestamp={self.timestamp:.3f}, "
            f"captured_at={self.captured_at:.3f}, decoded={self.decoded})"
        )


class FrameSource(ABC):
    """Something that yields frames; use it with ``with`` so the capture is always released."""

    def __init__(self, label: str, *, live: bool, cleanup: ExitStack) -> None:
        self.label = label
        self.live = live
        self.fps: float | None = None
        self.frame_count: int | None = None  # files: frames the container announces (for progress)
        self.frames_read = 0  # frames grabbed from the decoder/device
        self.frames_dropped = 0  # live: grabbed frames nobody took (a newer one came first)
        self.decode_failures = 0  # grabbed frames whose pixels could not be converted
        self.reconnects = 0  # cameras and streams: reopen attempts made after frames stopped
        self._stop = threading.Event()
        self._cleanup = cleanup

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or stop() is called."""

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def stop(self) -> None:
        """Make iteration end soon; safe from other threads and signal handlers."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether stop() or close() was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop, release the capture and remove temporary files (idempotent)."""
        self.stop()
        self._cleanup.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SequentialSource(FrameSource):
    """Every frame in order, timestamps in video time, pixels converted only on demand."""

    def __init__(self, label: str, cap, *, cleanup: ExitStack) -> None:
        super().__init__(label, live=False, cleanup=cleanup)
        self._cap = cap
        cleanup.callback(cap.release)
        self.fps = _fps(cap)
        cv2 = _cv2()
        self._pos_msec_prop = cv2.CAP_PROP_POS_MSEC
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)  # meaningless for pipes (0, or -1e15 for TS)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else None
        # Grab the first frame now so an undecodable input fails in open_source, not mid-run.
        if not cap.grab():
            raise InputError(f"{label}: no frame could be decoded (corrupt, truncated or not a video)", option=OPTION)
        self._position = 0  # index of the frame the decoder currently holds
        self._first_pending = True
        self._last_ts = 0.0

    def frames(self) -> Iterator[Frame]:
        """Yield every frame (grab only) until the input ends or stop() is called."""
        while not self._stop.is_set():
            if self._first_pending:
                self._first_pending = False
            elif self._cap.grab():
                self._position += 1
            else:
                return  # end of input, or a truncated file: stop cleanly after what decoded
            self.frames_read += 1
            index = self._position
            yield Frame(index, self._timestamp(index), time.time(), decode=lambda i=index: self._retrieve(i))

    def _timestamp(self, index: int) -> float:
        """The frame's video time; falls back to index/fps where the container gives none."""
        pos_ms = self._cap.get(self._pos_msec_prop)
        if math.isfinite(pos_ms) and pos_ms >= 0 and (index == 0 or pos_ms > 0):
            ts = pos_ms / 1000.0
        else:
            ts = index / self.fps if self.fps else float(index)
        # Keep time monotonic: the selector's interval grid relies on it.
        self._last_ts = max(ts, self._last_ts)
        return self._last_ts

    def _retrieve(self, index: int) -> np.ndarray:
        if index != self._position:
            raise RuntimeError(
                f"frame {index} of {self.label} is gone (the source is at frame {self._position}): "
                "read frame.image before taking the next frame"
            )
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            self.decode_failures += 1
            raise InputError(f"{self.label}: frame {index} could not be decoded", option=OPTION)
        return image


class _LiveSource(FrameSource):
    """A reader thread drains the device; the consumer always gets the next frame grabbed after it asks.

    Pixels are converted only for frames someone waits for: frames grabbed while the loop
    is busy are counted as dropped and never converted. Timestamps are wall-clock epoch
    seconds taken when the frame was grabbed.
    """

    _POLL_S = 0.05  # how soon a waiting consumer notices stop() or the end of the source

    def __init__(
        self,
        label: str,
        opener: Callable[[], object],
        *,
        reconnect_attempts: int,
        reconnect_delay: float,
        cleanup: ExitStack,
    ) -> None:
        super().__init__(label, live=True, cleanup=cleanup)
        self._opener = opener
        self._reconnect_attempts = max(-1, reconnect_attempts)  # -1: no bound
        self._reconnect_delay = reconnect_delay
        cap = opener()
        self.fps = _fps(cap)
        # One frame proves the device really delivers (an opened camera can still be dead).
        if not cap.grab():
            cap.release()
            raise InputError(f"{label}: opened, but no frame arrived", option=OPTION)
        self.frames_read = 1
        self.frames_dropped = 1  # the probe frame: by the time anyone asks, it is stale
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._want = False  # a consumer is waiting: convert the next grabbed frame
        self._ended = False
        self._thread = threading.Thread(target=self._read_loop, args=(cap,), name=f"frames-{label}", daemon=True)
        self._thread.start()
        cleanup.callback(self._join)

    def frames(self) -> Iterator[Frame]:
        """Yield the newest frame each time, blocking until one newer than the last arrives."""
        last = -1
        while True:
            with self._cond:
                self._want = True
                while not self._stop.is_set() and not self._ended and not self._newer_than(last):
                    self._cond.wait(self._POLL_S)
                if self._stop.is_set() or not self._newer_than(last):
                    self._want = False
                    return
                frame = self._latest
            last = frame.index
            yield frame

    def _newer_than(self, index: int) -> bool:
        return self._latest is not None and self._latest.index > index

    def _read_loop(self, cap) -> None:
        """Runs in the reader thread, which owns the capture from here on."""
        index = 0
        failed_tries = 0  # reconnects since the last good frame: bounds the retrying
        try:
            while not self._stop.is_set():
                if cap is None:
                    if 0 <= self._reconnect_attempts <= failed_tries:
                        return
                    failed_tries += 1
                    delay = min(self._reconnect_delay * 2 ** min(failed_tries - 1, 30), _MAX_RECONNECT_DELAY_S)
                    if self._stop.wait(delay):
                        return
                    bound = "" if self._reconnect_attempts < 0 else f"/{self._reconnect_attempts}"
                    # unbounded: the first tries, then one line in 60 (10 min at the 10 s cap)
                    if failed_tries <= 3 or self._reconnect_attempts >= 0 or failed_tries % 60 == 0:
                        log.warning("%s: no frames, reopening (attempt %d%s)", self.label, failed_tries, bound)
                    self.reconnects += 1
                    try:
                        cap = self._opener()
                    except InputError:
                        cap = None
                    continue
                if not cap.grab():
                    cap.release()
                    cap = None
                    continue
                if failed_tries:
                    log.info("%s: frames again after %d reopening attempt(s)", self.label, failed_tries)
                failed_tries = 0
                now = time.time()
                index += 1
                with self._cond:
                    self.frames_read += 1
                    wanted = self._want
                    if not wanted:
                        self.frames_dropped += 1
                if not wanted:
                    continue
                ok, image = cap.retrieve()
                with self._cond:
                    if ok and image is not None:
                        self._latest = Frame(index, now, now, image)
                        self._want = False
                        self._cond.notify_all()
                    else:
                        self.decode_failures += 1
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _join(self) -> None:
        self._stop.set()
        # A blocked network read ends within the stream timeout; the thread releases the capture.
        self._thread.join(timeout=_STREAM_TIMEOUT_MS / 1000.0 + 1.0)


def open_source(
    spec: str,
    *,
    live: bool | None = None,
    reconnect_attempts: int = 5,
    reconnect_delay: float = 0.5,
) -> FrameSource:
    """Open a file, '-' (stdin), a camera ('cam0', '1', '/dev/video0') or a stream URL; InputError if unusable.

    ``live`` defaults to True for cameras and streams and False for files and stdin;
    ``reconnect_attempts`` bounds consecutive reopen tries of a live camera or stream that
    stops delivering (-1: no bound), with ``reconnect_delay`` seconds before the first,
    doubling after each up to 10 s.
    """
    cv2 = _cv2()
    cleanup = ExitStack()
    try:
        kind = _kind(spec)
        attempts = 0
        if kind == "camera":
            target, label = _camera_target(spec)
            api, params = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY, []
            what = f"camera {spec} could not be opened (no such device, or it is in use)"
            default_live = True
            attempts = reconnect_attempts  # a USB camera unplugged and plugged back, a driver reset
        elif kind == "stream":
            target, label = spec, urlsplit(spec).hostname or _mask_url(spec)
            api = cv2.CAP_FFMPEG
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, _STREAM_TIMEOUT_MS]
            what = f"stream {_mask_url(spec)} could not be opened (check the URL and that the server is up)"
            default_live = True
            attempts = reconnect_attempts
        elif kind == "stdin":
            target, label = _stdin_target(cleanup, spool_mp4=not live), "stdin"
            api, params = cv2.CAP_FFMPEG, []
            what = "stdin could not be read as a video (pipe a video file or an MPEG-TS/MKV stream into it)"
            default_live = False
        else:
            target, label = _file_target(spec), Path(spec).stem
            api, params = cv2.CAP_FFMPEG, []
            what = f"{spec}: not a video OpenCV/FFmpeg can read (unknown format, corrupt or truncated)"
            default_live = False

        def opener():
            return _open_capture(target, api, params, what)

        if default_live if live is None else live:
            return _LiveSource(label, opener, reconnect_attempts=attempts, reconnect_delay=reconnect_delay, cleanup=cleanup)
        return _SequentialSource(label, opener(), cleanup=cleanup)
    except BaseException:
        cleanup.close()
        raise


def check_source(spec: str) -> None:
    """Fail fast on a file that cannot be a video (missing, a folder, empty, unreadable) or a
    camera with no device node (Linux).

    Cheap and opens nothing, so the CLI can run it before loading models; a camera that exists
    but is busy, streams and stdin are only known once opened.
    """
    kind = _kind(spec)
    if kind == "file":
        _file_target(spec)
    elif kind == "camera":
        _camera_target(spec)


def expand_sources(specs: Iterable[str]) -> list[str]:
    """Expand folders and glob patterns to their video files (sorted); other specs pass through."""
    out: list[str] = []
    for spec in specs:
        if _kind(spec) != "file":
            files = [spec]
        elif os.path.isdir(os.path.expanduser(spec)):
            folder = Path(spec).expanduser()
            files = sorted(str(p) for p in folder.iterdir() if p.is_file() and _is_video_name(p.name))
            if not files:
                raise InputError(f"no video files in folder {spec} (looked for {_ext_list()})", option=OPTION)
        elif any(ch in spec for ch in "*?["):
            matches = glob.glob(os.path.expanduser(spec), recursive=True)
            files = sorted(m for m in matches if os.path.isfile(m) and _is_video_name(m))
            if not files:
                raise InputError(f"no video files match {spec}", option=OPTION)
        else:
            files = [spec]
        out.extend(f for f in files if f not in out)
    return out


def _kind(spec: str) -> str:
    """'stdin', 'camera', 'stream' or 'file'."""
    if spec == "-":
        return "stdin"
    if _CAMERA_RE.match(spec) or _DEVICE_RE.match(spec):
        return "camera"
    if _STREAM_RE.match(spec):
        return "stream"
    return "file"


def _camera_target(spec: str) -> tuple[int | str, str]:
    """(what OpenCV opens, label); InputError when the camera's device node is missing.

    A camera index means /dev/videoN to OpenCV's V4L2 backend, so on Linux a missing node is
    known without opening anything; elsewhere an index is only known once opened.
    """
    match = _CAMERA_RE.match(spec)
    if match:
        index = int(match.group(1) or match.group(2))
        target: int | str = index
        device = f"/dev/video{index}" if sys.platform.startswith("linux") else None
    else:
        index = int(_DEVICE_RE.match(spec).group(1))
        target = device = spec
    if device is not None and not os.path.exists(device):
        raise InputError(f"camera {spec}: no such device {device} ({_cameras_present()})", option=OPTION)
    return target, f"cam{index}"


def _cameras_present() -> str:
    found = sorted(glob.glob("/dev/video[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    if not found:
        return "no /dev/video* devices on this machine"
    return "cameras here: " + ", ".join(f"cam{p[len('/dev/video'):]}" for p in found)


def _file_target(spec: str) -> str:
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"video file not found: {spec}", option=OPTION)
    if path.is_dir():
        raise InputError(f"{spec} is a folder: give a video file (folders are expanded in batch mode)", option=OPTION)
    if path.is_file() and path.stat().st_size == 0:  # a named pipe has no size: let it through
        raise InputError(f"{spec} is empty (0 bytes)", option=OPTION)
    if not os.access(path, os.R_OK):
        raise InputError(f"{spec} is not readable (permission denied)", option=OPTION)
    return str(path)


def _stdin_target(cleanup: ExitStack, *, spool_mp4: bool) -> str:
    """What FFmpeg should open for stdin: a spooled copy of an MP4, or a pipe fed with stdin."""
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    if stdin is None or stdin.isatty():
        raise InputError("stdin is not a pipe: pipe a video into it, e.g. `cat clip.mp4 | ... --source -`", option=OPTION)
    head = stdin.read(_SNIFF_BYTES)
    if not head:
        raise InputError("stdin is empty: nothing was piped in", option=OPTION)
    if spool_mp4 and head[4:8] == b"ftyp":
        # An ordinary MP4 keeps its index at the end; read through a pipe it silently yields
        # zero frames, so the decoder needs a seekable copy.
        fd, path = tempfile.mkstemp(prefix="summarizer-stdin-", suffix=".mp4")
        cleanup.callback(_remove_quietly, path)
        with os.fdopen(fd, "wb") as spool:
            spool.write(head)
            shutil.copyfileobj(stdin, spool, 1 << 20)
        return path
    # Streamable containers (MPEG-TS, MKV, AVI, fragmented MP4): feed FFmpeg through a pipe
    # of our own, because the sniffed bytes cannot be pushed back into stdin.
    read_fd, write_fd = os.pipe()
    cleanup.callback(_close_quietly, read_fd)
    threading.Thread(target=_feed_pipe, args=(head, stdin, write_fd), name="stdin-feeder", daemon=True).start()
    return f"/dev/fd/{read_fd}"


def _feed_pipe(head: bytes, stdin, write_fd: int) -> None:
    """Copy stdin into the decoder's pipe until either side closes."""
    try:
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            out.write(head)
            while chunk := stdin.read1(1 << 16):
                out.write(chunk)
    except OSError:
        pass  # the source was closed before stdin ended: nothing left to feed


def _open_capture(target: int | str, api: int, params: list[int], what: str):
    """A cv2.VideoCapture that is open, or InputError(what)."""
    cv2 = _cv2()
    with _quiet_opencv(cv2):
        cap = cv2.VideoCapture(target, api, params)
    if not cap.isOpened():
        cap.release()
        raise InputError(what, option=OPTION)
    if isinstance(target, int) or str(target).startswith("/dev/video"):
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # best effort: fewer frames queued in the driver
    return cap


def _fps(cap) -> float | None:
    fps = cap.get(_cv2().CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None


def _cv2():
    """OpenCV, imported on first use with FFmpeg's console logging off: our errors say what failed."""
    # FFmpeg reads this once, when OpenCV first uses it; set OPENCV_FFMPEG_LOGLEVEL to see its logs.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


@contextmanager
def _quiet_opencv(cv2) -> Iterator[None]:
    """Silence OpenCV's own warnings while probing backends (a missing camera logs several)."""
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(old)


def _mask_url(url: str) -> str:
    """The URL with any password replaced, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _ext_list() -> str:
    return ", ".join(sorted(VIDEO_EXTENSIONS))


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
