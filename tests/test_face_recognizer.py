"""face_recognizer on the shared data: real images, real clips, real face_recognition.

Face recognition costs ~0.1 s a frame here, so the clip tests decode every frame (cheap)
but recognize only the frames that decide the outcome.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.faces import (
    UNKNOWN,
    FaceMatch,
    FaceRecognizer,
    IdentityReuse,
    default_cache_dir,
)

LIN = "lin-manuel-miranda"
MEDS = "meds-aa-S029-01"
HAMILTON_FPS = 30000 / 1001  # README: 29.97 fps


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One encodings cache for the module, so faces/ is encoded once."""
    return tmp_path_factory.mktemp("face-cache")


@pytest.fixture(scope="module")
def recognizer(data_dir, cache_dir) -> FaceRecognizer:
    """Default settings, faces/ as the library."""
    return FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode in order (seeking is codec-dependent) and keep only the wanted frames."""
    cap = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    try:
        index = 0
        while index <= max(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = frame
            index += 1
    finally:
        cap.release()
    assert set(frames) == wanted, f"could not decode frames {sorted(wanted - set(frames))}"
    return frames


def names(matches: list[FaceMatch]) -> set[str]:
    return {m.name for m in matches if m.name != UNKNOWN}


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    top, right, bottom, left = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area = lambda r: (r[1] - r[3]) * (r[2] - r[0])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# ---------------------------------------------------------------------- library
def test_library_names_come_from_file_stems(recognizer):
    assert recognizer.known_names == [
        "alex-lacamoire", "biden", LIN, "meds-aa-S029-01", "obama",
    ]
    assert recognizer.encodings_per_name == {n: 1 for n in recognizer.known_names}
    assert recognizer.library == {"images": 5, "encoded": 5, "from_cache": 0, "skipped": 0}


def test_second_load_reads_the_cache_and_encodes_nothing(data_dir, cache_dir, recognizer,
                                                         monkeypatch):
    import face_recognition

    calls = []
    for fn in ("face_locations", "face_encodings", "load_image_file"):
        original = getattr(face_recognition, fn)
        monkeypatch.setattr(face_recognition, fn,
                            lambda *a, _f=fn, _o=original, **k: calls.append(_f) or _o(*a, **k))
    again = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    assert calls == []
    assert again.library == {"images": 5, "encoded": 0, "from_cache": 5, "skipped": 0}
    assert again.known_names == recognizer.known_names
    np.testing.assert_array_equal(again.known.references()[1], recognizer.known.references()[1])  # exact round trip


def test_changed_and_added_images_are_encoded_again(data_dir, tmp_path):
    lib, cache = tmp_path / "lib", tmp_path / "cache"
    lib.mkdir()
    shutil.copy(data_dir / "faces" / "alex-lacamoire.png", lib / "person.png")
    first = FaceRecognizer(lib, cache_dir=cache).load()
    assert first.library["encoded"] == 1

    # Same file name, different person; plus a new image.
    shutil.copy(data_dir / "faces" / "meds-aa-S029-01.jpg", lib / "person.png")
    shutil.copy(data_dir / "images" / "obama_small.jpg", lib / "newcomer.jpg")
    second = FaceRecognizer(lib, cache_dir=cache).load()
    assert second.library == {"images": 2, "encoded": 2, "from_cache": 0, "skipped": 0}
    third = FaceRecognizer(lib, cache_dir=cache).load()
    assert third.library == {"images": 2, "encoded": 0, "from_cache": 2, "skipped": 0}

    meds = third.recognize(cv2.imread(str(data_dir / "faces" / "meds-aa-S029-01.jpg")))
    assert [m.name for m in meds] == ["person"]
    assert meds[0].distance < 0.05  # the very image that was encoded


def test_bad_library_files_are_reported_once_and_skipped(data_dir, tmp_path, caplog):
    lib = tmp_path / "lib"
    (lib / "twins").mkdir(parents=True)
    shutil.copy(data_dir / "images" / "obama_small.jpg", lib / "good.jpg")
    shutil.copy(data_dir / "images" / "meds-aa-S001-01.jpg", lib / "twins" / "a.jpg")
    shutil.copy(data_dir / "images" / "meds-aa-S001-02.jpg", lib / "twins" / "b.jpg")
    shutil.copy(data_dir / "images" / "two_people.jpg", lib / "pair.jpg")
    cv2.imwrite(str(lib / "blank.jpg"), np.full((120, 160, 3), 128, np.uint8))
    (lib / "broken.jpg").write_bytes(b"this is not a JPEG")
    (lib / "notes.txt").write_text("not a face")
    (lib / ".DS_Store").write_bytes(b"\0")

    with caplog.at_level(logging.INFO, logger="video_summarizer.faces"):
        rec = FaceRecognizer(lib, cache_dir=tmp_path / "cache").load()

    # the start-up line and the exit report count the same images: 7 looked at, 4 skipped
    assert "known faces: 2 people, 7 images, 4 skipped; 5 encoded now, 0 from cache" in caplog.text
    assert "library: 2 people, 7 images, 4 skipped" in rec.format_stats()
    assert rec.known_names == ["good", "twins"]
    assert rec.encodings_per_name == {"good": 1, "twins": 2}
    reasons = {Path(s.path).name: s.reason for s in rec.skipped}
    assert set(reasons) == {"pair.jpg", "blank.jpg", "broken.jpg", "notes.txt"}
    assert reasons["pair.jpg"].startswith("2 faces")
    assert reasons["blank.jpg"].startswith("no face")
    assert reasons["broken.jpg"].startswith("unreadable")
    assert reasons["notes.txt"].startswith("unsupported format '.txt'")
    for name in reasons:
        assert sum(name in r.getMessage() for r in caplog.records) == 1, name
    assert not any(".DS_Store" in r.getMessage() for r in caplog.records)

    # The second photo of the same person matches that person.
    twin = rec.recognize(cv2.imread(str(data_dir / "images" / "meds-aa-S001-02.jpg")))
    assert [m.name for m in twin] == ["twins"]
    assert twin[0].distance < 0.1  # b.jpg itself is in the library


@pytest.mark.parametrize("folder", [None, "empty"])
def test_no_library_means_unknown_faces_only(data_dir, tmp_path, caplog, folder):
    if folder is not None:
        folder = tmp_path / folder
        folder.mkdir()
    with caplog.at_level(logging.INFO, logger="video_summarizer.faces"):
        rec = FaceRecognizer(folder, cache_dir=tmp_path / "cache").load()
    notes = [r for r in caplog.records if "every face will be reported as unknown" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == (logging.INFO if folder is None else logging.WARNING)
    assert rec.known_names == []
    matches = rec.recognize(cv2.imread(str(data_dir / "images" / "obama_small.jpg")))
    assert [(m.name, m.distance) for m in matches] == [(UNKNOWN, None)]


def test_missing_folder_or_a_file_is_an_input_error(data_dir, tmp_path):
    with pytest.raises(InputError, match="does not exist") as missing:
        FaceRecognizer(tmp_path / "nope", cache_dir=tmp_path).load()
    assert missing.value.option == "--known-faces"
    with pytest.raises(InputError, match="not a folder") as not_dir:
        FaceRecognizer(data_dir / "faces" / "obama.jpg", cache_dir=tmp_path).load()
    assert not_dir.value.option == "--known-faces"


def test_unwritable_cache_warns_once_and_still_loads(data_dir, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(data_dir / "images" / "obama_small.jpg", lib / "obama.jpg")
    with caplog.at_level(logging.WARNING, logger="video_summarizer.faces"):
        rec = FaceRecognizer(lib, cache_dir=blocker / "cache").load()
    assert rec.known_names == ["obama"]
    assert sum("will not be cached" in r.getMessage() for r in caplog.records) == 1


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "real-time-summarizer" / "faces"
    assert FaceRecognizer().cache_dir == tmp_path / "real-time-summarizer" / "faces"


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"model": "yolo"}, "--face-model"), ({"tolerance": -0.1}, "--face-tolerance"),
    ({"tolerance": 1.5}, "--face-tolerance"),
])
def test_bad_settings_name_the_option(kwargs, option):
    with pytest.raises(SummarizerError) as err:
        FaceRecognizer(**kwargs)
    assert err.value.option == option


@pytest.mark.parametrize("kwargs", [
    {"scale": 0}, {"scale": 1.5}, {"upsample": -1}, {"smoothing": (3, 2)}, {"smoothing": (0, 2)},
])
def test_settings_without_an_option_name_the_argument_not_an_option(kwargs):
    # No CLI option sets these (the CLI keeps the defaults): the error names the argument.
    with pytest.raises(ValueError) as err:
        FaceRecognizer(**kwargs)
    name = next(iter(kwargs))
    assert f"FaceRecognizer({name}=" in str(err.value) and "--" not in str(err.value)


def test_import_loads_no_heavy_library():
    code = ("import sys, video_summarizer.faces; "
            "print(sorted(m for m in ('cv2', 'dlib', 'face_recognition', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- frames
def test_two_people_gives_biden_and_obama_in_full_frame_coordinates(data_dir, recognizer,
                                                                     cache_dir):
    image = cv2.imread(str(data_dir / "images" / "two_people.jpg"))
    height, width = image.shape[:2]
    matches = recognizer.recognize(image)
    assert [m.name for m in matches] == ["obama", "biden"]  # left to right
    dist = {m.name: m.distance for m in matches}
    assert dist["biden"] == pytest.approx(0.07, abs=0.03)  # README: 0.07 and 0.34
    assert dist["obama"] == pytest.approx(0.34, abs=0.03)

    full = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir, scale=1.0).load()
    reference = {m.name: m.box for m in full.recognize(image)}
    for m in matches:
        top, right, bottom, left = m.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert iou(m.box, reference[m.name]) > 0.6, (m.box, reference[m.name])


def test_bgra_and_bgr_frames_agree(data_dir, recognizer):
    image = cv2.imread(str(data_dir / "images" / "obama_small.jpg"))
    bgr = recognizer.recognize(image)
    bgra = recognizer.recognize(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    assert [m.name for m in bgr] == ["obama"]
    assert bgra == bgr
    with pytest.raises(ValueError):
        recognizer.recognize(image.astype(np.float32))


def test_face_motion_clip_meds_from_frame_30(data_dir, recognizer):
    wanted = {0, 10, 20, 29, 30, 31, 50, 75, 100}
    frames = read_frames(data_dir / "videos" / "ff-region-face-motion.avi", wanted)
    seen = {i: recognizer.recognize(frame) for i, frame in sorted(frames.items())}
    for i, matches in seen.items():
        if i < 30:
            assert names(matches) == set(), (i, matches)
        else:
            assert [m.name for m in matches] == ["meds-aa-S029-01"], (i, matches)
            assert matches[0].distance < 0.2  # README: about 0.08


def test_hamilton_clip_names_lin_manuel_miranda_and_nobody_else(data_dir, recognizer):
    # README ground truth (full frame, tolerance 0.5); frames whose full-frame distance is
    # within 0.03 of the tolerance are left out: a few pixels of box shift flip them.
    present = {91, 123, 138, 146, 150, 160, 170, 178, 200, 205}
    # A small face at 0.57, no face, faces at 0.58-0.59 from Lin, another (unknown) person.
    absent = {10, 50, 84, 133, 193, 238, 260}
    frames = read_frames(data_dir / "videos" / "short_hamilton_clip.mp4", present | absent)
    found = {i: recognizer.recognize(frame) for i, frame in sorted(frames.items())}
    named = {i for i, m in found.items() if names(m)}
    assert named == present
    assert all(names(m) <= {LIN} for m in found.values())
    assert [m.name for m in found[238]] == [UNKNOWN]  # a face is found, just not a known one
    for i in present:
        (lin,) = found[i]
        top, right, bottom, left = lin.box
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 360
        assert 60 <= bottom - top <= 130  # Lin's face is 86-108 px tall in these shots


def test_caminandes_has_no_faces(data_dir, recognizer):
    wanted = set(range(0, 240, 20)) | {239}
    frames = read_frames(data_dir / "videos" / "clip_02_caminandes.mp4", wanted)
    assert {i: recognizer.recognize(f) for i, f in frames.items()} == {i: [] for i in wanted}


# ---------------------------------------------------------------------- smoothing, stats
def test_smoothing_reports_a_name_only_after_k_of_n_frames(data_dir, cache_dir):
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir, smoothing=(2, 3)).load()
    obama = cv2.imread(str(data_dir / "images" / "obama_small.jpg"))
    blank = np.zeros_like(obama)
    sequence = [obama, obama, blank, blank, obama, obama]
    reported = [[m.name for m in rec.recognize(f)] for f in sequence]
    assert reported == [[UNKNOWN], ["obama"], [], [], [UNKNOWN], ["obama"]]
    assert rec.stats["suppressed_by_smoothing"] == 2


def test_parallel_calls_agree_and_stats_count_every_frame(data_dir, cache_dir):
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    image = cv2.imread(str(data_dir / "images" / "obama_small.jpg"))
    blank = np.zeros_like(image)
    expected = rec.recognize(image)
    results, errors = [], []

    def work() -> None:
        try:
            for frame in (image, blank):
                results.append((frame is image, rec.recognize(frame)))
        except Exception as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r for is_face, r in results if is_face] == [expected] * 3
    assert [r for is_face, r in results if not is_face] == [[]] * 3

    stats = rec.stats
    assert (stats["frames"], stats["faces"], stats["known"], stats["unknown"]) == (7, 4, 4, 0)
    assert stats["names"] == {"obama": 4}
    ms = stats["ms_per_frame"]
    assert 0 < ms["min"] <= ms["p50"] <= ms["p95"] <= ms["max"]
    text = rec.format_stats()
    assert "7 frames, 4 faces (4 known, 0 unknown)" in text
    assert "obama x4" in text and "p95" in text


def test_cnn_detector_finds_the_same_face(data_dir, tmp_path, caplog, recognizer):
    # dlib here has no CUDA: cnn runs on the CPU (~0.5 s for this small image) and says so.
    image = cv2.imread(str(data_dir / "images" / "obama_small.jpg"))
    with caplog.at_level(logging.WARNING, logger="video_summarizer.faces"):
        cnn = FaceRecognizer(None, model="cnn", cache_dir=tmp_path).load()
    (face,) = cnn.recognize(image)
    (hog,) = recognizer.recognize(image)
    assert iou(face.box, hog.box) > 0.5, (face.box, hog.box)
    import dlib

    if not dlib.DLIB_USE_CUDA:
        assert sum("runs on the CPU" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------- identity reuse
# Frames of the Hamilton clip these tests use: Lin near the tolerance (86-96), Lin clearly
# (144-165), another person (238).
HAMILTON_REUSE_FRAMES = set(range(86, 97)) | set(range(144, 166)) | {238}


@pytest.fixture(scope="module")
def hamilton(data_dir) -> dict[int, np.ndarray]:
    return read_frames(data_dir / "videos" / "short_hamilton_clip.mp4", HAMILTON_REUSE_FRAMES)


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """Faces passed to face_recognition.face_encodings, one entry a call (clear after load)."""
    import face_recognition

    calls: list[int] = []
    original = face_recognition.face_encodings

    def counting(image, boxes=None, *args, **kwargs):
        calls.append(len(boxes))
        return original(image, boxes, *args, **kwargs)

    monkeypatch.setattr(face_recognition, "face_encodings", counting)
    return calls


def run_clip(rec: FaceRecognizer, frames: dict[int, np.ndarray], fps: float = HAMILTON_FPS,
             ) -> dict[int, list[FaceMatch]]:
    """Recognize frames in order with their video times, as the loop passes them."""
    return {i: rec.recognize(frames[i], timestamp=i / fps) for i in sorted(frames)}


def shifted(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The frame moved by (dx, dy) pixels, black where nothing moved in."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, matrix, (frame.shape[1], frame.shape[0]))


def test_consecutive_hamilton_frames_reuse_identities(data_dir, cache_dir, hamilton,
                                                      encoder_calls):
    frames = {i: hamilton[i] for i in range(144, 166)}  # Lin at 0.31-0.49, no cut
    every = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir, reuse=None).load()
    reusing = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    encoder_calls.clear()
    baseline = run_clip(every, frames)
    assert sum(encoder_calls) == 22 and every.stats["reused"] == 0
    assert not any(m.reused for ms in baseline.values() for m in ms)

    encoder_calls.clear()
    found = run_clip(reusing, frames)
    assert {i: [m.name for m in ms] for i, ms in found.items()} == {i: [LIN] for i in frames}
    stats = reusing.stats
    assert (stats["faces"], stats["encoded"] + stats["reused"]) == (22, 22)
    assert sum(encoder_calls) == stats["encoded"] <= 11  # 7 here: at most half
    flags = [found[i][0].reused for i in sorted(found)]
    assert flags[0] is False and sum(flags) == stats["reused"]
    longest = max(len(run) for run in "".join("r" if f else " " for f in flags).split())
    assert longest <= IdentityReuse().max_reuses
    # A reused face carries the distance of the frame that encoded it; boxes stay its own.
    for i in sorted(found)[1:]:
        (now,), (before,) = found[i], found[i - 1]
        if now.reused:
            assert now.distance == before.distance
        assert iou(now.box, baseline[i][0].box) > 0.9
    assert (f"identities: {stats['encoded']} encoded, {stats['reused']} reused"
            in reusing.format_stats())


def test_a_near_miss_is_looked_at_again(data_dir, cache_dir, hamilton):
    # Lin's distance falls through the tolerance: 0.55-0.52 in 86-89, 0.47-0.50 in 90-96.
    frames = {i: hamilton[i] for i in range(86, 97)}
    every = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir, reuse=None).load()
    reusing = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    expected = {i: [m.name for m in ms] for i, ms in run_clip(every, frames).items()}
    assert expected == {i: [UNKNOWN] if i < 90 else [LIN] for i in frames}
    found = run_clip(reusing, frames)
    assert {i: [m.name for m in ms] for i, ms in found.items()} == expected
    assert not found[90][0].reused  # 0.52 on frame 89 is too close to 0.5 to keep
    assert reusing.stats["reused"] > 0


def test_a_cut_to_another_face_forces_a_new_encoding(data_dir, cache_dir, hamilton,
                                                     encoder_calls):
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    encoder_calls.clear()
    (lin,) = rec.recognize(hamilton[159], timestamp=159 / HAMILTON_FPS)
    (again,) = rec.recognize(hamilton[160], timestamp=160 / HAMILTON_FPS)
    assert (lin.name, again.name, again.reused) == (LIN, LIN, True)
    assert encoder_calls == [1]

    # A cut, one frame later, to the other person of the clip placed where Lin was: the
    # box overlaps Lin's like a tracked face would, so only the look of the crop can tell.
    # Moved by whole HOG cells (8 px): this 72 px face is near the detector's smallest.
    other_box = (60, 106, 132, 34)  # frame 238, README: an unknown person
    dy = (again.box[0] + again.box[2] - other_box[0] - other_box[2]) // 16 * 8
    dx = (again.box[1] + again.box[3] - other_box[1] - other_box[3]) // 16 * 8
    cut = shifted(hamilton[238], dx, dy)
    (other,) = rec.recognize(cut, timestamp=161 / HAMILTON_FPS)
    assert iou(other.box, again.box) >= IdentityReuse().min_iou
    assert (other.name, other.reused) == (UNKNOWN, False)
    assert encoder_calls == [1, 1]
    fresh = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir, reuse=None).load()
    assert fresh.recognize(cut) == [other]  # the same verdict as encoding every face


def test_reuse_needs_a_close_timestamp_and_the_same_place(data_dir, cache_dir, hamilton,
                                                          encoder_calls):
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    encoder_calls.clear()
    start = 159 / HAMILTON_FPS
    rec.recognize(hamilton[159], timestamp=start)
    checks = [
        rec.recognize(hamilton[160], timestamp=start + 1.0),  # a second later in the video
        rec.recognize(hamilton[160]),  # no timestamp: adjacency unknown
        rec.recognize(shifted(hamilton[160], -200, 0), timestamp=start + 1.0 + 1 / HAMILTON_FPS),
        rec.recognize(hamilton[160], timestamp=float("nan")),
    ]
    assert [[(m.name, m.reused) for m in ms] for ms in checks] == [[(LIN, False)]] * 4
    assert encoder_calls == [1] * 5
    assert rec.stats["reused"] == 0


def test_face_motion_clip_keeps_its_names_with_reuse(data_dir, cache_dir, encoder_calls):
    path = data_dir / "videos" / "ff-region-face-motion.avi"
    frames = read_frames(path, set(range(25, 41)))
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    encoder_calls.clear()
    found = run_clip(rec, frames, fps=30.0)
    for i, matches in found.items():
        if i < 30:
            assert matches == [], (i, matches)
        else:
            assert [m.name for m in matches] == [MEDS], (i, matches)
            assert matches[0].distance < 0.2  # README: about 0.08
    stats = rec.stats
    assert (stats["faces"], stats["encoded"] + stats["reused"]) == (11, 11)
    assert sum(encoder_calls) == stats["encoded"] <= 3  # the face moves; 2 encodes here
    assert found[30][0].reused is False and found[31][0].reused is True


def test_parallel_workers_with_reuse_name_every_frame(data_dir, cache_dir, hamilton):
    rec = FaceRecognizer(data_dir / "faces", cache_dir=cache_dir).load()
    order = list(range(144, 166))
    results: dict[int, list[FaceMatch]] = {}
    errors = []

    def work(mine: list[int]) -> None:
        try:
            for i in mine:
                results[i] = rec.recognize(hamilton[i], timestamp=i / HAMILTON_FPS)
        except Exception as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    # Dealt round robin: frames reach the recognizer interleaved and slightly out of order.
    threads = [threading.Thread(target=work, args=(order[k::3],)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {i: [m.name for m in ms] for i, ms in results.items()} == {i: [LIN] for i in order}
    stats = rec.stats
    assert (stats["frames"], stats["encoded"] + stats["reused"]) == (22, 22)
    assert stats["reused"] == sum(m.reused for ms in results.values() for m in ms)


def test_an_empty_library_encodes_nothing(data_dir, tmp_path, hamilton, encoder_calls):
    rec = FaceRecognizer(None, cache_dir=tmp_path).load()
    (face,) = rec.recognize(hamilton[160], timestamp=160 / HAMILTON_FPS)
    assert (face.name, face.distance) == (UNKNOWN, None)
    assert encoder_calls == []
    assert (rec.stats["encoded"], rec.stats["reused"]) == (0, 0)


def test_reuse_settings_are_checked_and_the_flag_is_not_identity():
    for bad in ({"max_reuses": -1}, {"max_gap_s": -0.1}, {"unknown_margin_per_s": -1},
                {"min_iou": 0.0}, {"min_iou": 1.5}):
        with pytest.raises(SummarizerError):
            IdentityReuse(**bad)
    box = (1, 2, 3, 0)
    assert FaceMatch(LIN, 0.4, box).reused is False
    assert FaceMatch(LIN, 0.4, box, reused=True) == FaceMatch(LIN, 0.4, box)
