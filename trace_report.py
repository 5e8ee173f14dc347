"""The Langfuse dashboards' figures, computed offline from a tracker trace log (JSON Lines).

    python trace_report.py traces.jsonl [--json] [--session ID | --last-run]

A log rotated with ``--trace-log-max-mb`` is read whole: traces.jsonl.5 ... traces.jsonl.1,
then traces.jsonl.

Figures, computed the way Langfuse computes them (see ``langfuse_tracker`` for the fields):

- average TTFT by generation name and p95 TTFT by model, TTFT = completion_start_time -
  start (generations without a first token are left out, as Langfuse shows them empty);
- p95 latency by model, latency = end - start of each generation;
- max latency by user id, a trace's latency = last end - first start over the trace and
  all its observations (traces without a user id are under ``(none)``);
- count and mean of every score by name (categorical scores: counts per value);
- error counts (observations with level ERROR) by name.

Percentiles are linear-interpolated (``stats.percentile``).

One log may hold many runs: the CLI appends to ``--trace-log``, and names each source's
session ``<run_id>-<source label>`` with a run id like ``20261201T091200Z-abc123``.
``--session`` and ``--last-run`` keep the traces of one session or run; the scores and
observations follow their traces (by ``trace_id``). Lines that are not UTF-8 or not JSON (a
line cut short by a kill) are skipped and counted; a file with no readable record at all is
not a trace log.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import click

from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.rotation import rotated_paths
from video_summarizer.stats import percentile

SCHEMA_VERSION = 1  # of the --json output; raise it when a field changes meaning or goes
NO_USER = "(none)"
KINDS = ("trace", "span", "generation", "score")
_RECORD_START = b'{"type"'  # how the tracker's trace log writes every line's start
# real_time_summarizer's run id: UTC start time and 6 hex digits, then "-<source label>".
_RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}(?=-|$)")
EXIT_USAGE = 2


class UsageProblem(click.ClickException):
    """One line on stderr naming the option or argument, exit code 2."""

    exit_code = EXIT_USAGE


def _ms(value: object) -> float:
    """An ISO-8601 UTC timestamp as epoch milliseconds."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string: {value!r}")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return dt.timestamp() * 1000.0


def _key(value: object, missing: str) -> str:
    """A table key: always a string, so that sorting a hand-edited log cannot fail."""
    return missing if value is None or value == "" else str(value)


@dataclass
class TraceLog:
    """The records of one or more trace log files, in file order, and what could not be read."""

    files: list[str]
    rows: list[dict] = field(default_factory=list)
    bad_lines: int = 0


def read_trace_log(paths: Sequence[str | Path]) -> TraceLog:
    """Every record of paths, oldest file first; unreadable lines counted, not fatal."""
    log = TraceLog(files=[str(p) for p in paths])
    for path in map(Path, paths):
        records, lines = 0, 0
        for raw in _lines(path):
            if not raw.strip():
                continue
            lines += 1
            row = _record(raw)
            if row is None:
                # A run killed mid-line leaves a line without its end, and the next run's
                # first record is appended right after it: keep that record.
                start = raw.rfind(_RECORD_START, 1)
                row = _record(raw[start:]) if start > 0 else None
                log.bad_lines += 1
                if row is None:
                    continue
            log.rows.append(row)
            records += 1
        if lines and not records:
            raise InputError(f"{path} is not a trace log: none of its {lines} lines is a trace, "
                             "span, generation or score record (written with --trace-log PATH)",
                             option="PATH")
    return log


def _record(raw: bytes) -> dict | None:
    try:
        row = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    return row if isinstance(row, dict) and row.get("type") in KINDS else None


def _lines(path: Path) -> Iterable[bytes]:
    # Bytes, decoded line by line: one line of another encoding must not stop the report.
    try:
        with path.open("rb") as fh:
            yield from fh
    except FileNotFoundError:
        raise InputError(f"trace log not found: {path} (run with --trace-log PATH first)",
                         option="PATH") from None
    except OSError as exc:
        raise InputError(f"cannot read trace log {path}: {exc.strerror or exc}",
                         option="PATH") from None


def run_id_of(session_id: str) -> str:
    """The run of a session '<run_id>-<label>'; a session id of another shape is its own run."""
    match = _RUN_ID.match(session_id)
    return match.group(0) if match else session_id


@dataclass
class Selection:
    """Which traces a report covers: all of them, or those of one session prefix or run."""

    session: str | None = None
    last_run: bool = False
    run_id: str | None = None  # the run --last-run chose
    sessions: list[str] = field(default_factory=list)  # the session ids selected

    def to_json(self) -> dict:
        """The selection as the JSON report shows it."""
        return {"session": self.session, "last_run": self.last_run, "run_id": self.run_id,
                "sessions": self.sessions}


def select_rows(log: TraceLog, session: str | None = None, last_run: bool = False
                ) -> tuple[list[dict], Selection]:
    """The rows of the traces chosen by session (id or its start) and last_run, with their
    observations and scores; without either, every row."""
    selection = Selection(session=session, last_run=last_run)
    if session is None and not last_run:
        return log.rows, selection
    where = log.files[-1] if log.files else "the trace log"
    traces = [r for r in log.rows if r["type"] == "trace" and isinstance(r.get("session_id"), str)
              and r["session_id"]]
    if session is not None:
        chosen = [r for r in traces if r["session_id"].startswith(session)]
        if not chosen:
            raise InputError(f"no trace in {where} has a session id starting with {session!r}"
                             f"{_known_sessions(traces)}", option="--session")
        traces = chosen
    if last_run:
        if not traces:
            raise InputError(f"no trace in {where} has a session id, so there is no run to choose",
                             option="--last-run")
        selection.run_id = _newest_run(traces)
        traces = [r for r in traces if run_id_of(r["session_id"]) == selection.run_id]
    selection.sessions = sorted({r["session_id"] for r in traces})
    trace_ids = {r.get("trace_id") for r in traces}
    return [r for r in log.rows if r.get("trace_id") in trace_ids], selection


def _newest_run(traces: list[dict]) -> str:
    # The run that started last: its earliest trace start is the latest; file order breaks ties
    # (and stands in for a start that cannot be read).
    first: dict[str, tuple[float, int]] = {}
    for position, row in enumerate(traces):
        try:
            start = _ms(row.get("start"))
        except ValueError:
            start = -math.inf
        run = run_id_of(row["session_id"])
        seen = first.get(run)
        first[run] = (min(seen[0], start), seen[1]) if seen else (start, position)
    return max(first, key=lambda run: first[run])


def _known_sessions(traces: list[dict], shown: int = 5) -> str:
    sessions = sorted({r["session_id"] for r in traces})
    if not sessions:
        return " (no trace there has a session id)"
    more = f" and {len(sessions) - shown} more" if len(sessions) > shown else ""
    return f" (sessions there: {', '.join(sessions[:shown])}{more})"


def compute_report(paths: str | Path | Sequence[str | Path], session: str | None = None,
                   last_run: bool = False) -> dict:
    """All dashboard figures of a trace log (one path, or several oldest first), as plain
    JSON-able values; session / last_run narrow it to one session prefix or the newest run."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    log = read_trace_log(paths)
    rows, selection = select_rows(log, session=session, last_run=last_run)
    return {"schema_version": SCHEMA_VERSION, "file": log.files[-1], "files": log.files,
            "selection": selection.to_json(), **_figures(rows, log.bad_lines)}


def _figures(rows: list[dict], bad_lines: int) -> dict:
    ttft_by_name: dict[str, list[float]] = defaultdict(list)
    ttft_by_model: dict[str, list[float]] = defaultdict(list)
    latency_by_model: dict[str, list[float]] = defaultdict(list)
    bounds: dict[str, list[float]] = {}
    users: dict[str, str] = {}
    errors: dict[str, int] = defaultdict(int)
    score_values: dict[str, list] = defaultdict(list)
    counts = {"traces": 0, "spans": 0, "generations": 0, "scores": 0}

    for row in rows:
        kind = row["type"]
        counts[kind + "s"] += 1
        name = _key(row.get("name"), "(unnamed)")
        if kind == "score":
            score_values[name].append((row.get("value"), row.get("data_type")))
            continue
        try:
            start = _ms(row.get("start"))
            end = _ms(row.get("end"))
        except ValueError:
            bad_lines += 1
            continue
        span = bounds.setdefault(row.get("trace_id"), [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        if kind == "trace":
            users[row.get("trace_id")] = _key(row.get("user_id"), NO_USER)
        if row.get("level") == "ERROR":
            errors[name] += 1
        if kind == "generation":
            model = _key(row.get("model"), "(unknown)")
            latency_by_model[model].append(end - start)
            if row.get("completion_start_time"):
                try:
                    ttft = _ms(row["completion_start_time"]) - start
                except ValueError:
                    bad_lines += 1
                    continue
                ttft_by_name[name].append(ttft)
                ttft_by_model[model].append(ttft)

    max_latency_by_user: dict[str, float] = {}
    for trace_id, (start, end) in bounds.items():
        if trace_id not in users:
            continue  # observations whose trace line is missing (trace still open)
        user = users[trace_id]
        max_latency_by_user[user] = max(max_latency_by_user.get(user, 0.0), end - start)

    return {
        "counts": {**counts, "bad_lines": bad_lines},
        "ttft_avg_ms_by_name": {k: sum(v) / len(v) for k, v in sorted(ttft_by_name.items())},
        "ttft_p95_ms_by_model": {k: percentile(v, 95) for k, v in sorted(ttft_by_model.items())},
        "latency_p95_ms_by_model": {k: percentile(v, 95)
                                    for k, v in sorted(latency_by_model.items())},
        "latency_max_ms_by_user": dict(sorted(max_latency_by_user.items())),
        "scores": {name: _score_summary(values) for name, values in sorted(score_values.items())},
        "errors": {"total": sum(errors.values()), "by_name": dict(sorted(errors.items()))},
    }


def _score_summary(values: list[tuple]) -> dict:
    numbers = [float(v) for v, t in values
               if t != "CATEGORICAL" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    categories: dict[str, int] = defaultdict(int)
    for v, t in values:
        if t == "CATEGORICAL":
            categories[str(v)] += 1
    summary = {"count": len(values), "mean": sum(numbers) / len(numbers) if numbers else None}
    if categories:
        summary["values"] = dict(sorted(categories.items()))
    return summary


def format_report(report: dict) -> str:
    """The figures as plain-text tables."""
    c = report["counts"]
    files = report.get("files") or [report["file"]]
    sel = report.get("selection") or {}
    scope = ""
    if sel.get("run_id"):
        scope = f", run {sel['run_id']}"
    elif sel.get("session") is not None:
        scope = f", session {sel['session']}*"
    if scope and sel.get("sessions") != [sel.get("run_id")]:
        scope += f" (sessions {', '.join(sel.get('sessions') or [])})"
    lines = [f"Trace log {', '.join(files)}{scope}: {c['traces']} traces, {c['spans']} spans, "
             f"{c['generations']} generations, {c['scores']} scores"
             + (f"; {c['bad_lines']} unreadable line{'s' if c['bad_lines'] != 1 else ''} skipped "
                "(not UTF-8, not JSON or cut short)" if c["bad_lines"] else "")]

    def table(title: str, header: tuple[str, str], data: dict, fmt: str = "{:.1f}") -> None:
        lines.append("")
        lines.append(title)
        if not data:
            lines.append("  (no data)")
            return
        width = max(len(header[0]), *(len(str(k)) for k in data))
        lines.append(f"  {header[0]:<{width}}  {header[1]}")
        for key, value in data.items():
            shown = "n/a" if value is None else fmt.format(value)
            lines.append(f"  {str(key):<{width}}  {shown}")

    table("Avg time to first token by generation name", ("name", "avg TTFT ms"),
          report["ttft_avg_ms_by_name"])
    table("P95 time to first token by model", ("model", "p95 TTFT ms"),
          report["ttft_p95_ms_by_model"])
    table("P95 latency by model", ("model", "p95 latency ms"), report["latency_p95_ms_by_model"])
    table("Max latency by user id", ("user id", "max trace latency ms"),
          report["latency_max_ms_by_user"])
    scores = {name: f"{s['count']:>5}  " + ("n/a" if s["mean"] is None else f"{s['mean']:.3f}")
              + ("  " + ", ".join(f"{k}={v}" for k, v in s["values"].items())
                 if s.get("values") else "")
              for name, s in report["scores"].items()}
    table("Scores", ("name", "count  mean"), scores, fmt="{}")
    table(f"Errors ({report['errors']['total']})", ("name", "count"),
          report["errors"]["by_name"], fmt="{}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help=f"Print the figures as JSON (schema_version {SCHEMA_VERSION}).")
@click.option("--session", metavar="ID",
              help="Only the traces whose session id equals ID or starts with it (a run's "
                   "sessions are <run_id>-<source label>, so a run id selects all its sources), "
                   "with their observations and scores.")
@click.option("--last-run", is_flag=True,
              help="Only the newest run in the log: the run whose first trace started last, a run "
                   "id being the session id before the source label (20261201T091200Z-abc123 of "
                   "20261201T091200Z-abc123-cam0). With --session: the newest run among those "
                   "sessions.")
def main(path: Path, as_json: bool, session: str | None, last_run: bool) -> None:
    """Print the Langfuse dashboards' figures from a trace log written with --trace-log.

    The CLI appends every run to the same log; --session or --last-run report one of them.
    Observations and scores whose trace line is missing (a run killed mid-frame) have no
    session, so they count only in a report of the whole log. Lines that cannot be read are
    skipped and counted; a file with none that can is refused (exit 2).
    """
    if session is not None and not session.strip():
        raise UsageProblem("--session: give a session id or the start of one")
    try:
        # A log rotated by --trace-log-max-mb: PATH.5 ... PATH.1, then PATH (oldest first).
        report = compute_report(rotated_paths(path), session=session, last_run=last_run)
    except SummarizerError as exc:
        raise UsageProblem(f"{exc.option or 'PATH'}: {exc}") from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report))


if __name__ == "__main__":
    sys.exit(main())
