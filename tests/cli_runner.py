"""Run the CLI as a user would: a subprocess with the test servers' addresses in its environment."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = str(REPO / "real_time_summarizer.py")
TEST_PUBLIC_KEY = "pk-test-e2e"
TEST_SECRET_KEY = "sk-test-e2e-DO-NOT-LEAK-7f3a9c"


def cli_env(tmp_path: Path, *, langfuse_url: str | None = None, **extra: str) -> dict[str, str]:
    """A clean environment: offline hub, a private face cache, Langfuse keys only when a URL is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"), TOKENIZERS_PARALLELISM="false")
    if langfuse_url:
        env.update(LANGFUSE_PUBLIC_KEY=TEST_PUBLIC_KEY, LANGFUSE_SECRET_KEY=TEST_SECRET_KEY,
                   LANGFUSE_BASE_URL=langfuse_url)
    env.update(extra)
    return env


def cli_args(vlm_url: str, llm_dir: Path | str, *more: str) -> list[str]:
    """The command line with the test VLM server and the tiny local summary model."""
    return [sys.executable, CLI, "--vlm-base-url", vlm_url, "--vlm-model", "qwen3",
            "--llm-model", str(llm_dir), *more]


@dataclass
class CliRun:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str

    def stderr_lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(args: list[str], env: dict[str, str], *, stdin=None, timeout: float = 180, cwd=None) -> CliRun:
    """Run to completion and capture everything."""
    proc = subprocess.run(args, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def read_events(path: Path) -> list[dict]:
    """Every line of an events/trace log parsed as JSON (a bad line fails the test)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def image_digest_reply(body: dict) -> str:
    """A caption that depends only on the image sent, so equal frames give equal captions."""
    urls = sent_image_urls(body)
    if urls:  # a clip's key frame is its last image
        return f"Scene {hashlib.sha256(urls[-1].encode()).hexdigest()[:10]} shows people talking on a stage."
    return "A summary of the scenes so far."


def sent_image_urls(body: dict) -> list[str]:
    """The data URLs of a chat request's image parts, in the order sent."""
    return [part["image_url"]["url"] for msg in body.get("messages", []) if isinstance(msg.get("content"), list)
            for part in msg["content"] if part.get("type") == "image_url"]


def selected_frames(fps: float, frame_count: int, interval: float) -> list[int]:
    """The frames one-per-interval selection takes with gating off: the first frame at or past
    each multiple of ``interval`` seconds (frame i at i / fps), as video_summarizer/selection.py."""
    if interval <= 0:
        return list(range(frame_count))
    frames, due = [], 0.0
    for i in range(frame_count):
        t = i / fps
        if t >= due - 1e-6:
            frames.append(i)
            due = (int(t / interval + 1e-9) + 1) * interval
    return frames


def sent_image(body: dict):
    """The key frame of one chat request to the VLM server (a clip's last image), decoded to a BGR
    array (None if none)."""
    images = sent_images(body)
    return images[-1] if images else None


def sent_images(body: dict) -> list:
    """Every image of one chat request to the VLM server, in the order sent, decoded to BGR arrays."""
    import base64

    import cv2
    import numpy as np

    return [cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
            for url in sent_image_urls(body)]


def numbered_reply(body: dict) -> str:
    """For tests/clips.py ``numbered`` frames: the number the frame shows, then image_digest_reply."""
    from tests.clips import read_number

    image = sent_image(body)
    if image is None:
        return image_digest_reply(body)
    return f"Frame {read_number(image)}. {image_digest_reply(body)}"


# Variables a run reads at the edge; an in-process run starts without them (a .env may set the keys).
_EDGE_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST",
              "LANGFUSE_TIMEOUT", "LANGFUSE_FLUSH_AT", "LANGFUSE_FLUSH_INTERVAL", "LANGFUSE_TRACING_ENABLED",
              )


def unique_public_key() -> str:
    """A Langfuse public key of its own: the SDK keeps one client per key and process, and so does the
    tracker (a second tracker with a key already used in this process stays off), so every
    in-process run that traces to Langfuse needs a key no other run of the worker used."""
    import uuid

    return f"pk-test-{uuid.uuid4().hex[:12]}"


def invoke_env(tmp_path: Path, *, langfuse_url: str | None = None, public_key: str = TEST_PUBLIC_KEY,
               **extra: str) -> dict[str, str]:
    """What cli_env gives a subprocess, for invoke_cli: a private face cache, Langfuse keys only with a URL
    (with Langfuse, give each run a unique_public_key())."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    if langfuse_url:
        env.update(LANGFUSE_PUBLIC_KEY=public_key, LANGFUSE_SECRET_KEY=TEST_SECRET_KEY,
                   LANGFUSE_BASE_URL=langfuse_url)
    env.update(extra)
    return env


def invoke_cli(args: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
               cwd: Path | str | None = None) -> CliRun:
    """Run the CLI in this process (click's CliRunner), as run_cli runs it in a subprocess.

    The environment has no LANGFUSE_/VLM_/LLM_/SUMMARIZER_ settings but those of ``env``
    (invoke_env) for the call, put back afterwards, as are the working folder (``cwd``) and the
    SIGINT/SIGTERM handlers the run installs. The run's log lines go to its stderr (its handler
    is made on the runner's stream), and to pytest's caplog. Args start after the program name.
    """
    import signal

    from click.testing import CliRunner

    import real_time_summarizer

    cleared = {k: None for k in os.environ if k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_"))}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(real_time_summarizer.cli, args, input=stdin, catch_exceptions=False,
                                    env={**dict.fromkeys(_EDGE_VARS), **cleared, **(env or {})})
    finally:
        os.chdir(here)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return CliRun(result.exit_code, result.stdout, result.stderr)


def run_here(args: list[str], env: dict[str, str], *, stdin: bytes | None = None, timeout: float | None = None,
             cwd: Path | str | None = None) -> CliRun:
    """run_cli's call, run in this process: ``args`` may start with the program (sys.executable, CLI),
    ``env`` is a cli_env (its LANGFUSE_/VLM_/LLM_/SUMMARIZER_ settings and cache folder are used);
    ``timeout`` is not enforced (the run is bounded by its own options). A run that traces to
    Langfuse needs a public key no other in-process run of this worker used (unique_public_key)."""
    if args[:2] == [sys.executable, CLI]:
        args = args[2:]
    given = {k: v for k, v in env.items()
             if k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_")) or k == "XDG_CACHE_HOME"}
    return invoke_cli(args, stdin=stdin, env=given, cwd=cwd)


def keyed_cli_env(tmp_path: Path, lf, **extra: str) -> dict[str, str]:
    """cli_env with Langfuse at the fake receiver ``lf`` under a fresh public key, which the receiver
    now expects: each in-process run needs a key of its own (see run_here)."""
    lf.public_key = unique_public_key()
    return cli_env(tmp_path, langfuse_url=lf.base_url, LANGFUSE_PUBLIC_KEY=lf.public_key, **extra)
