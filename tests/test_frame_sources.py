"""Frame sources against real decoding: the shared clips, stdin pipes, a paced live pipe, HTTP streams, bad inputs."""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.clip_server import ClipServer
from video_summarizer.errors import InputError
from video_summarizer.sources import (
    VIDEO_EXTENSIONS,
    Frame,
    FrameSource,
    expand_sources,
    open_source,
)

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
    assert src.frame_count == count
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


# --- bad inputs --------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path, data_dir: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    hamilton = (data_dir / "videos" / "short_hamilton_clip.mp4").read_bytes()  # index at the end
    (tmp_path / "truncated.mp4").write_bytes(hamilton[: len(hamilton) // 2])
    (tmp_path / "folder").mkdir()
    return {
        "missing": (str(tmp_path / "nope.mp4"), "not found"),
        "zero-byte": (str(tmp_path / "zero.mp4"), "empty"),
        "non-video": (str(tmp_path / "notes.mp4"), "not a video"),
        "truncated": (str(tmp_path / "truncated.mp4"), "truncated"),
        "folder": (str(tmp_path / "folder"), "folder"),
        "camera index": ("7", "camera 7"),
        "camera name": ("cam9", "camera cam9"),
        "camera device": ("/dev/video9", "/dev/video9"),
        "stream down": ("http://viewer:s3cret@127.0.0.1:9/live.webm", "could not be opened"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "zero-byte", "non-video", "truncated", "folder", "camera index", "camera name", "camera device", "stream down"],
)
def test_bad_input_raises_input_error_naming_the_option(tmp_path, data_dir, case, capfd):
    spec, words = _bad_inputs(tmp_path, data_dir)[case]
    with pytest.raises(InputError) as info:
        open_source(spec)
    message = str(info.value)
    assert info.value.option == "--source"
    assert words in message and "\n" not in message
    assert "s3cret" not in message  # stream passwords are masked
    # No OpenCV warnings on the console: the error says it all. (FFmpeg's own lines are
    # quieted only if frame_sources opened the first video of the process.)
    err = capfd.readouterr().err
    assert "[ WARN" not in err and "[ERROR" not in err, err


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


def test_empty_stdin_is_an_input_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    code = (
        "from errors import InputError\nfrom frame_sources import open_source\n"
        "try:\n    open_source('-')\nexcept InputError as e:\n    print(e.option, '|', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30)
    assert proc.stdout.strip() == "--source | stdin is empty: nothing was piped in"


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
            assert src.live is True and src.label == "127.0.0.1"
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
    assert said[:4] == ["127.0.0.1: no frames, reopening (attempt 1)",
                        "127.0.0.1: no frames, reopening (attempt 2)",
                        "127.0.0.1: no frames, reopening (attempt 3)",
                        "127.0.0.1: frames again after 6 reopening attempt(s)"], said


# --- expand_sources ----------------------------------------------------------------------


def test_expand_sources_folders_globs_and_passthrough(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("b.MP4", "a.avi", "c.webm", "notes.txt"):
        (clips / name).write_bytes(b"x")
    (clips / "sub").mkdir()
    (clips / "sub" / "d.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    specs = [str(clips), str(clips / "*.webm"), "cam0", "-", "rtsp://cam.local/stream", str(tmp_path / "one.mkv")]
    assert expand_sources(specs) == [
        str(clips / "a.avi"), str(clips / "b.MP4"), str(clips / "c.webm"),  # sorted, deduplicated
        "cam0", "-", "rtsp://cam.local/stream", str(tmp_path / "one.mkv"),
    ]
    assert expand_sources([str(clips / "**" / "*.mp4")]) == [str(clips / "sub" / "d.mp4")]  # globs match case as the OS does
    assert ".mp4" in VIDEO_EXTENSIONS and ".txt" not in VIDEO_EXTENSIONS
    with pytest.raises(InputError, match="no video files in folder") as info:
        expand_sources([str(tmp_path / "empty")])
    assert info.value.option == "--source"
    with pytest.raises(InputError, match="no video files match"):
        expand_sources([str(tmp_path / "*.mov")])


def test_check_source_fails_fast_on_files_and_missing_cameras(tmp_path, monkeypatch):
    from video_summarizer.sources import check_source

    (tmp_path / "empty.mp4").write_bytes(b"")
    for bad, words in ((tmp_path / "missing.mp4", "not found"), (tmp_path / "empty.mp4", "empty"),
                       (tmp_path, "is a folder")):
        with pytest.raises(InputError, match=words) as info:
            check_source(str(bad))
        assert info.value.option == "--source"
    for fine in ("-", "rtsp://example.invalid/stream"):
        check_source(fine)  # only known once opened
    present = sorted(int(p[len("/dev/video"):]) for p in glob.glob("/dev/video[0-9]*"))
    absent = next(i for i in range(7, 100) if i not in present)
    if sys.platform.startswith("linux"):  # a camera index is /dev/videoN to V4L2: known without opening it
        for spec in (f"cam{absent}", str(absent), f"/dev/video{absent}"):
            with pytest.raises(InputError) as info:
                check_source(spec)
            message = str(info.value)
            assert message.startswith(f"camera {spec}: no such device /dev/video{absent} (")
            assert info.value.option == "--source"
            if present:
                assert f"cameras here: cam{present[0]}" in message
            else:
                assert "no /dev/video* devices on this machine" in message
        for index in present:
            check_source(f"cam{index}")  # exists: whether it opens is known only when opened
    monkeypatch.setattr(sys, "platform", "darwin")  # no device nodes to look at: known once opened
    check_source(f"cam{absent}")
