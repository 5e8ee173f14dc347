"""The Langfuse dashboards' figures, computed offline from a tracker trace log (JSON Lines).

    python trace_report.py traces.jsonl [--json]

Figures, computed the way Langfuse computes them (see ``langfuse_tracker`` for the fields):

- average TTFT by generation name and p95 TTFT by model, TTFT = completion_start_time -
  start (generations without a first token are left out, as Langfuse shows them empty);
- p95 latency by model, latency = end - start of each generation;
- max latency by user id, a trace's latency = last end - first start over the trace and
  all its observations (traces without a user id are under ``(none)``);
- count and mean of every score by name (categorical scores: counts per value);
- error counts (observations with level ERROR) by name.

Percentiles are linear-interpolated (``stats.percentile``).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import click

from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.stats import percentile

NO_USER = "(none)"


def _ms(value: str) -> float:
    """An ISO-8601 UTC timestamp as epoch milliseconds."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return dt.timestamp() * 1000.0


def _read(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict) and row.get("type") in ("trace", "span", "generation",
                                                             "score"):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def compute_report(path: str | Path) -> dict:
    """All dashboard figures of one trace log, as plain JSON-able values."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"trace log not found: {path} (run with --trace-log PATH first)",
                         option="PATH")
    rows, bad_lines = _read(path)
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
        if kind == "score":
            score_values[row.get("name")].append((row.get("value"), row.get("data_type")))
            continue
        try:
            start = _ms(row["start"])
            end = _ms(row["end"])
        except (KeyError, TypeError, ValueError):
            bad_lines += 1
            continue
        span = bounds.setdefault(row.get("trace_id"), [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        if kind == "trace":
            users[row.get("trace_id")] = row.get("user_id") or NO_USER
        if row.get("level") == "ERROR":
            errors[row.get("name")] += 1
        if kind == "generation":
            model = row.get("model") or "(unknown)"
            latency_by_model[model].append(end - start)
            if row.get("completion_start_time"):
                ttft = _ms(row["completion_start_time"]) - start
                ttft_by_name[row.get("name")].append(ttft)
                ttft_by_model[model].append(ttft)

    max_latency_by_user: dict[str, float] = {}
    for trace_id, (start, end) in bounds.items():
        if trace_id not in users:
            continue  # observations whose trace line is missing (trace still open)
        user = users[trace_id]
        max_latency_by_user[user] = max(max_latency_by_user.get(user, 0.0), end - start)

    return {
        "file": str(path),
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
    lines = [f"Trace log {report['file']}: {c['traces']} traces, {c['spans']} spans, "
             f"{c['generations']} generations, {c['scores']} scores"
             + (f", {c['bad_lines']} unreadable lines" if c["bad_lines"] else "")]

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


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(path: Path, as_json: bool) -> None:
    """Print the Langfuse dashboards' figures from a trace log written with --trace-log."""
    try:
        report = compute_report(path)
    except SummarizerError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option or "PATH") from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report))


if __name__ == "__main__":
    sys.exit(main())
