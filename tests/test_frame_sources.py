"""Frame sources against real decoding: the shared clips, generated clips (whole, cut, still images),
stdin pipes, a paced live pipe, HTTP streams, and bad input found at open."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.clip_server import ClipServer
from video_summarizer.errors import InputError
from video_summarizer.sources import Frame, FrameSource, open_source, source_label, unique_labels

REPO_ROOT = Path(__file__).resolve().parent.parent

# file, frames, fps (data README)
CLIPS = [
    ("short_hamilton_clip.mp4", 275, 29.97),
    ("ff-region-face-motion.avi", 101, 30.0),
    ("video_01.mp4", 90, 29.97),
    ("h264_aac.mp4", 31, 29.97),
    ("vp8_opus.webm", 31, 29.97),
    ("clip_01_tears_of_steel.mp4", 240, 24.0),
    ("clip_02_caminandes.mp4", 240, 24.0),
]


def _read_all(path: Path, decode: set[int] = frozenset()) -> tuple[FrameSource, list[Frame], dict[int, np.ndarray]]:
    images = {}
    frames = []
    with open_source(str(path)) as src:
        for frame in src:
            frames.append(frame)
            if frame.index in decode:
                images[frame.index] = frame.image
    return src, frames, images


def _stripes(index: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame whose 8 horizontal stripes spell index in binary (robust to JPEG)."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    band = height // 8
    for bit in range(8):
        if index >> bit & 1:
            image[bit * band:(bit + 1) * band] = 255
    return image


def _read_stripes(image: np.ndarray) -> int:
    band = image.shape[0] // 8
    return sum(1 << bit for bit in range(8) if image[bit * band + band // 2, image.shape[1] // 2, 0] > 127)


def _write_mjpg(path: Path, count: int, fps: float = 30.0) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    for i in range(count):
        writer.write(_stripes(i))
    writer.release()
    return path.read_bytes()


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,count,fps", CLIPS)
def test_file_yields_every_frame_with_video_timestamps(data_dir, name, count, fps):
    src, frames, _ = _read_all(data_dir / "videos" / name)
    assert src.label == Path(name).stem
    assert src.live is False
    assert src.fps == pytest.approx(fps, abs=0.01)
    assert src.frame_count == src.frames_expected == count
    assert src.ended and not src.truncated and src.kind == "file"
    assert src.describe() == f"video file, {fps:.2f} fps, {count} frames"
    assert [f.index for f in frames] == list(range(count))
    assert src.frames_read == count and src.frames_dropped == 0
    # Timestamps are video time (webm stores whole milliseconds), not wall clock.
    for f in frames:
        assert f.timestamp == pytest.approx(f.index / fps, abs=0.0015)
    assert not any(f.decoded for f in frames)  # grab only: nobody asked for pixels


def test_image_is_decoded_lazily_and_only_while_current(data_dir):
    with open_source(str(data_dir / "videos" / "clip_01_tears_of_steel.mp4")) as src:
        it = iter(src)
        first = next(it)
        assert not first.decoded
        image = first.image
        assert first.decoded and image.shape == (360, 640, 3) and image.dtype == np.uint8
        assert first.image is image  # cached, not decoded twice
        second = next(it)
        third = next(it)
        with pytest.raises(RuntimeError, match="frame 1 .* is gone"):
            second.image
        assert third.image.shape == (360, 640, 3)


def test_codecs_agree_frame_by_frame(data_dir):
    def thumbs(name):
        _, frames, images = _read_all(data_dir / "videos" / name, decode=set(range(40)))
        small = [cv2.resize(images[i], (160, 120), interpolation=cv2.INTER_AREA).astype(np.int16) for i in sorted(images)]
        return [f.timestamp for f in frames], small

    ts_h264, h264 = thumbs("h264_aac.mp4")
    ts_vp8, vp8 = thumbs("vp8_opus.webm")
    _, original = thumbs("video_01.mp4")
    assert len(h264) == len(vp8) == 31
    assert ts_vp8 == pytest.approx(ts_h264, abs=0.001)
    for i in range(31):
        diffs = [float(np.abs(vp8[i] - other).mean()) for other in h264]
        assert int(np.argmin(diffs)) == i and diffs[i] < 8, (i, diffs[i])
        # Both re-encodes repeat video_01's first frame once, then follow it one frame behind.
        to_original = [float(np.abs(h264[i] - other).mean()) for other in original]
        assert int(np.argmin(to_original)) == max(0, i - 1) and min(to_original) < 8, i


def test_truncated_faststart_mp4_yields_what_it_can(data_dir, tmp_path):
    full = (data_dir / "videos" / "video_01.mp4").read_bytes()  # index at the front
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    src, frames, images = _read_all(cut, decode={0})
    assert 10 < len(frames) < 90
    assert src.frames_expected == 90 and src.frames_read == len(frames) and src.truncated
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[-1].timestamp == pytest.approx((len(frames) - 1) / 29.97, abs=0.002)
    _, _, reference = _read_all(data_dir / "videos" / "video_01.mp4", decode={0})
    assert np.array_equal(images[0], reference[0])


def test_stop_ends_file_iteration(data_dir):
    with open_source(str(data_dir / "videos" / "short_hamilton_clip.mp4")) as src:
        seen = []
        for frame in src:
            seen.append(frame.index)
            if frame.index == 4:
                src.stop()
    assert seen == [0, 1, 2, 3, 4]
    assert src.stopped
    assert not src.ended and not src.truncated  # stopped early: the file's length was never tested


# --- bad inputs --------------------------------------------------------------------------


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(path: Path, fourcc: str, count: int = 100, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (160, 120))
    for i in range(count):
        writer.write(_stripes(i))
    writer.release()
    return path


def _cut(path: Path, share: float, name: str) -> Path:
    data = path.read_bytes()
    out = path.with_name(name)
    out.write_bytes(data[: int(len(data) * share)])
    return out


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Generated bad inputs: (spec, words the message must hold)."""
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 200_000, np.uint8).tobytes())
    # VideoWriter's MP4 keeps its index (moov) at the end: the first 40 % has none, nothing decodes.
    _cut(_write(tmp_path / "whole.mp4", "mp4v"), 0.4, "no-index.mp4")
    (tmp_path / "folder").mkdir()
    port = _closed_port()
    return {
        "missing": (str(tmp_path / "nope.mp4"), "not found"),
        "zero-byte": (str(tmp_path / "zero.mp4"), "is empty (0 bytes)"),
        "non-video": (str(tmp_path / "notes.mp4"), "notes.mp4: not a video OpenCV/FFmpeg can read"),
        "random bytes": (str(tmp_path / "noise.mp4"), "noise.mp4: not a video"),
        "index missing": (str(tmp_path / "no-index.mp4"), "no-index.mp4: an MP4/MOV whose index (moov) is missing"),
        "folder": (str(tmp_path / "folder"), "folder"),
        "camera index": ("7", "camera 7"),
        "camera name": ("cam9", "camera cam9"),
        "camera device": ("/dev/video9", "/dev/video9"),
        "stream down": ("http://viewer:s3cret@127.0.0.1:9/live.webm", "could not be opened"),
        "stream refused": (f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam1?token=s3cret",
                           f"stream rtsp://viewer:***@127.0.0.1:{port}/cam1?token=*** could not be opened: "
                           f"127.0.0.1:{port} refused the connection"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "zero-byte", "non-video", "random bytes", "index missing", "folder", "camera index", "camera name",
     "camera device", "stream down", "stream refused"],
)
def test_bad_input_raises_input_error_naming_the_option(tmp_path, case, capfd):
    spec, words = _bad_inputs(tmp_path)[case]
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        open_source(spec)
    took = time.monotonic() - started
    message = str(info.value)
    assert info.value.option == "--source"
    assert words in message and "\n" not in message, message
    assert "s3cret" not in message  # stream passwords and query tokens are masked
    assert took < 1.0, took  # known at open, before any model would load
    # No OpenCV warnings on the console: the error says it all. (FFmpeg's own lines are
    # quieted only if frame_sources opened the first video of the process.)
    err = capfd.readouterr().err
    assert "[ WARN" not in err and "[ERROR" not in err, err


def test_truncated_shared_mp4_without_index_is_an_input_error(tmp_path, data_dir):
    hamilton = (data_dir / "videos" / "short_hamilton_clip.mp4").read_bytes()  # index at the end
    (tmp_path / "truncated.mp4").write_bytes(hamilton[: len(hamilton) // 2])
    with pytest.raises(InputError, match=r"truncated\.mp4: an MP4/MOV whose index \(moov\) is missing") as info:
        open_source(str(tmp_path / "truncated.mp4"))
    assert "truncated" in str(info.value).split(":", 1)[1]  # the message says what probably happened


def _open_as(uid: int, spec: str) -> str:
    """'option | message' of the InputError open_source raises in a forked child running as uid."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try, report, exit without running pytest's cleanup
        try:
            os.close(read_fd)
            os.setgid(uid)
            os.setuid(uid)
            try:
                open_source(spec).close()
                said = "opened"
            except InputError as e:
                said = f"{e.option} | {e}"
            os.write(write_fd, said.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


def test_unreadable_file_is_an_input_error(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="unreadable-", dir="/tmp"))  # a folder nobody may enter
    try:
        folder.chmod(0o755)
        clip = _write(folder / "locked.avi", "MJPG", count=5)
        clip.chmod(0o000)
        if os.geteuid() == 0:  # root reads any file whatever its mode: try as nobody
            said = _open_as(65534, str(clip))
        else:
            with pytest.raises(InputError) as info:
                open_source(str(clip))
            said = f"{info.value.option} | {info.value}"
        assert said == f"--source | {clip} is not readable (Permission denied): check its permissions"
    finally:
        shutil.rmtree(folder)


# --- truncated files and still images ----------------------------------------------------


def test_a_cut_file_says_it_is_truncated_and_how_far_it_got(tmp_path):
    # An AVI (MJPG) states its frame count in the header at the front, and its frames read in
    # order without the index at the end: the first 40 % still opens and decodes.
    whole = _write(tmp_path / "whole.avi", "MJPG", count=100)
    cut = _cut(whole, 0.4, "cut.avi")
    src, frames, _ = _read_all(whole)
    assert (src.frames_expected, src.frames_read, src.ended, src.truncated) == (100, 100, True, False)
    with open_source(str(cut)) as src:
        assert src.frames_expected == 100 and not src.truncated  # not known before the end
        numbers = [(f.index, _read_stripes(f.image), f.timestamp) for f in src]
    assert 25 <= len(numbers) <= 55, len(numbers)
    assert [n[0] for n in numbers] == [n[1] for n in numbers] == list(range(len(numbers)))
    assert numbers[-1][2] == pytest.approx((len(numbers) - 1) / 30.0, abs=0.002)
    assert src.ended and src.truncated and src.frames_read == len(numbers) and src.frames_expected == 100
    # A file cut just short of its end (the last frame's bytes) is not called truncated.
    with open_source(str(_cut(whole, 0.995, "nearly.avi"))) as src:
        read = sum(1 for _ in src)
    assert read >= 98 and src.ended and not src.truncated


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_a_still_image_is_one_frame_without_a_frame_rate(tmp_path, ext, caplog):
    blocks = np.random.default_rng(3).integers(0, 256, (6, 8, 3), np.uint8)
    image = np.kron(blocks, np.ones((20, 20, 1), np.uint8))  # flat 20 px blocks: JPEG keeps them close
    path = tmp_path / f"still{ext}"
    cv2.imwrite(str(path), image)
    with open_source(str(path)) as src:
        frames = [(f.index, f.timestamp, f.image) for f in src]
    assert src.kind == "image" and src.fps is None and src.frames_expected == 1 and src.live is False
    assert src.describe() == "still image (1 frame)" and src.label == "still"
    assert [(i, ts) for i, ts, _ in frames] == [(0, 0.0)]
    # FFmpeg decodes it, not cv2.imread: JPEG decoders differ by a grey level or two; PNG is exact.
    diff = np.abs(frames[0][2].astype(int) - image.astype(int)).mean()
    assert diff < 3 if ext == ".jpg" else diff == 0, diff
    assert src.ended and not src.truncated


# --- stdin -------------------------------------------------------------------------------

_CHILD = r"""
import glob, hashlib, json, os, sys, tempfile, time
from video_summarizer.sources import open_source
live = sys.argv[1] == "live"
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
out = {"frames": []}
spool = os.path.join(tempfile.gettempdir(), "summarizer-stdin-*")
with open_source("-", live=live) as src:
    out.update(label=src.label, live=src.live, spooled=len(glob.glob(spool)))
    asked = time.time()
    for f in src:
        img = f.image
        out["frames"].append([f.index, f.timestamp, hashlib.md5(img.tobytes()).hexdigest(), asked, f.captured_at])
        time.sleep(pause)
        asked = time.time()
out.update(read=src.frames_read, dropped=src.frames_dropped, spooled_after=len(glob.glob(spool)))
print(json.dumps(out))
"""


def _run_child(stdin, tmp_path: Path, *args: str, timeout: float = 30) -> dict:
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], stdin=stdin, capture_output=True, cwd=REPO_ROOT, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name,spooled", [("short_hamilton_clip.mp4", 1), ("vp8_opus.webm", 0)])
def test_stdin_pipe_gives_the_same_frames_as_the_file(data_dir, tmp_path, name, spooled):
    path = data_dir / "videos" / name
    with open_source(str(path)) as src:
        expected = [(f.index, f.timestamp, hashlib.md5(f.image.tobytes()).hexdigest()) for f in src]
    # A real pipe (`cat clip | ...`), not a file redirect: the decoder cannot seek it.
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    try:
        out = _run_child(cat.stdout, tmp_path, "file")
    finally:
        cat.stdout.close()
        cat.wait()
    assert out["label"] == "stdin" and out["live"] is False
    # An MP4 is spooled to a temporary file (deleted on close); webm streams straight through.
    assert out["spooled"] == spooled and out["spooled_after"] == 0
    got = [(i, ts, digest) for i, ts, digest, _, _ in out["frames"]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)
    assert [g[2] for g in got] == [e[2] for e in expected]


_STDIN_CHILD = r"""
import os, sys, time
from video_summarizer.errors import InputError
from video_summarizer.sources import open_source
import cv2  # imported before the clock starts: a CLI has it loaded by then too
started = time.monotonic()
try:
    open_source("-", live=sys.argv[1] == "live").close()
    print("opened")
except InputError as e:
    print(e.option, "|", e)
print(f"{time.monotonic() - started:.3f}")
"""


def _stdin_error(stdin, *, live: bool = False, close_stdin: bool = False, data: bytes | None = None) -> tuple[str, float]:
    """What open_source('-') says in a child, and how long it took."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _STDIN_CHILD, "live" if live else "file"], stdin=stdin, input=data,
        capture_output=True, text=data is None, env=env, timeout=60,
        preexec_fn=(lambda: os.close(0)) if close_stdin else None,
    )
    out = proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout
    assert proc.returncode == 0, proc.stderr
    said, took = out.strip().rsplit("\n", 1)
    return said, float(took)


_PIPE_EXAMPLE = "pipe a video into it, e.g. `cat clip.mp4 | ... --source -`"


def test_empty_stdin_is_an_input_error(tmp_path):
    said, took = _stdin_error(subprocess.DEVNULL)  # /dev/null: as empty as `cat missing.mp4 |`
    assert said == f"--source | stdin is empty: nothing was piped in ({_PIPE_EXAMPLE})"
    assert took < 1.0


def test_closed_stdin_is_an_input_error():
    said, took = _stdin_error(subprocess.DEVNULL, close_stdin=True)  # no fd 0 at all (a daemon, `<&-`)
    assert said == f"--source | stdin is closed: {_PIPE_EXAMPLE}"
    assert took < 1.0


@pytest.mark.parametrize("case", ["text", "random bytes", "mp4 without index", "mp4, live"])
def test_garbage_on_stdin_is_an_input_error_at_open(tmp_path, case):
    whole = _write(tmp_path / "whole.mp4", "mp4v").read_bytes()
    if case == "mp4, live":  # bigger than FFmpeg's read-ahead, which lets a small MP4 through a pipe
        writer = cv2.VideoWriter(str(tmp_path / "big.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (160, 120))
        rng = np.random.default_rng(1)
        for _ in range(100):
            writer.write(rng.integers(0, 256, (120, 160, 3), np.uint8))
        writer.release()
        whole = (tmp_path / "big.mp4").read_bytes()
        assert len(whole) > 400_000
    data, words = {
        "text": (b"hello, not a video\n" * 200, "stdin: what was piped in is not a video OpenCV/FFmpeg can read"),
        "random bytes": (np.random.default_rng(5).integers(0, 256, 300_000, np.uint8).tobytes(),
                         "stdin: what was piped in is not a video"),
        "mp4 without index": (whole[: len(whole) * 4 // 10], "stdin: an MP4/MOV whose index (moov) is missing"),
        "mp4, live": (whole, "stdin: an MP4 cannot be read live through a pipe"),
    }[case]
    said, took = _stdin_error(None, data=data, live=case.endswith("live"))
    assert said.startswith(f"--source | {words}"), said
    assert took < 1.0


def test_stdin_keeps_the_frame_decoded_at_open(tmp_path):
    # open_source decodes the first frame to prove the input; iteration must still start with it.
    clip = _write(tmp_path / "numbered.avi", "MJPG", count=12, fps=10.0)
    cat = subprocess.Popen(["cat", str(clip)], stdout=subprocess.PIPE)
    try:
        out = _run_child(cat.stdout, tmp_path, "file")
    finally:
        cat.stdout.close()
        cat.wait()
    assert [(i, round(ts, 3)) for i, ts, _, _, _ in out["frames"]] == [(i, round(i / 10.0, 3)) for i in range(12)]
    assert out["read"] == 12 and out["spooled"] == 0  # an AVI streams through the pipe


# --- live --------------------------------------------------------------------------------


def _paced_writer(fifo: Path, data: bytes, count: int, fps: float, written_at: list[float], hold: threading.Event | None = None):
    """Write an MJPEG AVI into a named pipe in real time: slice k carries (about) frame k."""

    def run():
        step = len(data) // count
        try:
            with open(fifo, "wb", buffering=0) as out:
                for k in range(count):
                    if hold is not None and k == 10:
                        hold.wait(10)
                    out.write(data[k * step:(k + 1) * step] if k < count - 1 else data[k * step:])
                    written_at.append(time.time())
                    time.sleep(1 / fps)
        except BrokenPipeError:
            pass  # the source was closed first: what a live producer sees when its reader quits

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_live_source_delivers_only_the_newest_frame(tmp_path):
    count, fps = 60, 30.0
    data = _write_mjpg(tmp_path / "clip.avi", count, fps)
    fifo = tmp_path / "paced.avi"
    os.mkfifo(fifo)
    written_at: list[float] = []
    writer = _paced_writer(fifo, data, count, fps, written_at)
    got = []
    with open_source(str(fifo), live=True) as src:
        assert src.live is True and src.label == "paced"
        asked = time.time()
        for frame in src:
            got.append((frame.index, _read_stripes(frame.image), asked, frame.captured_at, time.time()))
            time.sleep(0.2)  # a slow consumer: a caption takes a while
            asked = time.time()
    writer.join(5)
    indices = [g[0] for g in got]
    assert indices == sorted(set(indices)) and 5 <= len(got) <= 20
    assert max(b - a for a, b in zip(indices, indices[1:])) >= 4  # frames were skipped, not queued
    for k, (index, number, asked, captured, delivered) in enumerate(got):
        assert number == index % 256  # the pixels are the frame the index names
        assert captured >= asked - 0.001  # grabbed after the consumer asked
        assert delivered - captured < 0.3  # decoded and handed over, not queued
        # The newest: at most a few frames behind what the writer had put in the pipe by then.
        # (Not the first: FFmpeg's probe at open reads ahead, and that backlog is drained
        # by the reader thread only once it runs.)
        if k:
            # 6 frames (200 ms) of slack: with the other core busy the reader thread was seen 4
            # frames behind once; a queued (not newest-first) reader falls seconds behind.
            assert index >= sum(t <= asked for t in written_at) - 6, (index, asked)
    assert src.frames_read == count
    assert src.frames_dropped == count - len(got)
    assert isinstance(got[0][3], float) and abs(got[0][3] - time.time()) < 30  # wall clock, epoch seconds


def test_stop_wakes_a_consumer_waiting_on_a_live_source(tmp_path):
    data = _write_mjpg(tmp_path / "clip.avi", 30)
    fifo = tmp_path / "stalled.avi"
    os.mkfifo(fifo)
    hold = threading.Event()
    writer = _paced_writer(fifo, data, 30, 30.0, [], hold=hold)
    stopped_at = []
    with open_source(str(fifo), live=True) as src:
        def stop_later():
            time.sleep(0.8)  # by then the writer has stalled after 10 frames
            stopped_at.append(time.time())
            src.stop()

        threading.Thread(target=stop_later, daemon=True).start()
        seen = [frame.index for frame in src]
        ended_at = time.time()
        hold.set()  # let the writer finish so the reader thread ends too
    writer.join(5)
    assert seen and seen[-1] <= 10
    assert 0 <= ended_at - stopped_at[0] < 1.0  # the poll is 0.05 s; without the wake-up it would hang


def test_stream_reconnects_a_bounded_number_of_times(data_dir):
    clip = (data_dir / "videos" / "vp8_opus.webm").read_bytes()
    with ClipServer(clip, good=2, userinfo="viewer:s3cret@") as server:
        with open_source(server.url, reconnect_attempts=2, reconnect_delay=0.05) as src:
            assert src.live is True and src.label == "127.0.0.1-live" and src.kind == "stream"
            frames = list(src)
    # Play 1 ends -> reconnect 1 plays it again -> the count resets after a good frame ->
    # reconnects 2 and 3 get 503 -> the source ends after reconnect_attempts failures in a row.
    assert server.requests == 4 and src.reconnects == 3
    assert src.frames_read == 62
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[-1] > 31  # frames from after the reconnect
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))


def test_a_source_reopened_without_bound_comes_back_after_an_outage(data_dir, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.sources")
    indices = []
    with ClipServer((data_dir / "videos" / "vp8_opus.webm").read_bytes(), good=1, outage=5) as server:
        with open_source(server.url, reconnect_attempts=-1, reconnect_delay=0.01) as src:
            for frame in src:
                indices.append(frame.index)
                if frame.index > 40:  # well into the play after the outage
                    src.stop()
    # play 1 (31 frames), reopening attempts 1-5 get 503, attempt 6 plays the clip again
    assert indices[-1] > 40 and src.reconnects >= 6 and server.requests >= 7
    said = [r.getMessage() for r in caplog.records if r.name == "video_summarizer.sources"]
    assert said[:4] == ["127.0.0.1-live: no frames, reopening (attempt 1)",
                        "127.0.0.1-live: no frames, reopening (attempt 2)",
                        "127.0.0.1-live: no frames, reopening (attempt 3)",
                        "127.0.0.1-live: frames again after 6 reopening attempt(s)"], said


@pytest.mark.parametrize("case", ["503", "html 200", "404"])
def test_a_server_that_answers_without_a_video_is_an_input_error_at_open(tmp_path, case):
    clip = _write(tmp_path / "cam.avi", "MJPG", count=10).read_bytes()
    server = {
        "503": ClipServer(clip, good=0),
        "html 200": ClipServer(b"<html><body>Please log in</body></html>" * 20, good=9, content_type="text/html"),
        "404": ClipServer(clips={"/cam1/live.avi": clip}, good=9),
    }[case]
    with server:
        url = server.url if case != "404" else server.url_for("/cam9/live.avi")
        started = time.monotonic()
        with pytest.raises(InputError) as info:
            open_source(url, reconnect_attempts=0)
        took = time.monotonic() - started
    port = server.server_address[1]
    assert str(info.value) == (f"stream {url} could not be opened: 127.0.0.1:{port} answered, but not with a video "
                               "OpenCV/FFmpeg can read (check the path, the credentials, and that the camera is streaming)")
    assert info.value.option == "--source" and took < 1.0 and server.requests == 1


def test_a_stream_that_never_answers_fails_within_its_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cam1"
        started = time.monotonic()
        with pytest.raises(InputError) as info:
            open_source(url, timeout=1.0)
        took = time.monotonic() - started
    assert str(info.value) == (f"stream {url} could not be opened: no answer within 1 s "
                               "(check the URL, and that the server is up and reachable)")
    assert 0.9 <= took < 4.0, took


def test_two_cameras_behind_one_server_get_a_label_each_and_their_own_frames(tmp_path):
    # Two cameras of one recorder: same host, different paths; cam2 shows frames 100.. of the pattern.
    cam1 = _write(tmp_path / "cam1.avi", "MJPG", count=40).read_bytes()
    writer = cv2.VideoWriter(str(tmp_path / "cam2.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(40):
        writer.write(_stripes(100 + i))
    writer.release()
    cam2 = (tmp_path / "cam2.avi").read_bytes()
    with ClipServer(clips={"/nvr/cam1.avi": cam1, "/nvr/cam2.avi": cam2}, good=2, userinfo="admin:s3cret@") as server:
        specs = [server.url_for("/nvr/cam1.avi"), server.url_for("/nvr/cam2.avi"), server.url_for("/nvr/cam1.avi")]
        labels = unique_labels([source_label(spec) for spec in specs])
        assert labels == ["127.0.0.1-nvr-cam1", "127.0.0.1-nvr-cam2", "127.0.0.1-nvr-cam1-2"]
        seen: dict[str, list[int]] = {}
        with ExitStack() as stack:  # all three open at once, as in one run
            # Read in order (live=False) so every frame can be checked; live reading of a
            # stream is what the reconnect tests cover.
            sources = [stack.enter_context(open_source(spec, label=label, live=False)) for spec, label in zip(specs, labels)]
            assert [(s.label, s.kind) for s in sources] == [(label, "stream") for label in labels]
            for src in sources:
                seen[src.label] = [_read_stripes(f.image) for f in src]
    assert server.requests_by_path == {"/nvr/cam1.avi": 2, "/nvr/cam2.avi": 1}
    assert seen == {"127.0.0.1-nvr-cam1": list(range(40)), "127.0.0.1-nvr-cam2": list(range(100, 140)),
                    "127.0.0.1-nvr-cam1-2": list(range(40))}
