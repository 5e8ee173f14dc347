"""Smaller first-contact defects (issue 20): closing lines that agree, whole sentences, run names used once.

In process: the real tracker against the local Langfuse stand-in, and the CLI's main through
click's CliRunner with the caption model served by the local OpenAI-compatible stand-in.
"""
from __future__ import annotations

import ast
import json
import os
import re
import uuid
from pathlib import Path

from click.testing import CliRunner

from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer
from tests.test_tracker import SECRET, run_frame

REPO = Path(__file__).resolve().parent.parent
# The CLI reads these from the environment: a test sets what it needs and nothing else.
CLEAN_ENV = {k: None for k in os.environ if k.startswith(("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_", "JUDGE_"))}


def _cli(*args: str, cwd: Path):
    from real_time_summarizer import cli

    old = os.getcwd()
    os.chdir(cwd)  # the dataset folders and their runs are relative to it, as for a user
    try:
        return CliRunner().invoke(cli, list(args), env=CLEAN_ENV)
    finally:
        os.chdir(old)


# -- closing lines ----------------------------------------------------------------------------
def test_the_closing_lines_state_each_delivery_count_once_and_agree():
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        from langfuse_tracker import LangfuseTracker

        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url, timeout_s=2)
        for frame in (1, 2):  # each: a trace (its root span), 3 spans, 2 generations, 7 scores
            run_frame(tracker, frame, {})
        statistics = tracker.format_stats()  # the CLI prints the statistics, then closes the tracker
        report = tracker.close(deadline_s=5)
        after = tracker.format_stats()  # a Ray worker's statistics come after its close
    closing = statistics + "\n" + report.message
    assert report.observations_delivered == report.observations == 12 and report.scores_delivered == 14
    assert re.findall(r"(\d+)/(\d+) observations", closing) == [("12", "12")], closing  # once, final
    assert re.findall(r"(\d+)/(\d+) scores", closing) == [("14", "14")], closing
    assert statistics.startswith("Tracing: 2 traces, 12 observations (4 generations, 0 errors), 14 scores"), statistics
    assert after.startswith("Tracing: 2 traces, 12 observations (4 generations, 0 errors), 14 scores; "
                            "Langfuse acknowledged 12/12 observations and 14/14 scores"), after


# -- whole sentences --------------------------------------------------------------------------
def test_dataset_push_without_keys_is_one_whole_sentence(tmp_path):
    result = _cli("dataset", "push", "frames", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "Error: dataset push: needs Langfuse keys to upload the dataset folder frames/: set LANGFUSE_PUBLIC_KEY, "
        "LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL (or source setup_langfuse.sh)"]


_CUT = {"to", "of", "for", "with", "at", "in", "on", "from", "by", "into", "and", "or", "the", "a", "an", "than", "as"}
_SAYS = {"InputError", "BackendUnavailable", "SummarizerError", "UsageProblem", "ClickException", "BadParameter",
         "debug", "info", "warning", "error", "exception", "critical", "log", "write", "fail"}


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def test_no_message_ends_in_the_middle_of_a_sentence():
    """Errors and log lines of the project's code never end on a preposition, article or conjunction."""
    files = [p for p in REPO.rglob("*.py")
             if not {".venv", ".venv-sdk4", "tests", "bench", "build"} & set(p.relative_to(REPO).parts)]
    assert len(files) > 30
    cut = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            for arg in node.args[:2] if name in _SAYS else ():
                text = (_literal(arg) or "").rstrip()
                words = re.findall(r"[A-Za-z]+", text)
                if words and text[-1].isalpha() and words[-1].lower() in _CUT:
                    cut.append(f"{path.relative_to(REPO)}:{node.lineno}: ...{text[-50:]!r}")
    assert cut == []


# -- experiment run names -----------------------------------------------------------------------
def test_a_reused_experiment_run_name_is_refused_before_anything_runs(tmp_path):
    from tests.clips import numbered_frame
    from video_summarizer.evals.datasets import DatasetItem, LocalDataset
    from video_summarizer.frames import to_jpeg_bytes

    local = LocalDataset(tmp_path / "frames")
    for i in range(2):
        local.add(DatasetItem(f"item-{i}", to_jpeg_bytes(numbered_frame(i), 256, 80), {"faces": []}, {"frame": i}))
    records = tmp_path / "frames" / "runs" / "run-a.jsonl"
    with FakeOpenAIServer(models=("qwen3",), reply="A coloured band over squares.") as vlm:
        args = ("experiment", "run-a", "--dataset", "frames", "--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3")
        first = _cli(*args, cwd=tmp_path)
        assert first.exit_code == 0, first.output
        kept, asked = records.read_bytes(), len(vlm.requests)
        again = _cli(*args, cwd=tmp_path)
        assert len(vlm.requests) == asked == 2  # nothing captioned the second time
    assert again.exit_code == 2, again.output
    assert again.stderr.splitlines() == [
        f"Error: experiment: dataset frames already has a run named 'run-a' ({Path('frames/runs/run-a.jsonl')}): "
        "give this run another name, so that both can be compared"]
    assert records.read_bytes() == kept and [json.loads(x)["run"] for x in kept.splitlines()] == ["run-a"] * 2
