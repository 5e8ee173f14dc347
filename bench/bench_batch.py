"""A batch keeps the caption server busy (--jobs), and scales across Ray workers (--ray).

Both rows run the CLI as a user would, on 8 generated 12-second clips (a caption every second
of video: 12 a clip), against the fake OpenAI server serving 8 requests at once at 300 ms
each (the others queue), with the tiny local Mistral for summaries.

- batch efficiency: captions x 0.3 s / 8 over the time from the first request to the last
  answer, with --max-inflight 8 (and, for comparison, --jobs 1: a file at a time).
- Ray scaling: each worker --max-inflight 2; files per hour (first request -> last answer)
  on a local Ray head with 1 CPU (one worker) and with 2 CPUs (two workers).

    python -m bench.bench_batch            # prints the rows; bench/benchmark.py calls rows()
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.cli_runner import cli_args, cli_env, image_digest_reply
from tests.clips import ClipSet
from tests.fake_openai import FakeOpenAIServer
from tests.ray_head import (  # the bench's cluster stays on 127.0.0.1, with Ray state of its own
    local_ray_head,
    ray_env,
    ray_tmpdir,
)
from tests.tiny_models import build_tiny_mistral

SERVICE_S, CAPACITY, FILES, SECONDS = 0.3, 8, 8, 12.0


def _clips(tmp: Path, n: int, seconds: float) -> Path:
    folder = tmp / "in"
    folder.mkdir(exist_ok=True)
    made = ClipSet(tmp / "made")
    for i in range(n):
        shutil.copy(made.numbered(seconds=seconds + 0.1 * i).path, folder / f"clip-{i}.avi")
    return folder


def _batch(tmp: Path, src: Path, llm: Path, tag: str, *more: str, ray_tmp: Path | None = None) -> dict:
    """One CLI run over the folder (a Ray driver: with ray_tmp, the head's Ray folder); requests, answer window."""
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=SERVICE_S, capacity=CAPACITY) as vlm:
        args = cli_args(vlm.base_url, llm, "--source", str(src), "--output-dir", str(tmp / f"out-{tag}"),
                        "--interval", "1", "--min-change", "0", "--no-faces", *more)
        env = cli_env(tmp) if ray_tmp is None else ray_env(cli_env(tmp), ray_tmp)
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{tag}: exit {proc.returncode}: {proc.stderr[-2000:]}")
        starts, ends = vlm.request_times, vlm.answer_times
    window = max(ends) - min(starts)
    return {"captions": len(starts), "window": window,
            "efficiency": len(starts) * SERVICE_S / CAPACITY / window, "files_per_hour": FILES / window * 3600}


def _with_head(cpus: int, fn):
    """Run fn(address, its Ray folder) with a local Ray head of `cpus` CPUs, ended by its pid."""
    with ray_tmpdir() as ray_tmp, local_ray_head(cpus, tmpdir=ray_tmp) as address:
        return fn(address, ray_tmp)


def rows(quick: bool = False) -> list[tuple[str, str, str, bool | None]]:
    """(name, measured, target, met) rows: batch efficiency with --jobs, Ray scaling 1 -> 2 workers."""
    out: list[tuple[str, str, str, bool | None]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        llm = build_tiny_mistral(tmp / "llm")
        src = _clips(tmp, FILES, 6.0 if quick else SECONDS)
        one = _batch(tmp, src, llm, "jobs1", "--max-inflight", "8", "--jobs", "1")
        many = _batch(tmp, src, llm, "jobs", "--max-inflight", "8")
        out.append((f"batch efficiency: {FILES} clips, server capacity {CAPACITY} at {SERVICE_S * 1000:.0f} ms, "
                    "--max-inflight 8 (default --jobs)",
                    f"{many['efficiency']:.2f} ({many['captions']} captions in {many['window']:.1f} s); "
                    f"a file at a time (--jobs 1): {one['efficiency']:.2f}",
                    "≥ 0.9", many["efficiency"] >= 0.9))
        ray = {cpus: _with_head(cpus, lambda addr, ray_tmp, c=cpus: _batch(
            tmp, src, llm, f"ray{c}", "--max-inflight", "2", "--ray", addr, ray_tmp=ray_tmp))
            for cpus in (1, 2)}
        ratio = ray[2]["files_per_hour"] / ray[1]["files_per_hour"]
        out.append(("Ray scaling: the same server, each worker --max-inflight 2, files per hour "
                    "(first request → last answer)",
                    f"1 worker {ray[1]['files_per_hour']:.0f}, 2 workers {ray[2]['files_per_hour']:.0f} "
                    f"({ratio:.2f}×)", "≥ 1.8× with 2", ratio >= 1.8))
    return out


if __name__ == "__main__":
    for r in rows(quick="--quick" in sys.argv):
        print(" | ".join(str(x) for x in r))
