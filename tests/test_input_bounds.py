"""Hostile input is bounded and said in one line: a decompression-bomb image, an endless stdin,
known faces that are not photos, dataset image paths outside their folder, absurd times.

Every input is generated here (the 16000x16000 PNG is deflated row by row: ~0.8 MB on disk, a few
MB of memory to make). The CLI runs in a subprocess where the process is the point (its peak
memory, an endless pipe on its stdin), in this process (tests/cli_runner.invoke_cli) otherwise.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.cli_runner import CLI, TEST_SECRET_KEY, cli_env, invoke_cli, invoke_env, unique_public_key
from tests.clips import numbered_frame
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.frames import to_jpeg_bytes

# A run that got as far as loading or checking a model would say so; these tests fail before.
NO_MODEL = ["--llm-model", "/nonexistent/mistral", "--vlm-base-url", "http://127.0.0.1:9/v1"]
BOMB_SIDE = 16000  # 768 MB of RGB once decoded


def _bomb_png(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid solid-colour PNG of side x side pixels, deflated row by row (never held decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + bytes((10, 200, 30)) * side) * 100  # filter byte 0, then the row's pixels
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(rows) for _ in range(side // 100)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = _bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")
    assert path.stat().st_size < 2_000_000
    return path


@pytest.fixture
def vlm(scene_vlm):
    return scene_vlm  # the session's (tests/conftest.py)


def _one_line_exit_2(stderr: str, returncode: int, option: str, *words: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: {option}: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# The child's peak RSS must be its own: a child forked (or vforked) from this pytest process carries
# this process's resident size into its ru_maxrss through exec (Linux keeps the high-water mark), so
# under a worker that has loaded models the figure is the worker's. A small launcher starts the CLI
# and reports the CLI's own figure.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = 0  # reaped by wait4: Popen must not wait again
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _run_measured(args: list[str], tmp_path: Path, stdin_path: Path | None = None,
                  **env: str) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of one CLI run; the RSS is that child's own (wait4)."""
    err, rss = tmp_path / "stderr.txt", tmp_path / "maxrss.txt"
    with open(err, "wb") as fh_err, open(stdin_path or os.devnull, "rb") as fh_in:
        code = subprocess.run([sys.executable, "-c", _LAUNCHER, str(rss), sys.executable, CLI, *args],
                              env=cli_env(tmp_path, **env), cwd=tmp_path, stdin=fh_in,
                              stdout=subprocess.DEVNULL, stderr=fh_err, timeout=120).returncode
    return code, err.read_text(), int(rss.read_text()) / 1024


# -- frame size --------------------------------------------------------------------------------

@pytest.mark.slow  # the child's own peak memory is measured
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_an_oversized_image_is_refused_from_its_header_in_little_memory(tmp_path, bomb, how):
    spool_dir = tmp_path / "tmp"  # where stdin is copied to
    spool_dir.mkdir()
    args = ["--source", str(bomb) if how == "file" else "-", *NO_MODEL]
    code, stderr, peak_mb = _run_measured(args, tmp_path, stdin_path=bomb if how == "stdin" else None,
                                          TMPDIR=str(spool_dir))
    name = str(bomb) if how == "file" else "stdin"
    _one_line_exit_2(stderr, code, "--max-pixels", f"{name}: the image is 256.0 megapixels",
                     "more than --max-pixels 33177600")
    # decoded, it is 768 MB (FFmpeg's open alone peaked at ~800 MB before the check existed)
    assert peak_mb < 600, peak_mb
    assert list(spool_dir.iterdir()) == []


def test_a_video_over_max_pixels_is_refused_from_its_stated_size(tmp_path, clips):
    clip = clips.numbered()  # 160x120
    over = invoke_cli(["--source", str(clip.path), *NO_MODEL, "--max-pixels", "19199"], env=invoke_env(tmp_path),
                      cwd=tmp_path)
    _one_line_exit_2(over.stderr, over.returncode, "--max-pixels", f"{clip.path}: its frames are 160x120, 19200 pixels",
                     "more than --max-pixels 19199")
    env = invoke_env(tmp_path, SUMMARIZER_MAX_PIXELS="19200")  # the option's variable; exactly the frame fits
    fits = invoke_cli(["--source", str(clip.path), *NO_MODEL], env=env, cwd=tmp_path)
    assert fits.returncode == 2 and fits.stderr_lines()[-1].startswith("Error: --vlm-base-url: "), fits.stderr


# -- stdin -------------------------------------------------------------------------------------

# An MP4 header (so stdin is spooled to a file), then zeros: 200 MB, then the pipe is held open
# forever. Bounded, so the code before the limit fills 200 MB of the test's folder, not the disk.
ENDLESS_MP4 = r"""
import sys, time
out = sys.stdout.buffer
out.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
block = bytes(1 << 20)
try:
    for _ in range(200):
        out.write(block)
    out.flush()
    time.sleep(3600)
except BrokenPipeError:
    pass
"""


@pytest.mark.slow  # an endless pipe on the child's stdin
def test_an_endless_stdin_stops_at_stdin_max_mb_and_leaves_no_spool(tmp_path):
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", ENDLESS_MP4], stdout=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, CLI, "--source", "-", *NO_MODEL, "--stdin-max-mb", "5"],
                              env=cli_env(tmp_path, TMPDIR=str(spool_dir)), cwd=tmp_path, stdin=writer.stdout,
                              capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    finally:
        writer.stdout.close()
        writer.kill()
        writer.wait()
    _one_line_exit_2(proc.stderr, proc.returncode, "--stdin-max-mb", "more than 5 MB piped in")
    assert took < 15, took  # ~0.3 s here; the time it takes to copy 5 MB and start python
    assert list(spool_dir.iterdir()) == []  # the spool is gone


# -- known faces -------------------------------------------------------------------------------

def test_known_faces_that_are_not_photos_are_skipped_one_line_each(tmp_path, clips, vlm, tiny_llm, bomb):
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(faces / "pipe.jpg")
    with open(faces / "big.jpg", "wb") as fh:  # sparse: 30 MB stated, nothing on disk
        fh.truncate(30 * 1024 * 1024)
    (faces / "huge.png").symlink_to(bomb)
    (faces / "bad.jpg").write_bytes(b"not an image at all")
    args = ["--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3", "--llm-model", str(tiny_llm),
            "--source", str(clips.numbered().path), "--interval", "1", "--known-faces", str(faces)]
    run = invoke_cli(args, env=invoke_env(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    expected = {
        "zero.jpg": "not a regular file (a character device)",
        "pipe.jpg": "not a regular file (a named pipe)",
        "big.jpg": "larger than 20 MB",
        "huge.png": "the image is 256.0 megapixels, more than --max-pixels 33177600",
        "bad.jpg": "unreadable image (not a JPEG, PNG, BMP, WebP or TIFF image)",
    }
    for name, why in expected.items():
        said = [line for line in run.stderr_lines() if str(faces / name) in line]
        assert len(said) == 1, (name, run.stderr)
        assert said[0].startswith(f"known faces: skipping {faces / name}: {why}"), said[0]
    assert "BytesIO" not in run.stderr
    assert "library: 0 people, 5 images, 5 skipped" in run.stderr
    assert run.stdout.strip(), run.stdout  # the run went on to its summary


def test_a_known_faces_folder_is_read_up_to_its_image_bound(tmp_path, caplog):
    from video_summarizer.faces import FaceRecognizer

    faces = tmp_path / "faces"
    faces.mkdir()
    for name in ("ada", "bob", "cyd", "dan"):
        (faces / f"{name}.jpg").write_bytes(b"not an image")
    caplog.set_level("WARNING", logger="video_summarizer.faces")
    rec = FaceRecognizer(faces, cache_dir=tmp_path / "cache", max_images=2).load()
    assert rec.library["images"] == 4 and rec.library["skipped"] == 4
    lines = [r.getMessage() for r in caplog.records]
    assert f"known faces: only the first 2 images of {faces} are read; 2 more left out" in lines
    assert [line for line in lines if line.startswith("known faces: skipping")] == [
        f"known faces: skipping {faces / n}.jpg: unreadable image (not a JPEG, PNG, BMP, WebP or TIFF image)"
        for n in ("ada", "bob")]  # cyd and dan are never opened


def test_known_faces_with_no_faces_is_said_once(tmp_path, clips):
    faces = tmp_path / "faces"
    faces.mkdir()
    proc = invoke_cli(["--source", str(clips.numbered().path), *NO_MODEL, "--no-faces",
                       "--known-faces", str(faces)], env=invoke_env(tmp_path), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines.count("--known-faces is not used with --no-faces") == 1, proc.stderr
    assert proc.returncode == 2 and lines[-1].startswith("Error: --vlm-base-url: "), proc.stderr  # and it went on


# -- dataset folders ---------------------------------------------------------------------------

SECRET_MARK = "SECRET-7f3a9c-do-not-send"


def _hostile_dataset(tmp_path: Path, case: str, bomb: Path) -> tuple[Path, bytes]:
    """frames/ with one good item and one item of the given kind; (the secret file, its bytes)."""
    secret = tmp_path / "secret.jpg"  # a real JPEG: a caption model would take it
    secret.write_bytes(to_jpeg_bytes(numbered_frame(7), 768, 90) + SECRET_MARK.encode())
    folder = tmp_path / "frames"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "good.jpg").write_bytes(to_jpeg_bytes(numbered_frame(1), 768, 90))
    image = {"parent": "../secret.jpg", "absolute": str(secret), "link": "images/link.jpg",
             "fifo": "images/pipe.jpg", "bomb": "images/bomb.png"}[case]
    if case == "link":
        (folder / "images" / "link.jpg").symlink_to(secret)
    elif case == "fifo":
        os.mkfifo(folder / "images" / "pipe.jpg")
    elif case == "bomb":
        (folder / "images" / "bomb.png").write_bytes(bomb.read_bytes())
    entries = [{"id": "good-item", "input": {"faces": []}, "metadata": {"frame": 1}, "image": "images/good.jpg"},
               {"id": f"bad-{case}", "input": {"faces": []}, "metadata": {"frame": 7}, "image": image}]
    (folder / "items.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return secret, secret.read_bytes()


CASES = ["parent", "absolute", "link", "fifo"]


@pytest.mark.parametrize("case", [*CASES, "bomb"])
def test_an_experiment_reads_no_image_from_outside_its_dataset(tmp_path, case, bomb):
    _, secret = _hostile_dataset(tmp_path, case, bomb)
    with FakeOpenAIServer(reply="A coloured band.") as srv:
        run = invoke_cli(["experiment", "r", "--dataset", "frames", "--vlm-base-url", srv.base_url],
                         env=invoke_env(tmp_path), cwd=tmp_path)
        option = "--max-pixels" if case == "bomb" else "--dataset"
        why = {"bomb": "its image is 256.0 megapixels", "fifo": "is not a regular file (a named pipe)"}.get(
            case, "which is not inside the dataset folder")
        _one_line_exit_2(run.stderr, run.returncode, option, f"item 'bad-{case}' of ", why)
        assert srv.requests == []  # refused before the first caption: the secret never reached the VLM
    assert SECRET_MARK not in run.stdout + run.stderr
    assert not (tmp_path / "frames" / "runs").exists()


@pytest.mark.parametrize("case", [*CASES, "etc"])
def test_a_push_sends_nothing_from_outside_its_dataset(tmp_path, case, bomb):
    _, secret = _hostile_dataset(tmp_path, "absolute" if case == "etc" else case, bomb)
    if case == "etc":  # a system file by absolute path
        lines = (tmp_path / "frames" / "items.jsonl").read_text().splitlines()
        entry = json.loads(lines[1])
        entry.update(id="bad-etc", image="/etc/hostname")
        (tmp_path / "frames" / "items.jsonl").write_text(lines[0] + "\n" + json.dumps(entry) + "\n")
    key = unique_public_key()
    with FakeLangfuseServer(public_key=key, secret_key=TEST_SECRET_KEY) as lf:
        run = invoke_cli(["dataset", "push", "frames"], env=invoke_env(tmp_path, langfuse_url=lf.base_url,
                                                                       public_key=key), cwd=tmp_path)
        why = "is not a regular file (a named pipe)" if case == "fifo" else "which is not inside the dataset folder"
        _one_line_exit_2(run.stderr, run.returncode, "dataset push", f"item 'bad-{case}' of ", why)
        assert lf.data.uploads == [] and lf.data.item_creates == []  # refused before anything was sent
    assert SECRET_MARK not in run.stdout + run.stderr


# -- times -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_bert):
    from tests.test_search import CAPTIONS, _inputs, index_events
    from video_summarizer.options import IndexOptions

    tmp = tmp_path_factory.mktemp("index")
    bert = tiny_bert
    index_events(IndexOptions(index=str(tmp / "idx"), embed_model=str(bert)), _inputs(tmp), CAPTIONS)
    return ["--index", str(tmp / "idx"), "--embed-model", str(bert)]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value, why", [
    ("1" * 400, "is not a video time: 400 characters long"),
    ("1" * 60, "is not a video time: longer than any video"),
    ("nan", "is neither a video time"),
    ("inf", "is neither a video time"),
    ("99:99", "is not a video time: seconds must be under 60 (99)"),
    ("1:60:00", "is not a video time: minutes must be under 60 (60)"),
], ids=["400-digits", "60-digits", "nan", "inf", "99:99", "1:60:00"])
def test_an_absurd_time_is_a_usage_error_naming_its_option(tmp_path, index, option, value, why):
    proc = invoke_cli(["search", "crowd", *index, option, value], env=invoke_env(tmp_path), cwd=tmp_path)
    line = _one_line_exit_2(proc.stderr, proc.returncode, option, why)
    assert len(line) < 300, line  # the value is shortened, not echoed whole


def test_times_in_range_still_filter(tmp_path, index):
    proc = invoke_cli(["search", "crowd", *index, "--since", "0:04", "--until", "62:03.5", "--json"],
                      env=invoke_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    assert hits and all(h["source"] in ("talk", "street") and h["end_s"] >= 4.0 for h in hits), hits
