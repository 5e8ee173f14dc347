"""Files the project makes are private to the user whatever the umask, and the batch lock is
taken safely in a folder others can write: a link at its name is refused (its target untouched),
a held lock names its live holder. setup_langfuse.sh leaves .env 0600."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import CLI, REPO, cli_env, run_here
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer


LOCK = ".real_time_summarizer.lock"
NO_MODEL = ["--llm-model", "/nonexistent/mistral", "--vlm-base-url", "http://127.0.0.1:9/v1"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tree_modes(root: Path) -> dict[str, int]:
    """Every folder and file under root (root too), relative name -> permission bits."""
    found = {".": _mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = _mode(path)
    return found


@pytest.fixture
def bert(tiny_bert) -> Path:
    return tiny_bert  # the session's (tests/conftest.py)


def test_everything_a_run_makes_is_private_under_umask_022(tmp_path, clips, bert):
    import cv2
    import numpy as np

    faces = tmp_path / "faces"
    faces.mkdir()
    cv2.imwrite(str(faces / "landscape.png"), np.full((120, 160, 3), 90, np.uint8))  # encoded, no face
    clip = clips.numbered(seconds=2.0).path
    source = tmp_path / f"clip{clip.suffix}"
    shutil.copy(clip, source)
    out, ds, index = tmp_path / "out" / "batch", tmp_path / "ds", tmp_path / "index"
    events, trace, summary = tmp_path / "events.jsonl", tmp_path / "trace.jsonl", tmp_path / "summary.md"
    with FakeOpenAIServer(reply_fn=lambda body: "A figure walks across a room.") as srv:
        args = [sys.executable, CLI, "--source", str(source),
                "--vlm-base-url", srv.base_url, "--vlm-model", "qwen3", "--llm-base-url", srv.base_url,
                "--llm-model", "qwen3", "--known-faces", str(faces), "--interval", "1", "--min-change", "0",
                "--output-dir", str(out), "--events", str(events), "--trace-log", str(trace),
                "--summary-out", str(summary), "--dataset", str(ds), "--index", str(index),
                "--embed-model", str(bert)]
        old_umask = os.umask(0o022)  # the run is in this process: it makes its files under this umask
        try:
            proc = run_here(args, cli_env(tmp_path), timeout=300, cwd=tmp_path)
        finally:
            os.umask(old_umask)
    assert proc.returncode == 0, proc.stderr
    for path in (events, trace, summary):
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
    batch = _tree_modes(tmp_path / "out")
    assert {"batch/clip.summary.json", "batch/clip.summary.md", f"batch/{LOCK}"} <= set(batch), batch
    dataset = _tree_modes(ds)
    assert "items.jsonl" in dataset and any(name.startswith("images/") for name in dataset), dataset
    cache = _tree_modes(tmp_path / "cache")
    assert any(name.startswith("real-time-summarizer/faces/") for name in cache), cache
    for where, modes in (("out", batch), ("dataset", dataset), ("cache", cache)):
        root = {"out": tmp_path / "out", "dataset": ds, "cache": tmp_path / "cache"}[where]
        for name, mode in modes.items():
            want = 0o700 if (root / name).is_dir() else 0o600
            assert mode == want, (where, name, oct(mode))
    assert _mode(index) == 0o700  # LanceDB writes its own files inside; the folder keeps them private


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, clips):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.conf"
    target.write_text("keep me\n")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    (out / LOCK).symlink_to(target)
    proc = run_here([sys.executable, CLI, "--source", str(clips.numbered().path), *NO_MODEL,
                     "--output-dir", str(out)], cli_env(tmp_path), timeout=60, cwd=tmp_path)
    assert target.read_text() == "keep me\n"
    assert target.stat().st_mtime == 1_000_000_000
    assert (out / LOCK).is_symlink()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"Error: --output-dir: {out / LOCK} is a symbolic link; refusing to lock through it "
                     "(remove it)"], lines


@pytest.mark.slow  # the lock is held by another process than the run's
def test_a_held_lock_names_its_live_holder_not_the_pid_written_by_a_finished_run(tmp_path, clips):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by this test's process
        os.write(fd, f"pid {dead.pid} since 2026-01-01T00:00:00.000Z\n".encode())
        proc = subprocess.run([sys.executable, CLI, "--source", str(clips.numbered().path), *NO_MODEL,
                               "--output-dir", str(out)], env=cli_env(tmp_path), capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
    finally:
        os.close(fd)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: --output-dir: {out} is in use by another run ("), lines
    assert f"pid {dead.pid}" not in lines[0]
    if Path("/proc/locks").is_file():  # Linux says who holds a flock
        assert f"(pid {os.getpid()})" in lines[0], lines


# -- setup_langfuse.sh -------------------------------------------------------------------------

def _script_dir(tmp_path: Path, env_text: str) -> Path:
    """A copy of the script in a git repository that ignores .env, with an existing 0644 .env."""
    here = tmp_path / "proj"
    here.mkdir()
    shutil.copy(REPO / "setup_langfuse.sh", here / "setup_langfuse.sh")
    (here / ".gitignore").write_text(".env\n")
    subprocess.run(["git", "init", "-q", str(here)], check=True)
    (here / ".env").write_text(env_text)
    os.chmod(here / ".env", 0o644)
    return here


def _converse(cmd: list[str], cwd: Path, env: dict, answers: list[tuple[str, str]], timeout: float = 30) -> str:
    """Run cmd on a terminal (a pty), answering each prompt as it appears; its whole output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen, pending, deadline = b"", list(answers), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closed: the shell is done
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and pending[0][0].encode() in seen.split(b"\x00")[-1]:
                os.write(master, (pending.pop(0)[1] + "\n").encode())
                seen += b"\x00"  # answered up to here
            if proc.poll() is not None and not ready:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return seen.replace(b"\x00", b"").decode(errors="replace")


def test_setup_script_saves_keys_into_an_existing_env_as_0600(tmp_path):
    secret = "sk-lf-pty-secret-4321"
    here = _script_dir(tmp_path, "# keys go here\n")
    with FakeLangfuseServer(public_key="pk-lf-pty-1234", secret_key=secret) as srv:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "dumb",
               "LANGFUSE_BASE_URL": srv.base_url}
        seen = _converse(["bash", "-c", "source ./setup_langfuse.sh; echo rc=$?"], here, env,
                         [("public key", "pk-lf-pty-1234"), ("secret key", secret), ("[y/N]", "y")])
    assert "auth check OK" in seen and "Saved to" in seen and "rc=0" in seen, seen
    assert f"LANGFUSE_SECRET_KEY={secret}" in (here / ".env").read_text()
    assert _mode(here / ".env") == 0o600


def test_setup_script_makes_an_env_it_reads_0600(tmp_path):
    secret = "sk-lf-read-secret-8765"
    with FakeLangfuseServer(public_key="pk-lf-read-1234", secret_key=secret) as srv:
        here = _script_dir(tmp_path, f"LANGFUSE_PUBLIC_KEY=pk-lf-read-1234\nLANGFUSE_SECRET_KEY={secret}\n"
                                     f"LANGFUSE_BASE_URL={srv.base_url}\n")
        proc = subprocess.run(["bash", "-c", "source ./setup_langfuse.sh; echo rc=$?"], cwd=here,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
                              env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert "rc=0" in proc.stdout, proc.stdout + proc.stderr
    assert f"Langfuse: {here}/.env was readable by other users; it is now mode 600." in proc.stderr
    assert _mode(here / ".env") == 0o600
    assert secret not in proc.stdout + proc.stderr
