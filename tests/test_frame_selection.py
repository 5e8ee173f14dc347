"""Frame selection on generated clips (noise, a small figure, flicker, cuts), on the real clips when present, and on synthetic frames."""
from __future__ import annotations

import numpy as np
import pytest

from tests.clips import read_number
from video_summarizer.selection import (
    DEFAULT_MIN_CHANGE,
    FrameSelector,
    change_between,
    change_parts,
    default_max_gap,
    thumbnail,
)
from video_summarizer.sources import Frame, open_source

# short_hamilton_clip.mp4: lin-manuel-miranda at tolerance 0.5 (data README)
HAMILTON_FACES = [(2, 3), (90, 96), (101, 102), (107, 109), (122, 125), (129, 129), (138, 140),
                  (144, 179), (181, 186), (197, 210)]


def _select(path, **kwargs) -> tuple[FrameSelector, list[int], list]:
    sel = FrameSelector(**kwargs)
    picked, frames = [], []
    with open_source(str(path)) as src:
        for frame in src:
            if sel.select(frame):
                picked.append(frame.index)
            frames.append(frame)
    return sel, picked, frames


def _decisions(path, **kwargs) -> dict[int, tuple[bool, str, float | None]]:
    """Every due frame of a clip: index -> (taken, reason, change)."""
    sel = FrameSelector(**kwargs)
    out = {}
    with open_source(str(path)) as src:
        for frame in src:
            taken = sel.select(frame)
            if sel.last_reason != "interval":
                out[frame.index] = (taken, sel.last_reason, sel.last_change)
    return out


# -- generated clips (no shared data needed) ---------------------------------------------------

def test_a_small_figure_crossing_a_still_noisy_scene_is_taken_at_every_due_frame_in_view(clips):
    clip = clips.figure_crossing()  # 160x120 at 10 fps, in view in frames 15-45
    assert clip.figure == (15, 45) and 0.025 <= clip.figure_share <= 0.035
    for max_gap in (None, 100.0):  # the default gap, and none: the change measure alone must see it
        # motion off: with it, the motion start moves the grid (tests/test_motion.py has that case)
        due = _decisions(clip.path, interval=0.5, max_gap=max_gap, motion_min_area=0)
        in_view = [i for i in due if clip.figure_in_view(i)]
        assert in_view == [15, 20, 25, 30, 35, 40, 45]
        for i in in_view:
            taken, reason, change = due[i]
            assert taken and reason == "changed" and change >= DEFAULT_MIN_CHANGE, (max_gap, i, due[i])
        before = [i for i in due if i < 10]  # the empty room: noise only
        assert all(not due[i][0] for i in before if i) and all(due[i][2] < 0.03 for i in before if i)


def test_a_still_noisy_scene_skips_the_due_frames_the_max_gap_allows(clips):
    clip = clips.still_noisy()  # 4 s at 10 fps: due frames 0, 5, ..., 35
    due = _decisions(clip.path, interval=0.5)
    assert len(due) == 8
    assert [i for i, (taken, _, _) in due.items() if taken] == [0, 10, 20, 30]  # first, then max gap (1 s)
    assert sum(not taken for taken, _, _ in due.values()) / len(due) >= 0.40
    assert all(change < 0.03 for _, _, change in list(due.values())[1:])  # noise and codec shimmer only
    long = clips.long_static()  # 60 s at 5 fps
    sel, picked, _ = _select(long.path, interval=0.5, max_gap=30.0)
    assert picked == [0, 150] and sel.skipped_unchanged == 118


def test_flicker_alone_is_no_change(clips):
    clip = clips.flicker()  # brightness swings +-20 % at 1.3 Hz
    assert max(clip.gains) > 1.19 and min(clip.gains) < 0.81
    due = _decisions(clip.path, interval=0.5, max_gap=100.0)
    assert [i for i, (taken, _, _) in due.items() if taken] == [0]
    assert max(change for _, _, change in list(due.values())[1:]) < 0.06


def test_hard_cuts_are_kept(clips):
    clip = clips.hard_cuts()  # cuts at 1.5, 3.0 and 4.5 s
    assert clip.cuts == (15, 30, 45)
    due = _decisions(clip.path, interval=0.5, max_gap=100.0)
    assert [i for i, (taken, _, _) in due.items() if taken] == [0, 15, 30, 45]
    assert all(due[c][1] == "changed" and due[c][2] >= DEFAULT_MIN_CHANGE for c in clip.cuts)


def test_a_slow_pan_adds_up_against_the_last_processed_frame(clips):
    clip = clips.pan()  # 8 px/s: 4 px between due frames, too little on its own
    due = _decisions(clip.path, interval=0.5, max_gap=100.0)
    assert [i for i, (taken, _, _) in due.items() if taken] == [0, 20]
    assert due[20][1] == "changed" and all(due[i][2] < DEFAULT_MIN_CHANGE for i in (5, 10, 15))


def test_generated_clips_decode_with_their_ground_truth(clips):
    for clip in (clips.numbered(), clips.pipe_stream(), clips.pipe_stream(container="mkv")):
        with open_source(str(clip.path)) as src:
            frames = [(f.index, round(f.timestamp, 3), read_number(f.image)) for f in src]
        assert frames == [(i, round(i / 10, 3), i) for i in range(30)], clip.path


def _first_after(picked: list[int], cut: int) -> int:
    return min(i for i in picked if i >= cut)


def test_gating_off_takes_one_frame_per_interval_without_decoding(data_dir):
    sel, picked, frames = _select(data_dir / "videos" / "clip_01_tears_of_steel.mp4", interval=0.5, min_change=0)
    assert picked == list(range(0, 240, 12))
    assert (sel.selected, sel.skipped_interval, sel.skipped_unchanged) == (20, 220, 0)
    assert sel.last_change is None and sel.last_reason == "interval"
    assert not any(f.decoded for f in frames)  # neither the interval check nor gating-off decodes


def test_interval_grid_does_not_drift_at_29_97_fps(data_dir):
    _, picked, _ = _select(data_dir / "videos" / "short_hamilton_clip.mp4", interval=0.5, min_change=0)
    assert picked == list(range(0, 275, 15))


def test_gating_keeps_hard_cuts_on_tears_of_steel(data_dir):
    path = data_dir / "videos" / "clip_01_tears_of_steel.mp4"
    _, off, _ = _select(path, interval=0.5, min_change=0)
    sel, on, frames = _select(path, interval=0.5, motion_min_area=0)  # the change measure alone
    for cut in (21, 65, 185):
        assert _first_after(on, cut) == _first_after(off, cut)  # 24, 72, 192
    assert on == [0, 24, 48, 72, 96, 120, 144, 168, 192, 216]
    assert (sel.selected, sel.skipped_unchanged) == (10, 10)
    # Only interval candidates were decoded (the change measure needs their pixels).
    assert sum(f.decoded for f in frames) <= 20


def test_small_interval_selects_each_hard_cut(data_dir):
    _, on, _ = _select(data_dir / "videos" / "clip_01_tears_of_steel.mp4", interval=0.1)
    for cut in (21, 65, 185):
        assert any(cut <= i <= cut + 3 for i in on), (cut, on)
    assert len(on) < 24  # of 100 candidates


def test_gating_on_hamilton_cuts_calls_but_keeps_cuts_and_face_appearances(data_dir):
    path = data_dir / "videos" / "short_hamilton_clip.mp4"
    _, off, _ = _select(path, interval=0.5, min_change=0)
    sel, on, _ = _select(path, interval=0.5, motion_min_area=0)  # the change measure alone
    assert len(off) == 19 and len(on) <= 0.6 * len(off)
    assert on == [0, 30, 60, 90, 120, 150, 180, 210, 225, 255]
    for cut in (20, 82, 211):
        assert _first_after(on, cut) == _first_after(off, cut)
    for first, last in HAMILTON_FACES:
        if any(first <= i <= last for i in off):
            assert any(first <= i <= last for i in on), (first, last)
    assert sel.skipped_unchanged == 9


def test_a_face_entering_counts_as_change(data_dir):
    # ff-region-face-motion.avi: no face in frames 0-29, a face from 30 on.
    sel = FrameSelector(interval=1.0, max_gap=10.0)
    with open_source(str(data_dir / "videos" / "ff-region-face-motion.avi")) as src:
        decisions = {f.index: (sel.select(f), sel.last_change) for f in src if f.index in (0, 30)}
    assert decisions[30][0] is True and decisions[30][1] > 0.25


def _frame(t: float, value: int | np.ndarray) -> Frame:
    image = value if isinstance(value, np.ndarray) else np.full((90, 160, 3), value, np.uint8)
    return Frame(int(t * 10), t, t, image)


def test_max_gap_forces_a_frame_of_a_still_scene():
    sel = FrameSelector(interval=1.0, min_change=0.1, max_gap=3.0)
    taken = [t for t in range(10) if sel.select(_frame(float(t), 80))]
    assert taken == [0, 3, 6, 9]
    assert sel.last_reason == "max_gap" and sel.last_change == 0.0
    assert (sel.selected, sel.skipped_unchanged, sel.skipped_interval) == (4, 6, 0)


def test_change_is_measured_against_the_last_processed_frame():
    sel = FrameSelector(interval=0, min_change=DEFAULT_MIN_CHANGE, max_gap=100)
    base = np.full((90, 160, 3), 100, np.uint8)
    # A patch of 4 % of the picture (a screen) brightens 4 grey levels a step: no single step
    # is enough, eight are (a window 30 levels above the floor of 1 scores 0.12).
    changes, taken = [], []
    for step in range(20):
        img = base.copy()
        img[30:50, 60:90] += np.uint8(4 * step)
        if sel.select(_frame(step / 10, img)):
            taken.append(step)
        changes.append(sel.last_change)
    assert taken == [0, 8, 16]
    assert changes[0] is None and all(c < DEFAULT_MIN_CHANGE for i, c in enumerate(changes[1:], 1) if i % 8)
    assert changes[8] == pytest.approx(0.128, abs=0.002) and changes[16] == pytest.approx(0.128, abs=0.002)


def test_a_global_brightness_change_is_no_change_but_black_to_white_is():
    scene = thumbnail(np.dstack([np.tile(np.linspace(30, 200, 160), (90, 1)).astype(np.uint8)] * 3))
    dimmer = (scene.astype(np.float32) * 0.8 + 5).astype(np.uint8)
    parts = change_parts(scene, dimmer)
    assert set(parts) == {"histogram", "layout", "decorrelation", "local"}
    assert max(parts.values()) < 0.08  # a ramp puts tones on every bin edge: the histogram's worst case
    assert max(parts["layout"], parts["decorrelation"], parts["local"]) < 0.01
    black, white = np.zeros((36, 64), np.uint8), np.full((36, 64), 255, np.uint8)
    assert change_parts(black, white)["histogram"] == 1.0  # beyond what a light does: a cut


def test_layout_change_with_the_same_histogram_is_seen():
    left = np.zeros((90, 160, 3), np.uint8)
    left[:, :80] = 255
    right = left[:, ::-1].copy()  # the same tones, moved across the frame
    a, b = thumbnail(left), thumbnail(right)
    assert a.shape == (36, 64) and a.dtype == np.uint8
    assert change_between(a, a) == 0.0
    assert change_between(a, b) == pytest.approx(1.0, abs=0.02)
    assert change_between(thumbnail(np.zeros_like(left)), thumbnail(np.full_like(left, 255))) == 1.0


def test_backwards_time_starts_a_new_grid_and_bad_settings_are_refused():
    sel = FrameSelector(interval=5.0, min_change=0)
    assert [sel.select(_frame(t, 0)) for t in (0.0, 1.0, 5.0, 2.0, 3.0)] == [True, False, True, True, False]
    assert default_max_gap(0.5) == 1.0 and default_max_gap(5.0) == 10.0 and default_max_gap(0) == 1.0
    assert default_max_gap(0.1) == 1.0 and FrameSelector(interval=2.0).max_gap == 4.0
    for kwargs in ({"interval": -1}, {"min_change": 1.5}, {"max_gap": -2}):
        with pytest.raises(ValueError):
            FrameSelector(**kwargs)


def test_due_predicts_the_interval_check_without_changing_state():
    sel = FrameSelector(interval=1.0, min_change=0.0)
    assert sel.due(0.0)
    assert sel.select(_frame(0.0, 10))
    assert not sel.due(0.5) and not sel.due(0.98)
    assert sel.due(1.0) and sel.due(1.4)
    assert (sel.selected, sel.skipped_interval) == (1, 0)  # due() counted nothing
    assert not sel.select(_frame(0.5, 10)) and sel.select(_frame(1.0, 10))
    assert sel.due(0.2)  # time went backwards: a new grid starts
