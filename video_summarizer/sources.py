"""Frame sources: video files, stdin pipes, cameras and network streams, as iterables of frames.

Files (and non-live pipes) are read in order with ``grab()`` only; a frame's pixels are
converted (``retrieve()``) the first time ``frame.image`` is read, so frames the selector
skips on time cost no colour conversion. Live sources (cameras, streams, ``live=True``)
run a reader thread that keeps draining the device, so what the loop gets is always the
newest frame, never one that sat in a driver or network buffer.

Everything that can be known about an input is checked in ``open_source`` (the first frame
is decoded there and kept), so a bad input is one ``InputError`` before any model loads.
Labels (``source_label``, ``unique_labels``) name a source in logs, statistics, output
names and Langfuse ids: ``cam0``, ``stdin``, a file's stem, a stream's host and path.

OpenCV is imported on first use, never at import time.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from video_summarizer.errors import InputError
from video_summarizer.redact import redact_url
from video_summarizer.limits import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_STDIN_MAX_MB,
    MAX_PIXELS_OPTION,
    image_pixels_problem,
    pixels_problem,
)
from video_summarizer.source_specs import (  # re-exported: the CLI imports sources only
    OPTION,
    SNIFF_BYTES,
    VIDEO_EXTENSIONS,
    camera_target,
    check_source,
    expand_sources,
    file_target,
    kind_of,
    not_a_video,
    source_label,
    stream_problem,
    unique_labels,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Frame", "FrameSource", "InputError", "VIDEO_EXTENSIONS", "check_source", "expand_sources", "open_source",
    "source_label", "unique_labels",
]

log = logging.getLogger(__name__)

# Network reads must not hang the reader thread forever on a dead server.
_STREAM_TIMEOUT_MS = 5000
_MAX_RECONNECT_DELAY_S = 10.0
# Still images FFmpeg opens as one-frame "videos" (at a made-up 25 fps). GIF is left out: it animates.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
# Below this share of the stated length decoded, a file counts as truncated (VFR estimates are
# close; a cut file is far off).
_TRUNCATED_SHARE = 0.98


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

    content_path: str | None = None  # the file opened (files and images only): --dataset hashes it

    def __init__(self, label: str, *, live: bool, cleanup: ExitStack, kind: str = "file") -> None:
        self.label = label
        self.live = live
        self.kind = kind  # "file", "image", "stdin", "camera" or "stream"
        self.fps: float | None = None  # None for still images and where the container states none
        self.frames_expected: int | None = None  # files: frames the container states; None when unknown
        self.ended = False  # files/stdin: the input itself ended (not stop()); only then is `truncated` known
        self.frames_read = 0  # frames grabbed (and so decoded) from the decoder/device
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

    @property
    def frame_count(self) -> int | None:
        """Frames the container states (same as frames_expected; for progress bars)."""
        return self.frames_expected

    @property
    def truncated(self) -> bool:
        """Whether the input ended well before its stated length; known once iteration has ended."""
        return False

    def describe(self) -> str:
        """What this source is, for the start-up line: 'video file, 29.97 fps, 444 frames', 'still image'."""
        if self.kind == "image":
            return "still image (1 frame)"
        what = {"file": "video file", "stdin": "video on stdin", "camera": "camera", "stream": "stream"}[self.kind]
        if self.live and self.kind in ("file", "stdin"):
            what += " (live)"
        parts = [what]
        if self.fps:
            parts.append(f"{self.fps:.2f} fps")
        if self.frames_expected:
            parts.append(f"{self.frames_expected} frames")
        return ", ".join(parts)

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

    def __init__(self, label: str, cap, *, cleanup: ExitStack, kind: str, no_frame: str,
                 path: str | None = None) -> None:
        super().__init__(label, live=False, cleanup=cleanup, kind=kind)
        self._cap = cap
        self._path = path  # a file's own path: its container can say whether it is whole
        cleanup.callback(cap.release)
        cv2 = _cv2()
        self._pos_msec_prop = cv2.CAP_PROP_POS_MSEC
        if kind == "image":
            self.frames_expected = 1  # FFmpeg's 25 fps for an image is made up: no fps at all
        else:
            self.fps = _fps(cap)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)  # meaningless for pipes (0, or -1e15 for TS)
            self.frames_expected = int(count) if math.isfinite(count) and 0 < count < 1e12 else None
        # Grab (and so decode) the first frame now so an undecodable input fails in open_source,
        # not after the models load; frames() yields this frame first.
        if not cap.grab():
            raise InputError(no_frame, option=OPTION)
        self._position = 0  # index of the frame the decoder currently holds
        self._first_pending = True
        self._last_ts = 0.0
        self._whole: bool | None = None  # known once asked (the file is read for it once)

    def frames(self) -> Iterator[Frame]:
        """Yield every frame (grab only) until the input ends or stop() is called."""
        while not self._stop.is_set():
            if self._first_pending:
                self._first_pending = False
            elif self._cap.grab():
                self._position += 1
            else:
                self.ended = True  # end of input, or a truncated file: `truncated` tells which
                return
            self.frames_read += 1
            index = self._position
            yield Frame(index, self._timestamp(index), time.time(), decode=lambda i=index: self._retrieve(i))

    @property
    def truncated(self) -> bool:
        """Whether the input ended well before its stated frame count (and its stated duration)."""
        expected = self.frames_expected
        if not self.ended or not expected or self.frames_read >= expected * _TRUNCATED_SHARE - 1:
            return False
        # Where the count is duration x fps (WebM, MKV), a variable frame rate gives fewer
        # frames than stated: reaching the stated duration means the file is whole.
        if self.fps and self._last_ts + 1.0 / self.fps >= expected / self.fps * _TRUNCATED_SHARE:
            return False
        # That duration is the longest stream's: an audio track may outlast the video. A
        # Matroska file that holds every byte it states was read to its end.
        if self._whole is None:
            from video_summarizer.containers import matroska_whole

            self._whole = bool(self._path and matroska_whole(self._path))
        return not self._whole

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
        kind: str,
        no_frame: str,
        join_timeout_s: float,
    ) -> None:
        super().__init__(label, live=True, cleanup=cleanup, kind=kind)
        self._opener = opener
        self._reconnect_attempts = max(-1, reconnect_attempts)  # -1: no bound
        self._reconnect_delay = reconnect_delay
        cap = opener()
        self.fps = _fps(cap)
        # One frame proves the device really delivers (an opened camera can still be dead).
        if not cap.grab():
            cap.release()
            raise InputError(no_frame, option=OPTION)
        self.frames_read = 1
        self.frames_dropped = 1  # the probe frame: by the time anyone asks, it is stale
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._want = False  # a consumer is waiting: convert the next grabbed frame
        self._ended = False
        self._join_timeout_s = join_timeout_s
        # Started by the first frames() call, not here: the CLI opens a source before the models
        # load (bad input is said in a second), and a stream read meanwhile would be drained, its
        # frames dropped, before anyone asked for one.
        self._cap: object | None = cap
        self._thread = threading.Thread(target=self._read_loop, args=(cap,), name=f"frames-{label}", daemon=True)
        cleanup.callback(self._join)

    def frames(self) -> Iterator[Frame]:
        """Yield the newest frame each time, blocking until one newer than the last arrives."""
        with self._cond:
            if self._cap is not None:
                self._cap = None
                self._thread.start()
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
        with self._cond:
            cap, self._cap = self._cap, None
        if cap is not None:  # never read: the reader thread that would release it never started
            cap.release()
            return
        # A blocked network read ends within the stream timeout; the thread releases the capture.
        self._thread.join(timeout=self._join_timeout_s)


def open_source(
    spec: str,
    *,
    live: bool | None = None,
    reconnect_attempts: int = 5,
    reconnect_delay: float = 0.5,
    label: str | None = None,
    timeout: float = _STREAM_TIMEOUT_MS / 1000.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    stdin_max_mb: float = DEFAULT_STDIN_MAX_MB,
) -> FrameSource:
    """Open a file, '-' (stdin), a camera ('cam0', '1', '/dev/video0') or a stream URL; InputError if unusable.

    The first frame is decoded here (and yielded first), so an empty, closed, unreadable,
    garbage or index-less input, an unreachable stream or a missing camera is one InputError
    naming --source before anything else (a model load) is done. ``live`` defaults to True for cameras and
    streams and False for files and stdin; ``reconnect_attempts`` bounds consecutive reopen
    tries of a live camera or stream that stops delivering (-1: no bound), with
    ``reconnect_delay`` seconds before the first, doubling after each up to 10 s. ``label``
    replaces ``source_label(spec)`` (the CLI passes ``unique_labels`` of all its sources);
    ``timeout`` bounds a stream's connect and each of its reads, in seconds. Frames over
    ``max_pixels`` (None: no bound) are refused from the image header or the container's
    stated size, before any is decoded; ``stdin_max_mb`` bounds what stdin may keep on disk.
    """
    cv2 = _cv2()
    cleanup = ExitStack()
    try:
        kind = kind_of(spec)
        if kind == "camera":
            how = _camera_opening(cv2, spec, reconnect_attempts, live)
        elif kind == "stream":
            how = _stream_opening(cv2, spec, reconnect_attempts, live, timeout)
        elif kind == "stdin":
            how = _stdin_opening(cv2, cleanup, live, stdin_max_mb, max_pixels)
        else:
            how = _file_opening(cv2, spec, live, max_pixels)
        label = label or source_label(spec)
        shown = {"stdin": "stdin", "stream": redact_url(spec)}.get(kind, spec)

        def opener():
            return _frame_size_checked(_open_capture(how.target, how.api, how.params, how.fail), shown, max_pixels)

        if how.default_live if how.live is None else how.live:
            source: FrameSource = _LiveSource(label, opener, reconnect_attempts=how.attempts,
                                              reconnect_delay=reconnect_delay, cleanup=cleanup, kind=how.kind,
                                              no_frame=how.no_frame, join_timeout_s=timeout + 1.0)
        else:
            source = _SequentialSource(label, opener(), cleanup=cleanup, kind=how.kind, no_frame=how.no_frame,
                                       path=how.target if how.kind == "file" else None)
        # The file opened (None for cameras, streams, stdin): --dataset hashes its content.
        source.content_path = spec if how.kind in ("file", "image") and spec != "-" else None
        return source
    except BaseException:
        cleanup.close()
        raise


@dataclass(frozen=True)
class _Opening:
    """How to open one input, and what to say when it does not open or gives no frame."""

    kind: str  # "file", "image", "stdin", "camera" or "stream"
    target: int | str  # what cv2.VideoCapture opens
    api: int  # the cv2.CAP_* backend
    params: list[int]
    fail: Callable[[float], str]  # the message for an open that failed after so many seconds
    no_frame: str
    live: bool | None  # as asked (None: the kind's default); a still image is never live
    default_live: bool
    attempts: int = 0  # reconnect attempts once frames stop (cameras and streams)


def _camera_opening(cv2, spec: str, reconnect_attempts: int, live: bool | None) -> _Opening:
    return _Opening(
        "camera", camera_target(spec), cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY, [],
        _said(f"camera {spec} could not be opened (no such camera, or in use by another program)"),
        f"camera {spec} opened, but sent no frame (in use, or not a capture device)", live, default_live=True,
        attempts=reconnect_attempts)  # a USB camera unplugged and plugged back, a driver reset


def _stream_opening(cv2, spec: str, reconnect_attempts: int, live: bool | None, timeout: float) -> _Opening:
    ms = max(1, int(timeout * 1000))

    def fail(elapsed: float) -> str:
        return f"stream {redact_url(spec)} could not be opened: {stream_problem(spec, elapsed, timeout)}"

    return _Opening(
        "stream", spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
        fail, f"stream {redact_url(spec)} answered, but sent no frame within {timeout:g} s (check the path)",
        live, default_live=True, attempts=reconnect_attempts)


def _stdin_opening(cv2, cleanup: ExitStack, live: bool | None, max_mb: float, max_pixels: int | None) -> _Opening:
    target, head = _stdin_target(cleanup, spool_mp4=not live, max_mb=max_mb)
    no_frame = ("stdin: no frame could be decoded from what was piped in (corrupt or cut short; "
                "pipe a whole video file, or an MPEG-TS/MKV stream)")
    if live and head[4:8] == b"ftyp":  # opens, then yields nothing: its index is still to come
        no_frame = not_a_video("stdin", head, live=True)
    fail = _said(not_a_video("stdin", head, live=bool(live)))
    kind = "stdin"
    if _is_image(head):
        kind, live = "image", False
        _check_image(target, "stdin", max_pixels)
    return _Opening(kind, target, cv2.CAP_FFMPEG, [], fail, no_frame, live, default_live=False)


def _file_opening(cv2, spec: str, live: bool | None, max_pixels: int | None) -> _Opening:
    target, head = file_target(spec)
    kind = "file"
    if _is_image(head):
        kind, live = "image", False  # one frame: nothing to drain, no frame rate
        _check_image(target, spec, max_pixels)
    return _Opening(kind, target, cv2.CAP_FFMPEG, [], _said(not_a_video(spec, head, live=bool(live))),
                    f"{spec}: no frame could be decoded (corrupt, truncated or not a video)", live,
                    default_live=False)


def _check_image(path: str, name: str, max_pixels: int | None) -> None:
    """A still image over max_pixels is refused from its header: FFmpeg decodes it whole when it opens it."""
    try:
        problem = image_pixels_problem(path, max_pixels)
    except (ValueError, OSError):
        return  # not for Pillow to judge: FFmpeg says whether it is an image at all
    if problem:
        raise InputError(f"{name}: the image is {problem}; give a larger {MAX_PIXELS_OPTION} to read it",
                         option=MAX_PIXELS_OPTION)


def _frame_size_checked(cap, name: str, max_pixels: int | None):
    """The capture, unless the size the container states is over max_pixels (checked before the first grab)."""
    cv2 = _cv2()
    problem = pixels_problem(cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), max_pixels)
    if problem:
        cap.release()
        raise InputError(f"{name}: its frames are {problem}; give a larger {MAX_PIXELS_OPTION} to read it",
                         option=MAX_PIXELS_OPTION)
    return cap


def _said(message: str) -> Callable[[float], str]:
    return lambda elapsed: message


def _is_image(head: bytes) -> bool:
    return head.startswith(_IMAGE_MAGIC) or head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _stdin_target(cleanup: ExitStack, *, spool_mp4: bool, max_mb: float) -> tuple[str, bytes]:
    """(what FFmpeg should open for stdin: a spooled copy of an MP4 or an image, or a pipe fed with stdin; its first bytes)."""
    example = "pipe a video into it, e.g. `cat clip.mp4 | ... --source -`"
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    if stdin is None:
        raise InputError(f"stdin is closed: {example}", option=OPTION)
    if stdin.isatty():
        raise InputError(f"stdin is not a pipe: {example}", option=OPTION)
    try:
        head = stdin.read(SNIFF_BYTES)
    except OSError as e:  # fd 0 closed under Python's feet, or not readable
        raise InputError(f"stdin cannot be read ({e.strerror or e}): {example}", option=OPTION) from e
    if not head:
        raise InputError(f"stdin is empty: nothing was piped in ({example})", option=OPTION)
    if spool_mp4 and head[4:8] == b"ftyp" or _is_image(head):
        # An ordinary MP4 keeps its index at the end; read through a pipe it silently yields
        # zero frames, so the decoder needs a seekable copy. An image is copied too, so its
        # size can be read from its header before FFmpeg decodes it.
        return _spool(stdin, head, cleanup, ".mp4" if head[4:8] == b"ftyp" else ".img", max_mb), head
    # Streamable containers (MPEG-TS, MKV, AVI, fragmented MP4): feed FFmpeg through a pipe
    # of our own, because the sniffed bytes cannot be pushed back into stdin.
    read_fd, write_fd = os.pipe()
    cleanup.callback(_close_quietly, read_fd)
    threading.Thread(target=_feed_pipe, args=(head, stdin, write_fd), name="stdin-feeder", daemon=True).start()
    return f"/dev/fd/{read_fd}", head


def _spool(stdin, head: bytes, cleanup: ExitStack, suffix: str, max_mb: float) -> str:
    """Copy stdin into a private temporary file of at most max_mb; InputError past it (the file removed)."""
    fd, path = tempfile.mkstemp(prefix="summarizer-stdin-", suffix=suffix)
    cleanup.callback(_remove_quietly, path)
    limit = int(max_mb * 2**20)
    written = 0
    try:
        with os.fdopen(fd, "wb") as spool:
            chunk = head
            while chunk:
                written += len(chunk)
                if written > limit:
                    break
                spool.write(chunk)
                chunk = stdin.read1(1 << 20)
    except OSError as e:  # a full or read-only temporary folder
        raise InputError(f"stdin could not be copied to {path}: {e.strerror or e} (set TMPDIR to a folder "
                         "with room)", option=OPTION) from e
    if written > limit:
        _remove_quietly(path)  # now, not at exit: the disk is what this bound protects
        raise InputError(
            f"stdin: more than {max_mb:g} MB piped in, and an MP4 or an image on stdin is copied to a "
            "temporary file before it is read; give a larger --stdin-max-mb, or pipe a stream that is "
            "read as it comes (MPEG-TS or MKV: ffmpeg -i IN -c copy -f mpegts -)", option="--stdin-max-mb")
    return path


def _feed_pipe(head: bytes, stdin, write_fd: int) -> None:
    """Copy stdin into the decoder's pipe until either side closes."""
    try:
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            out.write(head)
            while chunk := stdin.read1(1 << 16):
                out.write(chunk)
    except OSError:
        pass  # the source was closed before stdin ended: nothing left to feed


def _open_capture(target: int | str, api: int, params: list[int], fail: Callable[[float], str]):
    """A cv2.VideoCapture that is open, or InputError(fail(seconds the attempt took))."""
    cv2 = _cv2()
    started = time.monotonic()
    with _quiet_opencv(cv2):
        cap = cv2.VideoCapture(target, api, params)
    if not cap.isOpened():
        cap.release()
        raise InputError(fail(time.monotonic() - started), option=OPTION)
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
