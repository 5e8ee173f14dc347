"""A private Ray head on 127.0.0.1 for the tests and bench/: started as a child, ended by its pid.

Ray binds the network interface's address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is in the
environment of `ray start` and of every driver (shared/notes/stack.md); the product never sets
it, the tests and the bench do. `ray stop` would end every Ray process on the machine: never used.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    """A free port; the kernel's ephemeral range (32768+) lies outside Ray's 10002-19999."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ray_head(cpus: int = 2, log: IO[str] | None = None) -> Iterator[str]:
    """A Ray head of `cpus` CPUs, loopback only; yields its address, ends it (and its workers) by pid."""
    port = free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", str(cpus),
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            env={**os.environ, **LOOPBACK}, stdout=log or subprocess.DEVNULL,
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
