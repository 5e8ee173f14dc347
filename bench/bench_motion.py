"""Benchmark rows for motion as the trigger (issue 22): the detector's cost per read frame and the
caption calls it saves on the real clips.

    python -m bench.benchmark --only 13

The detector's cost is measured on the frames of clip_01_tears_of_steel.mp4 (640x360) decoded
into memory first, so decoding is not counted: several passes over all of them, each pass with
a fresh detector. This machine is shared (other processes take the cores in bursts), so the
figure judged is each frame's best time over the passes, averaged over the frames; the median
pass is given beside it. The calls saved compare the default selection with one frame every
interval (--min-change 0), both at --interval 0.5, on the two real clips: a cut or (Hamilton)
a face appearance that the every-interval run captions must still have a frame of its own
(bench.benchmark's CUTS and HAMILTON_FACES, as the gating row 7 counts them).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

ROW = 13


def detector_cost(path: Path, passes: int) -> tuple[float, float, int]:
    """(mean over frames of each frame's best ms, median pass ms per frame, frames) of MotionDetector.update."""
    import cv2

    from video_summarizer.motion import MotionDetector

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    best = [float("inf")] * len(frames)
    per_pass = []
    for _ in range(passes):
        detector = MotionDetector()
        start_pass = time.perf_counter()
        for i, image in enumerate(frames):
            t0 = time.perf_counter()
            detector.update(image, i / 24.0)
            best[i] = min(best[i], time.perf_counter() - t0)
        per_pass.append((time.perf_counter() - start_pass) / len(frames))
    return 1000 * statistics.fmean(best), 1000 * statistics.median(per_pass), len(frames)


def taken(path: Path, **selector_options) -> list[int]:
    """The frames a FrameSelector with these options takes from a file."""
    from video_summarizer.selection import FrameSelector
    from video_summarizer.sources import open_source

    sel = FrameSelector(**selector_options)
    with open_source(str(path)) as src:
        return [f.index for f in src if sel.select(f)]


def rows(quick: bool = False) -> list[tuple[str, str, str, bool | None]]:
    """The motion rows: (name, measured, target, met)."""
    from bench.benchmark import CUTS, DATA, HAMILTON_FACES

    out = []
    tears = DATA / "videos" / "clip_01_tears_of_steel.mp4"
    if tears.is_file():
        best, median, n = detector_cost(tears, 3 if quick else 7)
        out.append((f"{ROW}. motion detector per read frame at 640×360 ({n} frames of clip_01_tears_of_steel.mp4, "
                    "decoded beforehand)", f"{best:.2f} ms (median pass {median:.2f} ms)", "≤ 1 ms", best <= 1.0))
    for name, (cuts, total) in CUTS.items():
        path = DATA / "videos" / name
        if not path.is_file():
            out.append((f"{ROW}. calls saved by motion on {name}", f"not run: {path} not found", "—", None))
            continue
        every = taken(path, interval=0.5, min_change=0.0)
        on = taken(path, interval=0.5)
        spans = [(c, nxt - 1) for c, nxt in zip(cuts, cuts[1:] + [total])]
        spans += HAMILTON_FACES if name.startswith("short_hamilton") else []
        lost = [s for s in spans if any(s[0] <= i <= s[1] for i in every) and not any(s[0] <= i <= s[1] for i in on)]
        fewer = 1 - len(on) / len(every)
        out.append((f"{ROW}. calls saved by motion vs every interval at --interval 0.5 on {name} (defaults: "
                    "motion and change gating on)",
                    f"{len(on)} vs {len(every)} ({fewer:.0%} fewer), lost: {lost or 'none'}",
                    "≥ 40% fewer, nothing lost", fewer >= 0.40 and not lost))
    return out
