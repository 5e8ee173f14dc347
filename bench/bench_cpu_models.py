"""The default models' real architectures on this CPU: seconds per caption and per summary, side by side.

    python -m bench.bench_cpu_models --models DIR [--quick]   # or: python -m bench.benchmark --only 23 --models DIR

DIR holds the real-size random-weight models built by ../shared/tools/realsize_models.py
(``qwen3-vl-2b`` and ``mistral-7b`` sub-folders; never committed: 4 GB and 14.5 GB). Without it
the rows say so and are skipped. Speed and memory do not depend on the weights' values; a random
model never emits its end token, so every call generates exactly the budget of new tokens.

Each path runs in a fresh process (its peak RSS is that process's) through the project's own
in-process path: ``LocalVLM`` (the image-only processor where torchvision is missing) on one
480x360 frame of short_hamilton_clip.mp4, and ``LocalSummarizer`` for the 7B summary model. The
paths take turns, round after round (this machine is shared and noisy), and the figure of a path
is the median of its rounds, the first caption of each process (kernel warm-up) left out.
Beside them stands the physical limit: the bytes of weights one generated token reads, divided
by the memory bandwidth measured here (a large tensor summed on all cores).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the worker processes run here, so the project imports
DATA = Path(os.environ.get("SUMMARIZER_TEST_DATA", ROOT.parent / "shared" / "data"))
HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
FRAME_SIZE = (480, 360)
CAPTION_TOKENS = 64  # the yardstick
SUMMARY_TOKENS = 200

# name: (dtype, image_max_side: None for the 480x360 frame as it is, new tokens); "default": LocalVLM's
CAPTION_PATHS: dict[str, tuple[str, int | str | None, int | str]] = {
    "float32": ("float32", None, CAPTION_TOKENS),
    "bfloat16": ("bfloat16", None, CAPTION_TOKENS),
    "int8": ("int8", None, CAPTION_TOKENS),
    "bfloat16 320px 48 tok": ("bfloat16", 320, 48),
    "int8 320px 48 tok": ("int8", 320, 48),
    "auto (the CPU default)": ("auto", "default", "default"),
}


def frame() -> "object":
    """One 480x360 BGR frame of short_hamilton_clip.mp4 (a grey one when the clip is missing)."""
    import cv2
    import numpy as np

    if HAMILTON.is_file():
        cap = cv2.VideoCapture(str(HAMILTON))
        try:
            for _ in range(100):
                ok, img = cap.read()
        finally:
            cap.release()
        if ok:
            return cv2.resize(img, FRAME_SIZE, interpolation=cv2.INTER_AREA)
    return np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 128, np.uint8)


def cpu_s() -> float:
    """CPU seconds this process has used, all threads (beside wall time: the machine is shared)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def timed_runs(generate, count: int) -> tuple[list[dict], object]:
    """count calls of generate(): wall and CPU seconds, first token, tokens, seconds a token; and the last result."""
    runs = []
    for _ in range(count):
        t, c = time.perf_counter(), cpu_s()
        res = generate()
        # Random weights mostly pick ids the tiny tokenizer cannot spell ("no caption"): the tokens count.
        if res.error_kind not in (None, "bad_response") or not res.output_tokens:
            raise RuntimeError(res.error)
        wall, ttft = time.perf_counter() - t, res.completion_start_time - res.start_time
        runs.append({"s": wall, "cpu_s": cpu_s() - c, "ttft_s": ttft, "tokens": res.output_tokens,
                     "input_tokens": res.input_tokens, "s_per_token": (wall - ttft) / max(1, res.output_tokens - 1)})
    return runs, res


def caption_worker(folder: str, path: str, count: int) -> dict:
    """In a fresh process: load the caption model as the path says, caption the frame count times."""
    from video_summarizer.models.local_vlm import LocalVLM

    dtype, side, tokens = CAPTION_PATHS[path]
    kwargs = {} if side == "default" else {"image_max_side": side or max(FRAME_SIZE)}
    if tokens != "default":
        kwargs["max_new_tokens"] = tokens
    vlm = LocalVLM(folder, device="cpu", dtype=dtype, timeout_s=3600, **kwargs)
    t0 = time.perf_counter()
    vlm.load()
    load_s = time.perf_counter() - t0
    img, prompt = frame(), vlm.build_prompt([])
    runs, res = timed_runs(lambda: vlm.generate_caption(img, prompt), count)
    return {"load_s": load_s, "runs": runs, "peak_rss_gb": peak_rss_gb(), "image_size": res.metadata["image_size"],
            "dtype": str(vlm.hf_model.dtype).removeprefix("torch."), "new_tokens": vlm.max_new_tokens}


def summary_worker(folder: str, dtype: str, count: int, tokens: int = SUMMARY_TOKENS) -> dict:
    """In a fresh process: the summary model through LLMSummarizer in this process, count summaries."""
    from llm_summarizer import LLMSummarizer
    from video_summarizer.results import TimedCaption

    llm = LLMSummarizer(folder, device="cpu", dtype=dtype, max_new_tokens=tokens, timeout_s=3600)
    t0 = time.perf_counter()
    llm.load()
    load_s = time.perf_counter() - t0
    captions = [TimedCaption(i * 5.0, "a person walks across a snowy field and talks to the camera")
                for i in range(12)]
    runs, _ = timed_runs(lambda: llm.update_summary(captions, None), count)
    return {"load_s": load_s, "runs": runs, "peak_rss_gb": peak_rss_gb(),
            "dtype": str(llm.hf_model.dtype).removeprefix("torch.")}


def bandwidth_gbs() -> float:
    """Memory read bandwidth in GB/s: a 1 GiB float32 tensor summed on all cores, median of 7."""
    import torch

    x = torch.ones(256 * 1024 * 1024)
    rates = []
    for _ in range(7):
        t = time.perf_counter()
        x.sum()
        rates.append(x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def weights_gb_per_token(folder: str, bytes_per_weight: float) -> float:
    """GB of weights one generated token reads: every decoder Linear, the output layer, not the vision tower."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
    t = getattr(cfg, "text_config", cfg)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    attn = t.hidden_size * head_dim * (2 * t.num_attention_heads + 2 * t.num_key_value_heads)
    mlp = 3 * t.hidden_size * t.intermediate_size
    params = t.num_hidden_layers * (attn + mlp) + t.vocab_size * t.hidden_size
    return params * bytes_per_weight / 1e9


def _run(args: list[str], timeout_s: float = 1800) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-m", "bench.bench_cpu_models", "--worker", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed: {out.stderr.strip()[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    """The load average and available memory now, for the figures' context."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable"))
    return f"load {'/'.join(load)}, {avail / 1024 ** 2:.1f} GiB available"


def measure_captions(folder: str, paths: list[str], rounds: int, count: int, log=print) -> dict[str, list[dict]]:
    """Each path in a fresh process, taking turns round after round; {path: [worker result per round]}."""
    results: dict[str, list[dict]] = {p: [] for p in paths}
    for r in range(rounds):
        for p in paths:
            log(f"round {r + 1}/{rounds}: caption {p} ({_load()})")
            res = _run(["caption", folder, p, str(count)])
            res["load_at_start"] = _load()
            results[p].append(res)
            log(f"  -> {json.dumps(res)}")
    return results


def timed(rounds: list[dict], key: str) -> float:
    """Median over rounds of each process's timed calls (its first left out when it made more than one)."""
    values = [run[key] for res in rounds for run in (res["runs"][1:] or res["runs"]) if key in run]
    return statistics.median(values) if values else float("nan")


def rows(models: str | None, quick: bool = False, log=None) -> list[tuple[str, str, str, bool | None]]:
    """(name, measured, target, met) rows for bench/benchmark.py: every caption path, the summary, the limit."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    qwen = Path(models or "") / "qwen3-vl-2b"
    mistral = Path(models or "") / "mistral-7b"
    if not models or not (qwen / "config.json").is_file():
        return [("23. real-size models on this CPU", f"not run: no real-size models in {models!r} (build them with "
                 "../shared/tools/realsize_models.py and pass --models DIR)", "—", None)]
    bw = bandwidth_gbs()
    out: list[tuple[str, str, str, bool | None]] = []
    paths = ["float32", "bfloat16", "int8", "auto (the CPU default)", "int8 320px 48 tok"] if not quick else [
        "float32", "auto (the CPU default)"]
    caps = measure_captions(str(qwen), paths, rounds=1 if quick else 2, count=2, log=log)
    per_byte = {"float32": 4, "bfloat16": 2, "int8": 1}
    for p, res in caps.items():
        first = res[0]
        kind = "int8" if CAPTION_PATHS[p][0] == "int8" else first["dtype"]
        limit = weights_gb_per_token(str(qwen), per_byte.get(kind, 4)) / bw * first["new_tokens"]
        s = timed(res, "s")
        out.append((f"23. Qwen3-VL-2B architecture, {p}: s a caption ({first['new_tokens']} new tokens, "
                    f"{first['image_size'][0]}x{first['image_size'][1]} to the processor, "
                    f"{first['runs'][0]['input_tokens']} input tokens), first token, peak RSS",
                    f"{s:.1f} s (first token {timed(res, 'ttft_s'):.1f} s, then {timed(res, 's_per_token'):.2f} s a "
                    f"token; {timed(res, 'cpu_s'):.0f} CPU s), "
                    f"peak RSS {first['peak_rss_gb']:.1f} GB; "
                    f"decode floor {limit:.1f} s", "≤ 10 s", s <= 10.0))
    if (mistral / "config.json").is_file():
        out.extend(summary_rows(str(mistral), bw, log))
    out.append(("23. memory bandwidth here (1 GiB tensor summed on all cores, median of 7)", f"{bw:.1f} GB/s "
                f"({_load()})", "—", None))
    return out


def summary_rows(folder: str, bw: float, log) -> list[tuple[str, str, str, bool | None]]:
    """The 7B summary model at bfloat16 (float32 would need ~29 GB) through LLMSummarizer."""
    log(f"summary bfloat16 ({_load()})")
    res = _run(["summary", folder, "bfloat16", "1"], timeout_s=3600)
    log(f"  -> {json.dumps(res)}")
    run = res["runs"][0]
    limit = weights_gb_per_token(folder, 2) / bw * run["tokens"]
    return [(f"23. Mistral-7B architecture, bfloat16: s a {run['tokens']}-token summary "
             f"({run['input_tokens']} input tokens), first token, peak RSS",
             f"{run['s']:.0f} s (first token {run['ttft_s']:.1f} s; {run['cpu_s']:.0f} CPU s), "
             f"peak RSS {res['peak_rss_gb']:.1f} GB; "
             f"decode floor {limit:.0f} s", "≤ 60 s", run["s"] <= 60.0)]


def main(argv: list[str] | None = None) -> int:
    """Print the rows as a Markdown table (or, with --worker, run one measuring process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=os.environ.get("SUMMARIZER_REALSIZE_MODELS"),
                        help="folder with qwen3-vl-2b/ and mistral-7b/ (env SUMMARIZER_REALSIZE_MODELS)")
    parser.add_argument("--quick", action="store_true", help="float32 and the CPU default only, one round")
    parser.add_argument("--paths", default="", help="comma-separated caption paths to measure (default: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "FOLDER", "PATH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, folder, path, count = args.worker
        if kind == "caption":
            print(json.dumps(caption_worker(folder, path, int(count))))
        else:  # SUMMARIZER_BENCH_TOKENS: fewer tokens, the 200-token time then follows from the rate
            tokens = int(os.environ.get("SUMMARIZER_BENCH_TOKENS", SUMMARY_TOKENS))
            print(json.dumps(summary_worker(folder, path, int(count), tokens)))
        return 0
    if args.paths:
        caps = measure_captions(str(Path(args.models) / "qwen3-vl-2b"), args.paths.split(","), args.rounds, 2)
        print(json.dumps({p: {k: timed(r, k) for k in ("s", "ttft_s", "cpu_s")} for p, r in caps.items()}))
        return 0
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    for name, measured, target, ok in rows(args.models, quick=args.quick):
        verdict = "—" if ok is None else ("yes" if ok else "**no**")
        print(f"| {name} | {measured} | {target} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
