"""The commands, in process through click's CliRunner: each lists only its own options, `run` is the
default, the flags that were modes still work (saying once which command replaces them), and a
whole run in process leaves the logging and signal handlers as it found them."""
from __future__ import annotations

import json
import logging
import signal

import pytest
from click.testing import CliRunner

from real_time_summarizer import cli
from tests.fake_openai import FakeOpenAIServer
from video_summarizer.cli.group import LEGACY, redirect_legacy

# The CLI reads these from the environment: a test sets what it needs and nothing else.
CLEAN = ("LANGFUSE_", "VLM_", "LLM_", "SUMMARIZER_", "JUDGE_", "LANCEDB_", "KNOWN_FACES_DIR", "FACE_", "RAY_ADDRESS")

SOURCE = {"--source", "--source-label", "--live", "--reconnect-attempts", "--max-pixels", "--stdin-max-mb"}
FACES = {"--known-faces", "--no-faces", "--face-tolerance", "--face-smoothing", "--blur-faces", "--face-model"}
CAPTION = {"--vlm-backend", "--vlm-base-url", "--vlm-model", "--vlm-device", "--vlm-api-key", "--vlm-timeout",
           "--vlm-max-tokens", "--vlm-dtype"}
SUMMARY_MODEL = {"--llm-model", "--llm-base-url", "--llm-api-key", "--llm-device", "--llm-dtype"}
INDEX = {"--index", "--embed-model"}
QUERY = {"--faces", "--source-filter", "--since", "--until", "--limit"}
PROMPTS = {"--prompt-label", "--prompt-cache-ttl"}
OUTBOX = {"--langfuse-outbox", "--langfuse-outbox-max-mb"}
WATCH = {"--metrics-port", "--metrics-host", "--metrics-token", "--metrics-allow-host"}
TRACE_FRAMES = {"--trace-frames", "--trace-frame-max-side", "--trace-frame-quality"}
CLIPS = {"--clip-frames", "--clip-as", "--clip-max-pixels"}
JUDGE = {"--judge-model", "--judge-base-url", "--judge-api-key"}
COMMON = {"--debug", "--help"}
ALERTS = {"--alert", "--alerts-file", "--notify", "--notify-secret", "--notify-first", "--notify-snapshots"}

EXPECTED = {
    ("run",): SOURCE | FACES | CAPTION | SUMMARY_MODEL | INDEX | PROMPTS | OUTBOX | WATCH | TRACE_FRAMES | COMMON | ALERTS | {
        *CLIPS,
        "--version", "--interval", "--min-change", "--motion-min-area", "--max-gap", "--summary-interval", "--max-inflight", "--jobs",
        "--ray", "--events", "--summary-out", "--output-dir", "--force", "--trace-log", "--shutdown-timeout",
        "--flush-timeout", "--trace-log-max-mb", "--events-max-mb", "--display", "--dataset", "--json"},
    ("search",): INDEX | QUERY | COMMON | {"--json"},
    ("ask",): INDEX | QUERY | SUMMARY_MODEL | COMMON | {"--trace-log", "--flush-timeout", "--json"},
    ("experiment",): CAPTION | PROMPTS | JUDGE | COMMON | {"--dataset", "--max-inflight", "--max-pixels",
                                                             "--trace-log", "--flush-timeout"},
    ("dataset", "push"): COMMON | {"--trace-log", "--flush-timeout"},
    ("outbox", "send"): OUTBOX | COMMON,
}


@pytest.fixture
def env(monkeypatch, tmp_path) -> dict:
    """None for every variable the CLI reads (CliRunner unsets them for the call); the cache in tmp_path."""
    import os

    monkeypatch.chdir(tmp_path)  # datasets and the default trace log are relative to it, as for a user
    clean = {k: None for k in os.environ if k.startswith(CLEAN)}
    return {**clean, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


def invoke(args: list[str], env: dict | None = None):
    return CliRunner().invoke(cli, args, env=env, terminal_width=100)


def options_of(help_text: str) -> set[str]:
    """The long option names a --help lists (the Options: section)."""
    body = help_text.split("\nOptions:\n", 1)[1]
    import re

    return {m.group(1) for m in re.finditer(r"^  (?:-\w, )?(--[\w-]+)", body, re.MULTILINE)}


@pytest.mark.parametrize("words", list(EXPECTED), ids=" ".join)
def test_each_commands_help_lists_exactly_its_options(words):
    result = invoke([*words, "--help"])
    assert result.exit_code == 0, result.output
    assert options_of(result.stdout) == EXPECTED[words]


def test_the_top_help_lists_the_commands_with_run_as_the_default_and_the_examples():
    result = invoke(["--help"])
    assert result.exit_code == 0, result.output
    commands = result.stdout.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in commands.splitlines()] == ["run", "ask", "dataset", "experiment", "outbox",
                                                                   "search"]
    assert commands.splitlines()[0].split()[:2] == ["run", "(default)"]
    assert "python real_time_summarizer.py --source cam0 --known-faces faces/ --display" in result.stdout
    assert "COMMAND --help lists that command's options" in result.stdout
    assert options_of(result.stdout) == {"--version", "--help"}  # the group's own: no run option here


def test_options_without_a_command_are_runs_help_and_version():
    assert invoke(["--source", "cam0", "--help"]).stdout == invoke(["run", "--help"]).stdout
    assert invoke(["--source", "cam0", "--version"]).stdout == invoke(["--version"]).stdout


def test_no_arguments_run_run_which_asks_for_a_source(env):
    result = invoke([], env)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: --source: give at least one --source (cam0, a video file, '-' for stdin, a folder)"]


def _legacy_cases(tmp):
    """(old args, old env, new args): each flag that was a mode, as a flag, as --flag=VALUE and as its variable,
    on an input each command refuses at once (no model, no server)."""
    none = str(tmp / "none")
    return [
        (["--search", "podium", "--index", none], {}, ["search", "podium", "--index", none]),
        (["--search=podium", "--index", none, "--json"], {}, ["search", "podium", "--index", none, "--json"]),
        (["--index", none], {"SUMMARIZER_SEARCH": "podium"}, ["search", "podium", "--index", none]),
        (["--ask", "Who?", "--index", none], {}, ["ask", "Who?", "--index", none]),
        (["--experiment", "r", "--dataset", "nope"], {}, ["experiment", "r", "--dataset", "nope"]),
        (["--dataset", "nope"], {"SUMMARIZER_EXPERIMENT": "r"}, ["experiment", "r", "--dataset", "nope"]),
        (["--dataset-push", "frames"], {}, ["dataset", "push", "frames"]),
        (["--send-outbox", "--langfuse-outbox", none], {}, ["outbox", "send", "--langfuse-outbox", none]),
        (["--langfuse-outbox", none], {"SUMMARIZER_SEND_OUTBOX": "1"}, ["outbox", "send", "--langfuse-outbox", none]),
    ]


def test_each_flag_that_was_a_mode_gives_its_commands_result_and_says_so_once(env, tmp_path):
    for old, old_env, new in _legacy_cases(tmp_path):
        now = invoke(new, env)
        before = invoke(old, {**env, **old_env})
        assert now.exit_code == 2 and now.stderr.startswith("Error: "), (new, now.stderr)
        said = [line for line in before.stderr.splitlines() if "is now the command" in line]
        command = " ".join(new[:2] if new[0] in ("dataset", "outbox") else new[:1])
        assert said == [f"{(list(old_env) or [old[0].split('=')[0]])[0]} is now the command `{command}` "
                        f"(real_time_summarizer.py {command}{_metavar(command)}); the flag works for now."], old
        assert (before.exit_code, before.stdout) == (now.exit_code, now.stdout), old
        assert [line for line in before.stderr.splitlines() if line not in said] == now.stderr.splitlines(), old


def _metavar(command: str) -> str:
    return {"search": " TEXT", "ask": " QUESTION", "experiment": " RUN", "dataset push": " NAME"}.get(command, "")


def test_a_flag_that_was_a_mode_with_an_option_its_command_lacks_is_a_usage_error(env, tmp_path):
    result = invoke(["--search", "podium", "--index", str(tmp_path), "--source", "cam0"], env)
    assert result.exit_code == 2 and "No such option '--source'" in result.stderr, result.stderr


def test_redirect_keeps_a_named_command_and_values_after_double_dash():
    said: list[str] = []
    assert redirect_legacy(["search", "x"], LEGACY, {"SUMMARIZER_ASK": "q"}, said.append) == ["search", "x"]
    assert redirect_legacy(["--source", "a", "--", "--search"], LEGACY, {}, said.append) == [
        "--source", "a", "--", "--search"]
    assert redirect_legacy(["--help"], LEGACY, {"SUMMARIZER_SEARCH": "x"}, said.append) == ["--help"]
    assert redirect_legacy(["--ask", "q", "--search", "s"], LEGACY, {}, said.append) == [
        "ask", "--search", "s", "--", "q"]  # the order a mode was chosen in: --ask first; --search is then refused
    assert said == ["--ask is now the command `ask` (real_time_summarizer.py ask QUESTION); the flag works for now."]


def test_a_run_in_process_leaves_logging_and_signals_as_it_found_them(env, tmp_path, clips, tiny_llm):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with FakeOpenAIServer(reply="A coloured band over squares.") as vlm:
        result = invoke(["--source", str(clips.numbered().path), "--vlm-base-url", vlm.base_url, "--vlm-model",
                         "qwen3", "--llm-model", str(tiny_llm), "--no-faces", "--interval", "1", "--json"], env)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout.splitlines()[0])
    assert doc["stats"]["captioned"] == 3 and doc["source"] == str(clips.numbered().path)
    assert "VLM: qwen3 at " in result.stderr and "Statistics:" in result.stderr  # logging went to its stderr
    assert (list(root.handlers), root.level) == (handlers, level)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (sigint, sigterm)


def test_the_options_page_renders_every_option_of_every_command_in_its_section():
    from video_summarizer.cli_docs import render_options

    page = render_options(cli)
    sections = {tuple(part.split("`", 1)[0].split()): part for part in page.split("\n## `")[1:]}
    assert set(sections) == set(EXPECTED)
    for words, expected in EXPECTED.items():
        rows = [line for line in sections[words].splitlines() if line.startswith("| `--")]
        names = {name.strip("`") for row in rows for name in row.split(" | ")[0].strip("| ").split(", ")}
        negated = {"--no-live", "--no-blur-faces", "--no-notify-first", "--no-notify-snapshots"}
        assert names | {"--help", "--version"} >= expected - negated, words
        assert names <= expected | negated, words
    run = sections[("run",)]
    assert "| `--interval` | `SUMMARIZER_INTERVAL` | `5.0` | Seconds of video between processed frames" in run
    assert "| `--vlm-api-key` | `VLM_API_KEY` |  | API key for the VLM endpoint" in run
    assert "- `TEXT` (env `SUMMARIZER_SEARCH`)" in sections[("search",)]


def documented_command_lines() -> list[tuple[str, list[str]]]:
    """Every `python real_time_summarizer.py ...` line of README.md and docs/*.md (continuations joined),
    as the arguments after the script, up to the first shell operator."""
    import re
    import shlex
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    found = []
    for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))  # a shell line continued
        for n, line in enumerate(text.splitlines(), 1):
            for match in re.finditer(r"python3? real_time_summarizer\.py((?: [^`]*)?)", line):
                words = shlex.split(match.group(1), comments=True)
                cut = next((i for i, w in enumerate(words) if w in ("|", ">", ">>", "&&", "2>&1", ";")), len(words))
                found.append((f"{path.name}:{n}", words[:cut]))
    return found


def test_every_documented_command_line_parses(monkeypatch, env):
    """Each line is parsed by the commands as a user would type it (values converted too); nothing runs."""
    lines = documented_command_lines()
    assert len(lines) >= 20, lines  # the scan finds them (a broken pattern would pass)
    ran = []
    for command in [*cli.commands.values(), *cli.commands["dataset"].commands.values(),
                    *cli.commands["outbox"].commands.values()]:
        if not hasattr(command, "commands"):
            monkeypatch.setattr(command, "callback", lambda *a, _name=command.name, **kw: ran.append(_name))
    for where, args in lines:
        result = invoke(args, env)
        assert result.exit_code == 0, (where, args, result.output)
    runs = [args for _, args in lines if "--help" not in args]  # a --help line prints and runs nothing
    assert len(ran) == len(runs) and "run" in ran and "search" in ran and "send" in ran, ran
