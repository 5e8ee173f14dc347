"""--help shows each option's default once, and docs/options.md's tables say the same defaults.

The help is the CLI's own (click's CliRunner on main, unwrapped so each option is one entry);
the tables are docs/options.md's (grouped by command; each option in one row). A default shown as
``[default: X]`` must equal the table's cell; a default the help explains in words (computed from
other options) must name the same figures.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from real_time_summarizer import main

OPTIONS_DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"
TABLE_HEAD = "| option | env | default | what |"
_VALUE = re.compile(r"[\w./:~$-]*\d[\w./:~$-]*")  # a token holding a figure: 5, 0.12, 127.0.0.1, a model id


def help_entries() -> dict[str, dict]:
    """Each option of --help (by its first long name): its shown default and the text of its help."""
    result = CliRunner().invoke(main, ["--help"], terminal_width=10_000, max_content_width=10_000)
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


def table_rows(lines: list[str]) -> list[str]:
    """The body rows of every options table (its header is TABLE_HEAD) among these lines."""
    rows: list[str] = []
    starts = [i + 2 for i, line in enumerate(lines) if line == TABLE_HEAD]
    assert starts, f"no options table in {OPTIONS_DOC}"
    for start in starts:
        for line in lines[start:]:
            if not line.startswith("|"):
                break
            rows.append(line)
    return rows


def documented_defaults() -> dict[str, str]:
    """Each option of docs/options.md's tables and its default cell (one item per option of a row)."""
    out: dict[str, str] = {}
    for line in table_rows(OPTIONS_DOC.read_text(encoding="utf-8").splitlines()):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4, line
        names = re.findall(r"`(--[\w-]+)", cells[0])
        items = _split_top(cells[2]) if len(names) > 1 else [cells[2]]
        assert len(items) in (1, len(names)), f"{names}: the defaults {items} do not say which is whose"
        for n, name in enumerate(names):
            assert name not in out, f"{name} is in two rows of {OPTIONS_DOC.name}: keep one"
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


def test_every_literal_default_is_shown_once_and_not_also_in_words():
    entries = help_entries()
    for param in main.params:
        if not isinstance(param, click.Option) or param.is_flag or param.multiple or param.hidden:
            continue
        entry = entries[next(o for o in param.opts if o.startswith("--"))]
        if param.default is None:  # computed from other options: said in the text, if at all
            assert entry["shown"] == 0, param.opts
            continue
        assert entry["shown"] == 1, f"{param.opts}: the default {param.default!r} is not shown"
        assert _plain(entry["default"]) == _plain(str(param.default)), param.opts
        assert "default" not in entry["text"].lower(), f"{param.opts}: the default is said twice"


def test_the_options_doc_and_help_agree_on_every_default():
    entries, table = help_entries(), documented_defaults()
    assert set(entries) - {"--help"} == set(table), "options missing from the help or from the table"
    for name, cell in table.items():
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
    from video_summarizer.options import RunOptions

    assert "at most 2 per CPU" in help_entries()["--jobs"]["text"]
    # with a caption budget far above the CPUs, the default --jobs is twice their number
    assert RunOptions(max_inflight=64, vlm_base_url="http://x").resolved_jobs == min(64, 2 * (os.cpu_count() or 1))
