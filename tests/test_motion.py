"""Motion as the trigger (issue 22 item 1): generated clips through the selector, the real loop
and the CLI in process; the real clips when ../shared is there.

A figure of 1-1.5 % of the frame entering a still noisy scene (or a bright snowfield under a
panning camera) is taken within one read frame of entering and again while it moves; noise,
flicker, a slow pan and codec shimmer alone start no motion and take only the max-gap frames.
"""
from __future__ import annotations

import threading

import pytest

from video_summarizer.motion import MotionDetector
from video_summarizer.results import MotionReading
from video_summarizer.selection import FrameSelector
from video_summarizer.sources import Frame, open_source


def _run(path, **kwargs) -> tuple[FrameSelector, list[tuple[int, str]], list[MotionReading]]:
    """Every read frame through a selector: (selector, [(frame taken, reason)], readings)."""
    sel = FrameSelector(**kwargs)
    taken, readings = [], []
    with open_source(str(path)) as src:
        for frame in src:
            if sel.select(frame):
                taken.append((frame.index, sel.last_reason))
            readings.append(sel.motion)
    return sel, taken, readings


def _entered(clip) -> tuple[int, int]:
    """(first frame with any of the figure in view, first frame with all of it)."""
    return next(i for i, box in enumerate(clip.figure_boxes) if box), clip.figure[0]


def _contains(box, inner) -> bool:
    """Whether box (x, y, w, h) holds the centre of inner."""
    cx, cy = inner[0] + inner[2] / 2, inner[1] + inner[3] / 2
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]


# -- the selector on generated clips ------------------------------------------------------------

def test_a_figure_entering_a_still_noisy_scene_is_taken_at_once_then_once_an_interval(clips):
    clip = clips.figure_walk()  # 160x120, 10 fps, 10 s; 1.5 % of the frame, walking in at 1 s
    first_seen, all_in = _entered(clip)
    assert (first_seen, all_in) == (11, 17) and 0.013 <= clip.figure_share <= 0.017
    # The defaults: --interval 5, --max-gap 10.
    sel, taken, readings = _run(clip.path)
    start = next(i for i, r in enumerate(readings) if r.started)
    assert first_seen <= start <= all_in + 1  # within a read frame of entering
    assert taken == [(0, "first"), (start, "motion_start"), (start + 50, "motion")]  # again 5 s later
    assert sel.motion_starts == 1 and readings[start + 50].moving
    # At --interval 0.5: every due frame of the walk, half a second apart from the start on.
    _, taken, _ = _run(clip.path, interval=0.5)
    walk = [i for i, _ in taken if start <= i <= clip.figure[1]]
    assert walk == list(range(start, clip.figure[1] + 1, 5))
    assert {reason for i, reason in taken if start < i <= clip.figure[1]} <= {"motion", "changed"}


def test_a_small_figure_under_heavy_noise_is_taken_where_the_change_measure_alone_misses_it(clips):
    clip = clips.figure_walk(share=0.01, noise=10.0)
    first_seen, all_in = _entered(clip)
    _, taken, readings = _run(clip.path, interval=0.5)
    start = next(i for i, r in enumerate(readings) if r.started)
    assert first_seen <= start <= all_in + 1
    assert [i for i, _ in taken if start <= i <= clip.figure[1]] == list(range(start, clip.figure[1] + 1, 5))
    # The change measure alone (as before motion) sees it in few due frames: the max gap takes the rest.
    _, alone, _ = _run(clip.path, interval=0.5, motion_min_area=0)
    in_view = [(i, reason) for i, reason in alone if clip.figure_in_view(i)]
    assert sum(reason == "changed" for _, reason in in_view) <= 3 and len(in_view) <= 10


@pytest.mark.parametrize("name, options", [
    ("still_noisy", {}),  # mp4v: sensor noise and the codec's shimmer
    ("still_noisy", {"noise": 10.0}),  # heavy noise
    ("still_noisy", {"size": (640, 360)}),  # the codec's shimmer at a camera's size
    ("flicker", {}),  # +-20 % at 1.3 Hz
    ("flicker", {"depth": 0.35, "hz": 3.0}),
    ("pan", {}),  # 0.8 px a frame
    ("pan", {"px_per_s": 30.0}),  # 3 px a frame
    ("figure_walk", {"scene": "snow", "pan_px_per_s": 20.0, "enter_s": 20.0, "exit_s": 30.0, "seconds": 4.0}),
])
def test_noise_flicker_a_slow_pan_and_codec_shimmer_alone_start_no_motion(clips, name, options):
    clip = clips.get(name, **options)
    assert clip.frame_count == 40 and clip.fps == 10.0
    sel, taken, readings = _run(clip.path, interval=0.5)
    assert sel.motion_starts == 0 and not any(r.moving or r.started for r in readings)
    # A still scene: the first frame, then one a max gap (1 s at --interval 0.5).
    assert [i for i, _ in taken] == [0, 10, 20, 30]
    assert not any(reason.startswith("motion") for _, reason in taken)


@pytest.mark.parametrize("options", [
    {"scene": "snow", "pan_px_per_s": 20.0, "share": 0.012},  # 2 px a frame, 160x120
    {"scene": "snow", "pan_px_per_s": 80.0, "share": 0.01, "size": (640, 360)},  # 8 px a frame
])
def test_a_figure_crossing_a_snowfield_under_a_panning_camera_is_seen(clips, options):
    clip = clips.figure_walk(**options)  # the case: small, bright low-texture scene, the camera moving
    first_seen, all_in = _entered(clip)
    sel, taken, readings = _run(clip.path)
    starts = [i for i, r in enumerate(readings) if r.started]
    assert len(starts) == 1 and first_seen <= starts[0] <= all_in + 1
    assert taken[:2] == [(0, "first"), (starts[0], "motion_start")] and (starts[0] + 50, "motion") in taken
    in_view = [i for i in range(all_in, clip.figure[1] + 1)]
    assert sum(readings[i].moving for i in in_view) == len(in_view)
    boxed = [i for i in in_view if readings[i].box and _contains(readings[i].box, clip.figure_boxes[i])]
    assert len(boxed) >= 0.9 * len(in_view)


# -- the detector itself --------------------------------------------------------------------------

def test_the_detector_reports_start_and_end_with_a_box_in_the_frames_pixels():
    import numpy as np

    rng = np.random.default_rng(0)
    scene = rng.integers(60, 200, (360, 640, 3), dtype=np.uint8)
    det = MotionDetector()
    readings = []
    for i in range(60):  # a dark 40x40 square moves right 8 px a frame from frame 10 to 29
        img = np.clip(scene.astype(np.int16) + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
        if 10 <= i < 30:
            x = 100 + 8 * (i - 10)
            img[200:240, x:x + 40] = 20
        readings.append(det.update(img, i / 10))
    assert [i for i, r in enumerate(readings) if r.started] == [11]
    assert [i for i, r in enumerate(readings) if r.ended] == [39]  # 1 s after the last frame that moved (29)
    r = readings[20]  # the square at x 180..220, y 200..240 (and where it just was)
    assert r.moving and r.box is not None and _contains(r.box, (180, 200, 40, 40))
    assert r.box[0] >= 150 and r.box[0] + r.box[2] <= 240 and 190 <= r.box[1] <= 200
    assert 0.004 <= r.area <= 0.02 and r.video_time == 2.0
    assert readings[45] == MotionReading(False, False, False, 0.0, None, 4.5)
    with pytest.raises(ValueError):
        MotionDetector(min_area=0)


def test_a_cut_ends_the_motion_and_motion_under_way_in_a_new_scene_is_no_start():
    import numpy as np

    rng = np.random.default_rng(1)
    first, second = (rng.integers(40, 220, (90, 160), dtype=np.uint8) for _ in range(2))
    det = MotionDetector()
    readings = []
    for i in range(40):
        img = (first if i < 20 else second).copy()
        if i >= 5:  # a bright block walks in at frame 5 and keeps moving, across the cut at 20
            x = 3 * i
            img[40:60, x:x + 10] = 255
        readings.append(det.update(img, i / 10))
    assert [i for i, r in enumerate(readings) if r.started] == [6]  # seen in two frames of a still scene
    assert [i for i, r in enumerate(readings) if r.ended] == [20] and det.scene_changes == 1
    assert not any(r.moving for r in readings[20:])  # already moving when the new scene began


def test_motion_off_or_gating_off_reads_no_pixels(clips):
    clip = clips.figure_walk()
    for kwargs, decoded in (({"interval": 0.5, "min_change": 0}, 0), ({"interval": 0.5, "motion_min_area": 0}, 20)):
        sel = FrameSelector(**kwargs)
        with open_source(str(clip.path)) as src:
            frames = [f for f in src if sel.select(f) or True]
        assert sel.detector is None and sel.motion is None and sel.motion_starts == 0
        assert len(frames) == 100 and sum(f.decoded for f in frames) == decoded  # none; the due frames only
    with pytest.raises(ValueError):
        FrameSelector(motion_min_area=1.0)


# -- the loop: a live source's slots, events, the frame trace, the CLI ----------------------------------

class _LiveFrames:
    """A live source stand-in: the decoded frames of a clip, with their clip times."""

    live = True
    label = "cam"
    frames_dropped = 0

    def __init__(self, path) -> None:
        with open_source(str(path)) as src:
            self.frames = [Frame(f.index, f.timestamp, f.timestamp, f.image) for f in src]

    def __iter__(self):
        return iter(self.frames)


def test_a_live_motion_start_takes_the_next_free_slot(clips, tmp_path, monkeypatch):
    from langfuse_tracker import LangfuseTracker
    from tests.test_backends import OnlyCaptions, OnlySummaries
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages

    for key in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    clip = clips.figure_walk()
    start = next(i for i, r in enumerate(_run(clip.path)[2]) if r.started)
    slots = threading.BoundedSemaphore(1)
    slots.acquire()  # busy until the frame after the motion start

    def free_a_slot(frame, run) -> None:
        if frame.index == start + 1:
            slots.release()

    events = []
    writer = EventWriter(None)
    writer.add_listener(lambda kind, record: events.append((kind, record)))
    vlm = OnlyCaptions()
    stages = Stages(tracker=LangfuseTracker(trace_log=tmp_path / "trace.jsonl"), vlm=vlm, summarizer=OnlySummaries(),
                    faces=None, events=writer)
    run = SourceRun(_LiveFrames(clip.path), FrameSelector(), stages, PipelineConfig(summary_interval=1e9),
                    session_id="s", stop_event=threading.Event(), on_frame=free_a_slot, slots=slots)
    doc = run.run()
    stages.tracker.close(deadline_s=5)
    captions = [r["frame"] for kind, r in events if kind == "caption"]
    assert captions[0] == start + 1  # the start was dropped (no slot), the next read frame took it
    # Every frame up to the start was dropped (none taken yet, each was due; then the start itself).
    assert doc.stats["dropped_busy"] == start + 1
    assert [r["state"] for kind, r in events if kind == "motion"] == ["start", "end"]


def test_motion_events_and_the_frame_trace_through_the_cli(clips, tmp_path):
    from tests.cli_runner import invoke_cli, read_events
    from tests.fake_openai import FakeOpenAIServer

    clip = clips.figure_walk()  # 10 s at 10 fps; the figure walks in at 1 s and is gone at 9 s
    first_seen, all_in = _entered(clip)
    events, trace = tmp_path / "events.jsonl", tmp_path / "trace.jsonl"
    with FakeOpenAIServer(reply="A person walks across a room.") as srv:
        run = invoke_cli(["--vlm-base-url", srv.base_url, "--vlm-model", "qwen3", "--llm-base-url", srv.base_url,
                          "--llm-model", "qwen3", "--no-faces", "--source", str(clip.path),
                          "--events", str(events), "--trace-log", str(trace)])  # the defaults: --interval 5
    assert run.returncode == 0, run.stderr
    lines = read_events(events)
    motion = [e for e in lines if e["type"] == "motion"]
    assert [m["state"] for m in motion] == ["start", "end"]
    start, end = motion
    assert first_seen <= start["frame"] <= all_in + 1 and start["video_time"] == round(start["frame"] / 10, 3)
    assert start["source"] == clip.path.stem and _contains(start["box"], clip.figure_boxes[start["frame"]])
    assert 0.002 <= start["area"] <= 2 * clip.figure_share and end["box"] is None and end["area"] == 0.0
    assert clip.time_of(clip.figure[1]) + 0.9 <= end["video_time"] <= 10.0  # a second after the last step
    captions = sorted(e["frame"] for e in lines if e["type"] == "caption")  # jobs run side by side: any order
    assert captions == [0, start["frame"], start["frame"] + 50]
    traced = {t["metadata"]["frame_index"]: t["metadata"] for t in read_events(trace)
              if t["type"] == "trace" and t["name"] == "frame_processing"}
    assert sorted(traced) == captions
    assert traced[start["frame"]]["motion"]["started"] is True
    assert traced[start["frame"]]["motion"]["box"] == start["box"]
    assert traced[0]["motion"] == {"moving": False, "started": False, "ended": False, "area": 0.0, "box": None,
                                   "video_time": 0.0}
    bad = invoke_cli(["--source", str(clip.path), "--motion-min-area", "0.9"])
    assert bad.returncode == 2 and "--motion-min-area" in bad.stderr


# -- the real clips ----------------------------------------------------------------------------------

HAMILTON_FACES = [(2, 3), (90, 96), (101, 102), (107, 109), (122, 125), (129, 129), (138, 140),
                  (144, 179), (181, 186), (197, 210)]
CUTS = {"short_hamilton_clip.mp4": ([20, 82, 211], 275), "clip_01_tears_of_steel.mp4": ([21, 65, 185], 240)}


@pytest.mark.parametrize("name", sorted(CUTS))
def test_motion_saves_calls_on_the_real_clips_and_loses_no_cut_or_face(data_dir, name):
    cuts, total = CUTS[name]
    path = data_dir / "videos" / name
    _, every, _ = _run(path, interval=0.5, min_change=0)
    _, taken, _ = _run(path, interval=0.5)
    every, on = [i for i, _ in every], [i for i, _ in taken]
    assert len(on) <= 0.6 * len(every), (len(on), len(every))
    spans = [(c, nxt - 1) for c, nxt in zip(cuts, cuts[1:] + [total])]
    spans += HAMILTON_FACES if name.startswith("short_hamilton") else []
    for first, last in spans:
        if any(first <= i <= last for i in every):
            assert any(first <= i <= last for i in on), (first, last, on)
