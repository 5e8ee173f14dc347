"""Frame selection on the real clips (interval, change gating, cuts, face appearances) and synthetic frames."""
from __future__ import annotations

import numpy as np
import pytest

from video_summarizer.selection import (
    DEFAULT_MIN_CHANGE,
    FrameSelector,
    change_between,
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
    sel, on, frames = _select(path, interval=0.5)
    for cut in (21, 65, 185):
        assert _first_after(on, cut) == _first_after(off, cut)  # 24, 72, 192
    assert on == [0, 24, 72, 120, 168, 192, 216, 228]
    assert (sel.selected, sel.skipped_unchanged) == (8, 12)
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
    sel, on, _ = _select(path, interval=0.5)
    assert len(off) == 19 and len(on) <= 0.6 * len(off)
    assert on == [0, 30, 60, 75, 90, 150, 210, 225]
    for cut in (20, 82, 211):
        assert _first_after(on, cut) == _first_after(off, cut)
    for first, last in HAMILTON_FACES:
        if any(first <= i <= last for i in off):
            assert any(first <= i <= last for i in on), (first, last)
    assert sel.skipped_unchanged == 11


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
    ramp = np.tile(np.linspace(0, 127, 160).astype(np.uint8), (90, 1))
    # The picture brightens 10 grey levels a step: no single step is enough, two are.
    changes, taken = [], []
    for v in range(0, 120, 10):
        if sel.select(_frame(v / 10, np.dstack([ramp + v] * 3))):
            taken.append(v)
        changes.append(sel.last_change)
    assert taken == [0, 20, 40, 60, 80, 100]
    assert changes[0] is None and all(c < DEFAULT_MIN_CHANGE for c in changes[1::2])
    assert all(c >= DEFAULT_MIN_CHANGE for c in changes[2::2])


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
    assert default_max_gap(0.5) == 2.0 and default_max_gap(5.0) == 20.0 and default_max_gap(0) == 2.0
    assert FrameSelector(interval=0.5).max_gap == 2.0
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
