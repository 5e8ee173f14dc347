"""Caption backends side by side: the in-process VLM (LocalVLM) and the API client (VLMClient).

    python -m bench.bench_vlm_backends [--quick]

For each backend a fresh Python process decodes real frames of short_hamilton_clip.mp4, then
measures the time to the first caption from its start (importing the backend's module and
its libraries, constructing it, check() — loading the model for LocalVLM, GET /models for
VLMClient — and captioning one frame), then captions the other frames one after another
(wall time of generate_caption, and TTFT). LocalVLM runs a tiny random LLaVA built in a
temporary folder (the real loading and generation code, random weights, CPU); VLMClient talks
to the test suite's local fake OpenAI server (tests/fake_openai.py) with no model delay, so
its figures are the client's own cost: JPEG encoding, HTTP and streaming. No targets: the
figures are informational. ``rows(quick)`` gives bench/benchmark.py its rows (figure 9).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the worker processes run here, so the project imports

DATA = Path(os.environ.get("SUMMARIZER_TEST_DATA", ROOT.parent / "shared" / "data"))
HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
LOCAL_NEW_TOKENS = 16
FAKE_REPLY = "A man in a dark coat sings on a stage in front of a wooden wall."


def hamilton_frames(count: int) -> list:
    """count frames spread evenly over short_hamilton_clip.mp4 (275 frames, 640x360)."""
    import cv2

    cap = cv2.VideoCapture(str(HAMILTON))
    frames = []
    try:
        index = 0
        step = max(1, 275 // count)
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {HAMILTON}")
    return frames


def worker(kind: str, target: str, count: int) -> dict:
    """In a fresh process: time to the first caption from the start, then per-caption timings."""
    frames = hamilton_frames(count)  # decoding is not part of the figure
    t0 = time.perf_counter()
    if kind == "local":
        from video_summarizer.models.local_vlm import LocalVLM

        backend = LocalVLM(target, max_new_tokens=LOCAL_NEW_TOKENS)
    else:
        from vlm_client_module import VLMClient

        backend = VLMClient(base_url=target, model="qwen3")
    backend.check()
    prompt = backend.build_prompt(["lin-manuel-miranda"])
    first = backend.generate_caption(frames[0], prompt)
    first_s = time.perf_counter() - t0
    wall_ms, ttft_ms, failures = [], [], int(not first.success)
    for frame in frames[1:]:
        t = time.perf_counter()
        res = backend.generate_caption(frame, prompt)
        wall_ms.append((time.perf_counter() - t) * 1000.0)
        failures += not res.success
        if res.ttft_ms is not None:
            ttft_ms.append(res.ttft_ms)
    return {"first_s": first_s, "load_s": getattr(backend, "load_seconds", None), "wall_ms": wall_ms,
            "ttft_ms": ttft_ms, "failures": failures, "captions": len(frames),
            "image_size": first.metadata.get("image_size")}


def _run_worker(kind: str, target: str, count: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    out = subprocess.run([sys.executable, "-m", "bench.bench_vlm_backends", "--worker", kind, target, str(count)],
                         cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(quick: bool = False) -> dict[str, dict]:
    """{'local': ..., 'api': ...}: first-caption times (median of fresh processes) and latencies."""
    from tests.fake_openai import FakeOpenAIServer
    from tests.tiny_models import build_tiny_llava

    count = 10 if quick else 21  # the first caption, then 9 / 20 timed ones
    starts = 1 if quick else 3
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vlm-") as tmp, FakeOpenAIServer(reply=FAKE_REPLY) as srv:
        llava = str(build_tiny_llava(Path(tmp) / "tiny-llava"))
        for kind, target in (("local", llava), ("api", srv.base_url)):
            runs = [_run_worker(kind, target, count if i == 0 else 1) for i in range(starts)]
            main = runs[0]
            main["first_s_all"] = [r["first_s"] for r in runs]
            main["load_s_all"] = [r["load_s"] for r in runs if r["load_s"] is not None]
            results[kind] = main
    return results


def rows(quick: bool = False) -> list[tuple[str, str, str, bool | None]]:
    """(name, measured, target, met) rows for bench/benchmark.py (figure 9, informational)."""
    if not HAMILTON.is_file():
        return [("9. caption backends", f"not run: {HAMILTON} not found (set SUMMARIZER_TEST_DATA)", "—", None)]
    r = measure(quick)
    local, api = r["local"], r["api"]
    first_local = statistics.median(local["first_s_all"])
    first_api = statistics.median(api["first_s_all"])
    load = (f", of which load() {statistics.median(local['load_s_all']):.2f} s with the torch and transformers "
            "imports" if local["load_s_all"] else "")
    n_starts = len(local["first_s_all"])
    setup = (f"in-process LocalVLM (tiny random LLaVA, CPU, {LOCAL_NEW_TOKENS} new tokens) vs API VLMClient "
             "(local fake OpenAI server, no model delay)")
    out = [(
        f"9. {setup}: time to first caption from process start (imports, construct, check/load, "
        f"1 caption; median of {n_starts} fresh process{'es' if n_starts > 1 else ''})",
        f"local {first_local:.2f} s{load} vs API {first_api:.2f} s", "—", None,
    )]
    p50 = lambda values: statistics.median(values) if values else float("nan")  # noqa: E731
    n = len(local["wall_ms"])
    fails = local["failures"] + api["failures"]
    out.append((
        f"9. {setup}: per-caption latency over {n} real frames of short_hamilton_clip.mp4 "
        f"({local['image_size'][0]}x{local['image_size'][1]}), one at a time",
        f"local p50 {p50(local['wall_ms']):.0f} ms (TTFT p50 {p50(local['ttft_ms']):.0f} ms) vs "
        f"API p50 {p50(api['wall_ms']):.1f} ms (TTFT p50 {p50(api['ttft_ms']):.1f} ms)"
        + (f"; {fails} failed" if fails else ""),
        "—", None,
    ))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the rows as a Markdown table (or, with --worker, run one measuring process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and one fresh start per backend")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TARGET", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, target, count = args.worker
        print(json.dumps(worker(kind, target, int(count))))
        return 0
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    for name, measured, target, ok in rows(quick=args.quick):
        verdict = "—" if ok is None else ("yes" if ok else "**no**")
        print(f"| {name} | {measured} | {target} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
