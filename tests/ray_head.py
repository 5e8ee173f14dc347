"""A private Ray head on 127.0.0.1 for the tests and bench/: started as a child, ended by its pid.

Ray binds the network interface's address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is in the
environment of `ray start` and of every driver (shared/notes/stack.md); the product never sets
it, the tests and the bench do. `ray stop` would end every Ray process on the machine: never used.

Every Ray process the tests start (the head, the CLI as a driver) gets its Ray state from here
(ray_env): the auth mode set explicitly and a temp folder of its own, and none of the machine's
RAY_* variables. Otherwise a user's ~/.ray/auth_token turns token auth on in a head and not in
a driver ("InvalidAuthToken"), and /tmp/ray/ray_current_cluster names whatever cluster ran last.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Iterator, Mapping

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    """A free port; the kernel's ephemeral range (32768+) lies outside Ray's 10002-19999."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def ray_tmpdir() -> Iterator[Path]:
    """A private folder for Ray's files, removed afterwards; short, as Ray's socket paths must fit 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ray_env(base: Mapping[str, str], tmpdir: Path, **extra: str) -> dict[str, str]:
    """base without any RAY_* variable, then loopback only, token auth off, Ray's files under tmpdir."""
    env = {k: v for k, v in base.items() if not k.startswith("RAY_")}
    env.update(LOOPBACK, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(tmpdir))
    env.update(extra)
    return env


@contextmanager
def local_ray_head(cpus: int = 2, log: IO[str] | None = None, *, tmpdir: Path | None = None,
                   env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A Ray head of `cpus` CPUs, loopback only; yields its address, ends it (and its workers) by pid.

    env: the head's environment before ray_env (default: this process's), e.g. the keys its workers read.
    """
    with ExitStack() as stack:
        tmpdir = tmpdir or stack.enter_context(ray_tmpdir())
        port = free_port()
        head = subprocess.Popen([RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", str(cpus),
                                 "--include-dashboard", "false", "--disable-usage-stats"],
                                env=ray_env(os.environ if env is None else env, tmpdir),
                                stdout=log or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if head.poll() is not None or time.time() > deadline:
                        raise RuntimeError("the Ray head did not start") from None
                    time.sleep(0.3)
            yield f"127.0.0.1:{port}"
        finally:
            head.send_signal(signal.SIGTERM)  # ends every Ray process it started
            try:
                head.wait(30)
            except subprocess.TimeoutExpired:
                head.kill()
                head.wait()


# -- what a worker got: the CLI run with a stages factory that notes it first ----------------------

SPY_FACTORY = "tests.ray_head:spy_stages"
# The CLI as a user runs it, its workers building their stages through spy_stages (run it with cwd=REPO).
SPY_CLI = [sys.executable, "-c",
           f"import real_time_summarizer as cli; cli.STAGES_FACTORY = {SPY_FACTORY!r}; cli.main()"]


def spy_stages(opts, stack, events):  # noqa: ANN001, ANN201 - the CLI's factory signature
    """On a Ray worker: write what it got (environment, runtime env, API keys, parent processes) to
    --output-dir/.ray-spy-<pid>.json, then build the CLI's stages."""
    import json

    import ray

    import real_time_summarizer

    record = {"pid": os.getpid(), "ancestors": _ancestors(os.getpid()), "environ": dict(os.environ),
              "runtime_env": dict(ray.get_runtime_context().runtime_env or {}),
              "keys": {name: getattr(opts, name) for name in ("vlm_api_key", "llm_api_key", "judge_api_key")}}
    Path(opts.output_dir, f".ray-spy-{os.getpid()}.json").write_text(json.dumps(record, default=str))
    return real_time_summarizer._build_stages(opts, stack, events)


def spied(out: Path) -> list[dict]:
    """The records spy_stages left in the output folder, one per worker."""
    import json

    return [json.loads(p.read_text()) for p in sorted(out.glob(".ray-spy-*.json"))]


def _ancestors(pid: int) -> list[str]:
    """The command lines of pid's parents, nearest first."""
    lines = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            break
    return lines
