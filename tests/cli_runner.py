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


def invoke_cli(args: list[str], *, stdin: bytes | None = None) -> CliRun:
    """Run the CLI in this process (click's CliRunner): no Langfuse keys, no settings from the
    environment. Its log lines go to pytest's caplog (logging is set up once per process);
    the signal handlers it installs are put back afterwards."""
    import signal

    from click.testing import CliRunner

    import real_time_summarizer

    env = {k: None for k in os.environ if k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_"))}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = CliRunner().invoke(real_time_summarizer.cli, args, input=stdin, env=env, catch_exceptions=False)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return CliRun(result.exit_code, result.stdout, result.stderr)
