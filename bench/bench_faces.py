"""Face recognition speed against recall: full-frame detection vs downscaled detection.

Runs FaceRecognizer over every frame of a clip (default: the Hamilton clip) once per
(scale, upsample, identity reuse) setting, passing each frame's video time as the loop
does, and prints ms per frame (p50, p95, mean, CPU), faces encoded / reused and the recall
of the full-frame matches (scale 1.0, every face encoded: today's baseline). Takes a
minute or two on a quiet 2-core machine.

    python -m bench.bench_faces [--video PATH] [--faces DIR] [--configs 1.0:1:off,0.5:1,...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from video_summarizer.faces import (
    DEFAULT_REUSE,
    DEFAULT_SCALE,
    DEFAULT_TOLERANCE,
    UNKNOWN,
    FaceRecognizer,
    IdentityReuse,
)

DATA = Path(os.environ.get("SUMMARIZER_TEST_DATA", ROOT.parent / "shared" / "data"))
HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
# README ground truth for the Hamilton clip: Lin-Manuel Miranda at tolerance 0.5, full frame.
HAMILTON_LIN_FRAMES = {
    i
    for a, b in [(2, 3), (90, 96), (101, 102), (107, 109), (122, 125), (129, 129),
                 (138, 140), (144, 179), (181, 186), (197, 210)]
    for i in range(a, b + 1)
}
TARGET_TIME_RATIO = 0.25
TARGET_RECALL = 0.95


def run(video: Path, faces: Path, cache: Path, scale: float, upsample: int,
        tolerance: float, limit: int | None,
        reuse: IdentityReuse | None = DEFAULT_REUSE) -> dict:
    """Recognize every frame at one setting; per-frame (frame, name) pairs and timings."""
    import cv2

    rec = FaceRecognizer(faces, tolerance=tolerance, scale=scale, upsample=upsample,
                         cache_dir=cache, reuse=reuse).load()
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    pairs: set[tuple[int, str]] = set()
    cpu = 0.0
    index = 0
    try:
        while limit is None or index < limit:
            ok, frame = cap.read()
            if not ok:
                break
            started = time.process_time()
            matches = rec.recognize(frame, timestamp=index / fps)  # video time, as the loop has
            cpu += time.process_time() - started
            pairs.update((index, m.name) for m in matches if m.name != UNKNOWN)
            index += 1
    finally:
        cap.release()
    stats = rec.stats
    return {"scale": scale, "upsample": upsample, "reuse": reuse is not None,
            "frames": stats["frames"], "faces": stats["faces"], "encoded": stats["encoded"],
            "reused": stats["reused"], "pairs": pairs, "ms": stats["ms_per_frame"],
            "cpu_ms": 1000.0 * cpu / max(1, stats["frames"])}


def rows(quick: bool = False) -> list[tuple[str, str, str, bool | None]]:
    """(name, measured, target, met) rows for bench/benchmark.py: Hamilton at scale 1.0 (the
    reference, every face encoded), the default (scale 0.5, identity reuse), 0.5 without
    reuse, and 0.25."""
    limit = 150 if quick else None  # frames 0-149 hold the first two appearances of Lin
    settings = [(1.0, None), (DEFAULT_SCALE, DEFAULT_REUSE), (DEFAULT_SCALE, None),
                (0.25, DEFAULT_REUSE)]
    with tempfile.TemporaryDirectory() as cache:
        runs = [run(HAMILTON, DATA / "faces", Path(cache), scale, 1, DEFAULT_TOLERANCE, limit,
                    reuse)
                for scale, reuse in settings]
    ref = runs[0]
    out = []
    for r in runs:
        recall = len(r["pairs"] & ref["pairs"]) / len(ref["pairs"]) if ref["pairs"] else float("nan")
        ratio_p50 = r["ms"]["p50"] / ref["ms"]["p50"]
        ratio_mean = r["ms"]["avg"] / ref["ms"]["avg"]
        default = r["scale"] == DEFAULT_SCALE and r["reuse"]
        setting = "identity reuse" if r["reuse"] else "every face encoded"
        out.append((
            f"4. faces on short_hamilton_clip.mp4 ({r['frames']} frames), detection scale "
            f"{r['scale']}, {setting}" + (" (default)" if default else ""),
            f"p50 {r['ms']['p50']:.0f} ms, p95 {r['ms']['p95']:.0f} ms, "
            f"mean {r['ms']['avg']:.0f} ms ({ratio_p50:.2f}× / {ratio_mean:.2f}× of full frame "
            f"at p50 / mean); recall {recall:.3f}; {r['encoded']} of {r['faces']} faces encoded",
            "mean ≤ 0.25× full-frame time, recall ≥ 0.95" if default else "—",
            (ratio_mean <= TARGET_TIME_RATIO and recall >= TARGET_RECALL) if default else None,
        ))
    return out


def _config(text: str) -> tuple[float, int, bool]:
    """'scale:upsample' (identity reuse on) or 'scale:upsample:off'."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("on", "off")):
        raise SystemExit(f"bad --configs entry {text!r}: use scale:upsample[:off]")
    return float(parts[0]), int(parts[1]), len(parts) == 2 or parts[2] == "on"


def main() -> int:
    """Parse arguments, run each setting, print the table and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=HAMILTON)
    parser.add_argument("--faces", type=Path, default=DATA / "faces")
    parser.add_argument("--configs", default="1.0:1:off,0.5:1,0.5:1:off,0.25:1,0.25:2",
                        help="scale:upsample[:off] triples (':off': every face encoded); "
                             "1.0:1:off (full frame) is the reference")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    reference = (1.0, 1, False)
    configs = [_config(c) for c in args.configs.split(",")]
    if reference not in configs:
        configs.insert(0, reference)
    configs.sort(key=lambda c: (c != reference, -c[0], c[1], not c[2]))  # the reference first

    with tempfile.TemporaryDirectory() as cache:
        rows = []
        for scale, upsample, reuse in configs:
            print(f"running scale {scale} upsample {upsample} reuse {'on' if reuse else 'off'} ...",
                  file=sys.stderr, flush=True)
            rows.append(run(args.video, args.faces, Path(cache), scale, upsample,
                            args.tolerance, args.frames, DEFAULT_REUSE if reuse else None))

    ref = rows[0]
    print(f"\n{args.video.name}: {ref['frames']} frames, tolerance {args.tolerance}, HOG; "
          f"recall = share of the full-frame (scale 1.0, upsample 1, every face encoded) "
          f"known-face matches found; enc / reused = faces encoded / carried over")
    header = (f"{'scale':>5} {'up':>2} {'reuse':>5} {'faces':>5} {'enc':>4} {'reused':>6} "
              f"{'matches':>7} {'recall':>6} {'extra':>5} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'mean ms':>7} {'cpu ms':>7} "
              f"{'p50/full':>8} {'mean/full':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        hit = len(row["pairs"] & ref["pairs"])
        row["recall"] = hit / len(ref["pairs"]) if ref["pairs"] else None
        row["extra"] = len(row["pairs"] - ref["pairs"])
        row["p50_ratio"] = row["ms"]["p50"] / ref["ms"]["p50"]
        row["mean_ratio"] = row["ms"]["avg"] / ref["ms"]["avg"]
        recall = f"{row['recall']:.3f}" if row["recall"] is not None else "n/a"
        print(f"{row['scale']:>5.2f} {row['upsample']:>2} {'on' if row['reuse'] else 'off':>5} "
              f"{row['faces']:>5} {row['encoded']:>4} {row['reused']:>6} "
              f"{len(row['pairs']):>7} {recall:>6} {row['extra']:>5} "
              f"{row['ms']['p50']:>7.1f} {row['ms']['p95']:>7.1f} {row['ms']['avg']:>7.1f} "
              f"{row['cpu_ms']:>7.1f} {row['p50_ratio']:>8.2f} {row['mean_ratio']:>9.2f}")

    if args.video.resolve() == HAMILTON.resolve() and args.frames is None:
        lin = {i for i, name in ref["pairs"] if name == "lin-manuel-miranda"}
        others = sorted({name for _, name in ref["pairs"]} - {"lin-manuel-miranda"})
        print(f"\nfull frame vs README ground truth: {len(lin)} Lin frames "
              f"({len(lin & HAMILTON_LIN_FRAMES)} of the README's {len(HAMILTON_LIN_FRAMES)}), "
              f"other names: {others or 'none'}")

    default = next((r for r in rows
                    if r["scale"] == DEFAULT_SCALE and r["upsample"] == 1 and r["reuse"]), None)
    if default is not None and default["recall"] is not None:
        ok_recall = default["recall"] >= TARGET_RECALL
        print(f"\ndefault (scale {DEFAULT_SCALE}, upsample 1, identity reuse): recall "
              f"{default['recall']:.3f} ({'meets' if ok_recall else 'misses'} >= {TARGET_RECALL}); "
              f"{default['encoded']} of {default['faces']} faces encoded; time vs full frame: "
              f"p50 {default['p50_ratio']:.2f}x, mean {default['mean_ratio']:.2f}x "
              f"(target <= {TARGET_TIME_RATIO}x: p50 "
              f"{'met' if default['p50_ratio'] <= TARGET_TIME_RATIO else 'not met'}, mean "
              f"{'met' if default['mean_ratio'] <= TARGET_TIME_RATIO else 'not met'})")
        print("encoding costs the same per face at any scale: the faces still encoded and "
              "detection set the floor of the mean and p95")

    if args.json:
        for row in rows:
            row["pairs"] = sorted(row["pairs"])
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
