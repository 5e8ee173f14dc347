"""What a --source names before anything is opened: labels, folder and glob expansion, cheap checks."""
from __future__ import annotations

import glob
import logging
import sys

import pytest

from video_summarizer.errors import InputError
from video_summarizer.redact import redact_url
from video_summarizer.sources import (
    VIDEO_EXTENSIONS,
    check_source,
    expand_sources,
    open_source,
    source_label,
    unique_labels,
)

# --- labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,label", [
    ("rtsp://user:pw@nvr:554/cam1", "nvr-cam1"),
    ("rtsp://nvr/cam2", "nvr-cam2"),
    ("http://127.0.0.1:8080/stream/a.mjpg", "127.0.0.1-stream-a"),
    ("rtsp://admin:hunter2@192.168.1.20:554/Streaming/Channels/101", "192.168.1.20-Streaming-Channels-101"),
    # Dahua picks the camera in the query: those keys stay, every other value (tokens) goes.
    ("rtsp://nvr/cam/realmonitor?channel=3&subtype=0&token=abc123", "nvr-cam-realmonitor-channel3-subtype0"),
    # A segment that is not a plain name may be a key: it is left out ("front door" with it).
    ("https://cams.example.com/live/front%20door.m3u8?key=s3cret", "cams.example.com-live"),
    ("rtsp://host/app/sk_live_ABC123", "host-app"),
    ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop", "a.rtmp.youtube.com-live2"),
    ("rtsps://192.168.1.1:7441/AbCdEf123456?enableSrtp", "192.168.1.1"),
    ("rtsp://nvr:554/", "nvr"),
    ("http://[::1]:8000/cam1", "1-cam1"),
    ("rtmp://host/app/../..", "host-app"),
    ("cam0", "cam0"), ("0", "cam0"), ("CAM3", "cam3"), ("/dev/video2", "cam2"),
    ("-", "stdin"),
    ("/data/in/clip.mp4", "clip"), ("relative/my clip.webm", "my clip"),
])
def test_source_label(spec, label):
    assert source_label(spec) == label
    if "://" in spec:
        assert set(label) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
        assert not any(secret in label for secret in ("user", "pw", "admin", "hunter2", "abc123", "s3cret", "554",
                                                      "sk_live", "ABC123", "abcd", "AbCdEf", "Srtp"))


def test_a_long_stream_path_gives_a_bounded_label():
    label = source_label("rtsp://nvr/" + "/".join(["segment"] * 40))
    assert label.startswith("nvr-segment-segment") and len(label) <= 80 and not label.endswith("-")


@pytest.mark.parametrize("labels,expected", [
    (["nvr-cam1", "nvr-cam2"], ["nvr-cam1", "nvr-cam2"]),
    (["nvr", "nvr", "nvr"], ["nvr", "nvr-2", "nvr-3"]),
    (["clip", "other", "clip"], ["clip", "other", "clip-2"]),
    (["a", "a", "a-2"], ["a", "a-3", "a-2"]),  # never onto a label that is already someone's
    ([], []),
])
def test_unique_labels(labels, expected):
    assert unique_labels(labels) == expected


def test_open_source_takes_the_label_to_use(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 80 * i, np.uint8))
    writer.release()
    with open_source(str(path)) as src:
        assert src.label == "clip"
    with open_source(str(path), label="clip-2") as src:
        assert src.label == "clip-2" and sum(1 for _ in src) == 3


def test_redact_url_hides_user_info_and_query_secrets():
    assert redact_url("rtsp://admin:pw@nvr:554/cam?channel=2&token=t0k&auth=") == \
        "rtsp://***@nvr:554/cam?channel=2&token=***&auth=***"
    assert redact_url("http://nvr/cam1.mjpg") == "http://nvr/cam1.mjpg"


# --- expand_sources ----------------------------------------------------------------------


def test_expand_sources_folders_globs_and_passthrough(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("b.MP4", "a.avi", "c.webm", "notes.txt"):
        (clips / name).write_bytes(b"x")
    (clips / "sub").mkdir()
    (clips / "sub" / "d.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    specs = [str(clips), str(clips / "*.webm"), "cam0", "-", "rtsp://cam.local/stream", str(tmp_path / "one.mkv")]
    assert expand_sources(specs) == [
        str(clips / "a.avi"), str(clips / "b.MP4"), str(clips / "c.webm"),  # sorted, deduplicated
        "cam0", "-", "rtsp://cam.local/stream", str(tmp_path / "one.mkv"),
    ]
    assert expand_sources([str(clips / "**" / "*.mp4")]) == [str(clips / "sub" / "d.mp4")]  # globs match case as the OS does
    assert ".mp4" in VIDEO_EXTENSIONS and ".txt" not in VIDEO_EXTENSIONS
    with pytest.raises(InputError, match="no video files in folder") as info:
        expand_sources([str(tmp_path / "empty")])
    assert info.value.option == "--source"
    with pytest.raises(InputError, match="no video files match"):
        expand_sources([str(tmp_path / "*.mov")])


def test_check_source_fails_fast_on_files_and_missing_cameras(tmp_path, monkeypatch):
    (tmp_path / "empty.mp4").write_bytes(b"")
    for bad, words in ((tmp_path / "missing.mp4", "not found"), (tmp_path / "empty.mp4", "empty"),
                       (tmp_path, "is a folder")):
        with pytest.raises(InputError, match=words) as info:
            check_source(str(bad))
        assert info.value.option == "--source"
    for fine in ("-", "rtsp://example.invalid/stream"):
        check_source(fine)  # only known once opened
    present = sorted(int(p[len("/dev/video"):]) for p in glob.glob("/dev/video[0-9]*"))
    absent = next(i for i in range(7, 100) if i not in present)
    if sys.platform.startswith("linux"):  # a camera index is /dev/videoN to V4L2: known without opening it
        for spec in (f"cam{absent}", str(absent), f"/dev/video{absent}"):
            with pytest.raises(InputError) as info:
                check_source(spec)
            message = str(info.value)
            assert message.startswith(f"camera {spec}: no such device /dev/video{absent} (")
            assert info.value.option == "--source"
            if present:
                assert f"cameras here: cam{present[0]}" in message
            else:
                assert "no /dev/video* devices on this machine" in message
        for index in present:
            check_source(f"cam{index}")  # exists: whether it opens is known only when opened
    monkeypatch.setattr(sys, "platform", "darwin")  # no device nodes to look at: known once opened
    check_source(f"cam{absent}")


def test_folder_subfolders_are_named_once_and_bad_files_stay_listed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.sources")
    photos = tmp_path / "photos"
    for sub in ("2023", "2024", ".thumbnails"):
        (photos / sub).mkdir(parents=True)
    (photos / "2024" / "x.mp4").write_bytes(b"x")
    (photos / "empty.mp4").write_bytes(b"")  # a half-copied upload: listed, fails when opened
    (photos / "locked.avi").write_bytes(b"x")
    (photos / "locked.avi").chmod(0o000)
    assert expand_sources([str(photos)]) == [str(photos / "empty.mp4"), str(photos / "locked.avi")]
    said = [r.getMessage() for r in caplog.records if r.name == "video_summarizer.sources"]
    assert said == [f"{photos}: 2 subfolders not searched (2023, 2024); give them as --source too, "
                    f"or a glob such as '{photos}/**/*.mp4'"]
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert expand_sources([str(photos / "*.mp4")]) == [str(photos / "empty.mp4")]  # globs keep them too
    with pytest.raises(InputError, match=r"empty\.mp4 is empty \(0 bytes\)") as info:
        open_source(str(photos / "empty.mp4"))
    assert info.value.option == "--source"


def test_a_dangling_symlink_is_named_once_not_skipped_silently(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.sources")
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.mp4").write_bytes(b"x")
    (clips / "gone.mp4").symlink_to(tmp_path / "moved-away.mp4")
    (clips / "notes.txt").symlink_to(tmp_path / "nothing.txt")  # not a video name: not ours to name
    # the folder and a glob both find it: said once
    assert expand_sources([str(clips), str(clips / "*.mp4")]) == [str(clips / "a.mp4")]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "video_summarizer.sources"]
    assert said == [(logging.WARNING, f"{clips / 'gone.mp4'}: skipped: dangling symlink "
                                      f"(to {tmp_path / 'moved-away.mp4'}, which does not exist)")]


def test_a_folder_with_only_subfolders_says_where_the_videos_may_be(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.sources")
    (tmp_path / "in" / "day1").mkdir(parents=True)
    with pytest.raises(InputError) as info:
        expand_sources([str(tmp_path / "in")])
    assert str(info.value).endswith(f"; 1 subfolder not searched (day1); give them as --source too, "
                                    f"or a glob such as '{tmp_path / 'in'}/**/*.mp4'")
    assert not caplog.records  # said once: in the error, not also in a log line
