"""--help shows each option's default once, and docs/options.md is rendered from the commands themselves.

The help is each command's own (click's CliRunner, unwrapped so each option is one entry). A literal
default is shown once as ``[default: X]`` and equals the option's; a computed one is said in words.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from real_time_summarizer import cli

# Every command, as its words on the command line; the table lists their options, run's first.
COMMANDS = (("run",), ("search",), ("ask",), ("experiment",), ("dataset", "push"), ("outbox", "send"))


def _command(words: tuple[str, ...]) -> click.Command:
    command = cli
    for word in words:
        command = command.commands[word]
    return command

OPTIONS_DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"


def help_entries(words: tuple[str, ...] = ("run",)) -> dict[str, dict]:
    """Each option of a command's --help (by its first long name): its shown default and the text of its help."""
    result = CliRunner().invoke(cli, [*words, "--help"], terminal_width=10_000, max_content_width=10_000)
    assert result.exit_code == 0, result.output
    body = result.output.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    entries: dict[str, dict] = {}
    chunks = re.split(r"\n(?=  -)", body)
    for chunk in chunks:
        text = " ".join(chunk.split())
        name = re.match(r"(?:-\w, )?(--[\w-]+)", text).group(1)
        extra = re.search(r"\s\[((?:env var|default)[^\]]*)\]$", text)
        items = extra.group(1).split("; ") if extra else []
        shown = [i.removeprefix("default: ") for i in items if i.startswith("default: ")]
        entries[name] = {"default": shown[0] if shown else None, "shown": len(shown),
                         "text": text[:extra.start()] if extra else text}
    return entries


def _plain(value: str) -> str:
    """A default as compared: no backticks, no unit of seconds, figures as numbers."""
    value = value.replace("`", "").strip()
    value = re.sub(r"^(-?[\d.]+) s$", r"\1", value)
    try:
        return repr(float(value))
    except ValueError:
        return value.lower()


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_literal_default_is_shown_once_and_not_also_in_words(words):
    entries = help_entries(words)
    for param in _command(words).params:
        if not isinstance(param, click.Option) or param.is_flag or param.multiple or param.hidden:
            continue
        entry = entries[next(o for o in param.opts if o.startswith("--"))]
        if param.default is None:  # computed from other options: said in the text, if at all
            assert entry["shown"] == 0, param.opts
            continue
        assert entry["shown"] == 1, f"{param.opts}: the default {param.default!r} is not shown"
        assert _plain(entry["default"]) == _plain(str(param.default)), param.opts
        assert "default" not in entry["text"].lower(), f"{param.opts}: the default is said twice"


def test_the_options_page_is_the_commands_own_help():
    """docs/options.md is rendered from the commands (no hand-kept copy): `make docs` writes it."""
    from video_summarizer.cli_docs import render_options

    assert OPTIONS_DOC.read_text(encoding="utf-8") == render_options(cli), "docs/options.md is stale: run `make docs`"


@pytest.mark.parametrize("option, default", [
    ("--interval", "5.0"), ("--summary-interval", "60.0"), ("--vlm-timeout", "60.0"),
    ("--shutdown-timeout", "10.0"), ("--flush-timeout", "5.0"), ("--prompt-cache-ttl", "300.0"),
])
def test_the_defaults_the_issue_found_hidden_are_shown(option, default):
    assert help_entries()[option]["default"] == default


def test_jobs_help_says_what_the_code_does():
    from video_summarizer.options import CaptionOptions, ScaleOptions

    assert "at most 2 per CPU" in help_entries()["--jobs"]["text"]
    # with a caption budget far above the CPUs, the default --jobs is twice their number
    assert ScaleOptions(max_inflight=64).job_count(CaptionOptions(vlm_base_url="http://x")) == min(
        64, 2 * (os.cpu_count() or 1))
