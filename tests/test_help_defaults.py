"""--help shows each option's default once, and the README's options table says the same defaults.

The help is the `run` command's own (click's CliRunner, unwrapped so each option is one entry);
the table is README.md's. A default shown as ``[default: X]`` must equal the table's cell; a
default the help explains in words (computed from other options) must name the same figures.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from real_time_summarizer import cli
from video_summarizer.cli.group import LEGACY

# Every command, as its words on the command line; the table lists their options, run's first.
COMMANDS = (("run",), ("search",), ("ask",), ("experiment",), ("dataset", "push"), ("outbox", "send"))


def _command(words: tuple[str, ...]) -> click.Command:
    command = cli
    for word in words:
        command = command.commands[word]
    return command

README = Path(__file__).resolve().parent.parent / "README.md"
_VALUE = re.compile(r"[\w./:~$-]*\d[\w./:~$-]*")  # a token holding a figure: 5, 0.12, 127.0.0.1, a model id


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


def _split_top(cell: str) -> list[str]:
    """The cell's items at ", " outside brackets and backticks."""
    items, depth, tick, start = [], 0, False, 0
    for i, ch in enumerate(cell):
        tick ^= ch == "`"
        depth += (ch in "([") - (ch in ")]")
        if cell.startswith(", ", i) and depth == 0 and not tick:
            items.append(cell[start:i])
            start = i + 2
    return [x.strip() for x in items + [cell[start:]]]


def readme_defaults() -> dict[str, str]:
    """Each option of the README's options table and its default cell (one item per option of a row)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| option | env | default | what |") + 2
    out: dict[str, str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4, line
        names = re.findall(r"`(--[\w-]+)", cells[0])
        items = _split_top(cells[2]) if len(names) > 1 else [cells[2]]
        assert len(items) in (1, len(names)), f"{names}: the defaults {items} do not say which is whose"
        for n, name in enumerate(names):
            out[name] = items[n if len(items) > 1 else 0]
    return out


def _plain(value: str) -> str:
    """A default as compared: no backticks, no unit of seconds, figures as numbers."""
    value = value.replace("`", "").strip()
    value = re.sub(r"^(-?[\d.]+) s$", r"\1", value)
    try:
        return repr(float(value))
    except ValueError:
        return value.lower()


def _figures(text: str) -> set[str]:
    return {_plain(v.rstrip(".,;")) for v in _VALUE.findall(text.replace("`", ""))}


def all_entries() -> dict[str, dict]:
    """Every command's options (run's entry where a name is in several)."""
    merged: dict[str, dict] = {}
    for words in COMMANDS:
        for name, entry in help_entries(words).items():
            merged.setdefault(name, entry)
    return merged


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


def test_the_readme_table_and_help_agree_on_every_default():
    entries, table = all_entries(), readme_defaults()
    # the flags that were modes are rows of the table until the README lists the commands
    assert set(entries) - {"--help"} == set(table) - set(LEGACY), "options missing from the help or from the table"
    for name, cell in table.items():
        if name in LEGACY:
            continue
        entry = entries[name]
        if entry["default"] is not None:
            assert _plain(cell.split(" (")[0]) == _plain(entry["default"]), (name, cell, entry["default"])
            continue
        said = [s for s in re.split(r"(?<=[.;])\s+", entry["text"]) if "default" in s.lower()]
        assert _figures(" ".join(said)) == _figures(cell), (name, cell, said)


@pytest.mark.parametrize("option, default", [
    ("--interval", "5.0"), ("--summary-interval", "60.0"), ("--vlm-timeout", "60.0"), ("--vlm-max-tokens", "256"),
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
