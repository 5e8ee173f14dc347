"""Bad input is found when open_source opens it, in under a second (a stream: within its
timeout), as one InputError naming --source that says what to do: files, stdin, streams."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.clip_server import ClipServer
from tests.clips import cut_file, small_clip
from video_summarizer.errors import InputError
from video_summarizer.sources import open_source

REPO_ROOT = Path(__file__).resolve().parent.parent

# --- files, cameras, streams -------------------------------------------------------------


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Generated bad inputs: (spec, words the message must hold)."""
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 50)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 200_000, np.uint8).tobytes())
    # VideoWriter's MP4 keeps its index (moov) at the end: the first 40 % has none, nothing decodes.
    cut_file(small_clip(tmp_path / "whole.mp4", "mp4v"), 0.4, "no-index.mp4")
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
                           f"stream rtsp://***@127.0.0.1:{port}/cam1?token=*** could not be opened: "
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
        clip = small_clip(folder / "locked.avi", "MJPG", count=5)
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



# --- stdin -------------------------------------------------------------------------------

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
    whole = small_clip(tmp_path / "whole.mp4", "mp4v").read_bytes()
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



# --- servers that answer without a video ------------------------------------------------


@pytest.mark.parametrize("case", ["503", "html 200", "404"])
def test_a_server_that_answers_without_a_video_is_an_input_error_at_open(tmp_path, case):
    clip = small_clip(tmp_path / "cam.avi", "MJPG", count=10).read_bytes()
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
