"""What a new user hits first: bad input said before any model loads, batches that survive a bad
file, outputs named apart, files private to the user. All on generated clips (no ../shared), the
CLI in this process (tests/cli_runner.run_here)."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import CLI, REPO, CliRun, cli_args, cli_env, read_events, run_here

# A summary model that does not exist and a VLM port with nothing listening: a run that got as far
# as loading or checking a model would say so; these tests must fail before, on their own problem.
NO_MODEL = ["--llm-model", "/nonexistent/mistral", "--vlm-base-url", "http://127.0.0.1:9/v1"]


@pytest.fixture
def vlm(scene_vlm):
    return scene_vlm  # the session's (tests/conftest.py)


def _quick(args: list[str], tmp_path: Path, **kw) -> tuple[CliRun, float]:
    t0 = time.monotonic()
    proc = run_here(args, cli_env(tmp_path), timeout=60, cwd=kw.get("cwd", tmp_path))
    return proc, time.monotonic() - t0


def _one_line_exit_2(proc: CliRun, option: str, *words: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {option}: "), lines[0]
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("option", ["--events", "--summary-out", "--trace-log"])
def test_an_output_file_in_a_missing_folder_is_refused_before_models_load(tmp_path, clips, option):
    clip = clips.numbered()
    target = tmp_path / "missing" / "out.jsonl"
    proc, took = _quick(["--source", str(clip.path), *NO_MODEL, option, str(target)], tmp_path)
    _one_line_exit_2(proc, option, "does not exist", str(target.parent))
    assert took < 5.0, took  # ~0.3 s here: python start-up and click, nothing heavy
    assert not target.parent.exists()


@pytest.mark.parametrize("option", ["--events", "--summary-out", "--trace-log"])
def test_a_folder_where_a_file_is_wanted_is_refused(tmp_path, clips, option):
    (tmp_path / "adir").mkdir()
    proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL, option, str(tmp_path / "adir")], tmp_path)
    _one_line_exit_2(proc, option, "is a folder")


@pytest.mark.parametrize("option", ["--events", "--summary-out", "--trace-log"])
def test_a_file_system_that_refuses_writes_is_said_at_start(tmp_path, clips, option):
    # /proc refuses new files even for root (CI runs as root, so a chmod would not stop it)
    proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL, option, "/proc/summarizer-out.jsonl"],
                     tmp_path)
    _one_line_exit_2(proc, option, "cannot write")


def test_the_default_trace_log_in_a_folder_that_takes_no_file_is_said_at_start(tmp_path, clips):
    workdir = tmp_path / "ro"
    workdir.mkdir()
    # no keys: the default trace log is ./traces.jsonl; a read-only working folder, as non-root...
    if os.geteuid() == 0:  # ...or, as root, a working folder that is not a folder at all any more
        proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL, "--trace-log", "/proc/traces.jsonl"],
                         tmp_path)
    else:
        workdir.chmod(0o555)
        proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL], tmp_path, cwd=workdir)
    _one_line_exit_2(proc, "--trace-log", "cannot write")


def test_output_dir_that_is_a_file_and_known_faces_that_is_missing(tmp_path, clips):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL, "--output-dir", str(afile)], tmp_path)
    _one_line_exit_2(proc, "--output-dir", "is a file")
    proc, took = _quick(["--source", str(clips.numbered().path), *NO_MODEL, "--known-faces",
                         str(tmp_path / "faces")], tmp_path)
    _one_line_exit_2(proc, "--known-faces", "does not exist")
    assert took < 5.0


def test_a_failed_start_leaves_no_file_behind(tmp_path, clips):
    events = tmp_path / "events.jsonl"
    proc, _ = _quick(["--source", str(tmp_path / "nope.mp4"), *NO_MODEL, "--events", str(events)], tmp_path)
    assert proc.returncode == 2
    # the model check fails after the outputs were checked: still nothing written
    proc, _ = _quick(["--source", str(clips.numbered().path), *NO_MODEL, "--events", str(events)], tmp_path)
    assert proc.returncode == 2 and "--vlm-base-url" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_a_held_batch_lock_is_said_before_models_load(tmp_path, clips):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".real_time_summarizer.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("pid 1 since then\n")
        fh.flush()
        proc, took = _quick(["--source", str(clips.numbered().path), *NO_MODEL, "--output-dir", str(out)],
                            tmp_path)
    _one_line_exit_2(proc, "--output-dir", "in use by another run")
    assert took < 5.0


def test_every_option_an_error_names_exists():
    """Collect every option="--x" in the code and check it against its click command."""
    import real_time_summarizer
    import trace_report

    def options(command) -> set[str]:
        return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}

    pattern = re.compile(r"(?:option|param_hint)=\"(--[a-z0-9-]+)\"")
    named: dict[str, set[str]] = {"cli": set(), "report": set()}
    for path in [*REPO.glob("*.py"), *(REPO / "video_summarizer").rglob("*.py")]:
        found = set(pattern.findall(path.read_text(encoding="utf-8")))
        named["report" if path.name == "trace_report.py" else "cli"] |= found
    assert len(named["cli"]) >= 8 and named["report"], named  # the scan finds them (a broken regex would pass)
    group = real_time_summarizer.cli
    commands = [*group.commands.values(), *group.commands["dataset"].commands.values(),
                *group.commands["outbox"].commands.values()]
    assert named["cli"] - set().union(*(options(c) for c in commands)) == set()
    assert named["report"] - options(trace_report.main) == set()


def test_version_and_help_are_instant(tmp_path):
    proc, took = _quick(["--version"], tmp_path)
    from video_summarizer import __version__

    assert proc.returncode == 0 and proc.stdout.strip().endswith(__version__), proc.stdout
    code = ("import sys, real_time_summarizer; "
            "print(sorted(m for m in ('cv2', 'torch', 'transformers', 'langfuse', 'numpy', 'face_recognition') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- batches ------------------------------------------------------------------------------------


def _batch(vlm, tiny_llm, tmp_path: Path, *more: str) -> tuple:
    args = cli_args(vlm.base_url, tiny_llm, "--no-faces", "--interval", "1", *more)
    run = run_here(args, cli_env(tmp_path), timeout=240, cwd=tmp_path)
    return run


def test_a_bad_file_in_a_folder_fails_alone(tmp_path, clips, vlm, tiny_llm):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(clips.numbered().path, inbox / "good.avi")
    (inbox / "empty.mp4").write_bytes(b"")  # a half-copied upload
    (inbox / "notes.mp4").write_text("not a video at all\n" * 50)
    out = tmp_path / "out"
    run = _batch(vlm, tiny_llm, tmp_path, "--source", str(inbox), "--output-dir", str(out))
    assert run.returncode == 1, run.stderr
    failed = run.stderr.split("Failed inputs:\n", 1)[1].splitlines()
    assert sorted(line.split(":")[0].strip() for line in failed) == sorted(
        [str(inbox / "empty.mp4"), str(inbox / "notes.mp4")]), failed
    for line in failed:  # the path is said once per line
        assert line.count(str(inbox)) == 1, line
    assert sorted(p.name for p in out.glob("*.summary.json")) == ["good.summary.json"]
    doc = json.loads((out / "good.summary.json").read_text())
    assert doc["schema_version"] == 1 and len(doc["captions"]) == 3  # 3 s at one frame a second


def test_same_stems_get_their_own_outputs_and_stay_idempotent(tmp_path, clips, vlm, tiny_llm):
    src = tmp_path / "src"
    for rel in ("a/clip.avi", "b/clip.avi", "a/clip.mkv"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips.numbered().path if rel.endswith(".avi") else clips.pipe_stream(container="mkv").path,
                    src / rel)
    out = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        run = _batch(vlm, tiny_llm, tmp_path, "--source", str(src / "*" / "clip.*"), "--output-dir", str(out))
    finally:
        os.umask(old_umask)
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in out.glob("*.summary.json"))
    assert names == ["a-clip.avi.summary.json", "a-clip.mkv.summary.json", "b-clip.summary.json"], names
    sources = {json.loads(p.read_text())["source"] for p in out.glob("*.summary.json")}
    assert sources == {str(src / "a/clip.avi"), str(src / "b/clip.avi"), str(src / "a/clip.mkv")}
    for p in out.glob("*.summary.*"):  # private whatever the umask (tests/test_file_modes.py)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
    # nothing to do the second time: no model is loaded (a model that does not exist is not noticed)
    again = run_here([sys.executable, CLI, "--source", str(src / "*" / "clip.*"), "--output-dir", str(out),
                      *NO_MODEL], cli_env(tmp_path), timeout=60, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Nothing to do: all 3 input(s) are up to date" in again.stderr


def test_events_and_summary_out_follow_one_rule_and_are_private(tmp_path, clips, vlm, tiny_llm):
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.md"
    old_umask = os.umask(0o027)
    try:
        run = _batch(vlm, tiny_llm, tmp_path, "--source", str(clips.numbered().path), "--events", str(events),
                     "--summary-out", str(summary), "--json")
    finally:
        os.umask(old_umask)
    assert run.returncode == 0, run.stderr
    for p in (events, summary, tmp_path / "traces.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
    doc = json.loads(run.stdout.splitlines()[0])
    assert doc["schema_version"] == 1
    # two captions in flight (a server): they may finish out of order
    assert sorted(e["frame"] for e in read_events(events) if e["type"] == "caption") == [0, 10, 20]


def test_a_truncated_file_is_named_and_fails_when_most_frames_are_lost(tmp_path, clips, vlm, tiny_llm):
    whole = clips.numbered(seconds=10.0).path.read_bytes()  # MJPG in AVI: its frames survive a cut
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: int(len(whole) * 0.4)])
    out = tmp_path / "out"
    run = _batch(vlm, tiny_llm, tmp_path, "--source", str(cut), "--output-dir", str(out), "--json")
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout.splitlines()[0])
    stats = doc["stats"]
    assert stats["truncated"] is True and stats["frames_expected"] == 100
    assert 30 <= stats["frames_read"] < 50, stats
    assert f"truncated ({stats['frames_read']} of 100 frames decoded)" in run.stderr
    failed = run.stderr.split("Failed inputs:\n", 1)[1]
    assert f"{cut}: truncated: only {stats['frames_read']} of 100 frames could be decoded" in failed
    assert not list(out.glob("*.summary.json"))  # a failed input writes no summary


def test_face_smoothing_is_an_option_parsed_to_k_of_n():
    import click

    import real_time_summarizer

    run = real_time_summarizer.cli.commands["run"]
    ctx = run.make_context("run", ["--source", "a.mp4", "--face-smoothing", "2/3"])
    from video_summarizer.options import FaceOptions

    assert FaceOptions.from_params(ctx.params).face_smoothing == (2, 3)
    for bad in ("3/2", "0/2", "two"):
        with pytest.raises(click.BadParameter, match="K/N"):
            run.make_context("run", ["--face-smoothing", bad])
