"""What a run says at the end: the summaries (stdout, or stderr when the events use stdout), then the statistics."""
from __future__ import annotations

import json
from typing import Any, TextIO

from video_summarizer.options import OutputOptions


def report(docs: list, stages: Any, outputs: OutputOptions, *, out: TextIO, err: TextIO) -> None:
    """The final summaries on out (on err when --events is stdout), --summary-out written, stats on err."""
    from video_summarizer.outputs import write_atomic

    stream = err if stages.events.to_stdout else out
    for doc in docs:
        if outputs.as_json:
            stream.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
        else:
            stream.write(doc.to_markdown() if len(docs) > 1 or outputs.output_dir else
                         (doc.summary or "(no summary: no frame was captioned)") + "\n")
    stream.flush()
    if outputs.summary_out and docs:
        text = "\n".join(doc.to_markdown() for doc in docs)
        try:
            write_atomic(outputs.summary_out, text)
        except OSError as e:  # checked at start; the folder may have gone since, or the disk filled
            from video_summarizer.files import NOT_WRITTEN

            NOT_WRITTEN.record("--summary-out", outputs.summary_out, e, "the summary is on stdout above")
    print_stats(docs, stages, err)


def print_stats(docs: list, stages: Any, err: TextIO) -> None:
    """Each source's frame counts and each stage's statistics on err; the run's stats event."""
    lines = ["", "Statistics:", *(_source_line(doc) for doc in docs)]
    lines.append(stages.vlm.stats.format())
    lines.append(stages.summarizer.stats.format())
    if stages.faces is not None:
        lines.append(stages.faces.format_stats())
    if stages.prompts is not None:
        lines.append(stages.prompts.format_stats())
    lines += [text for o in stages.frame_observers if (text := o.format_stats())]
    lines.append(stages.tracker.format_stats())
    stages.events.emit("stats", scope="run", vlm=stages.vlm.stats.as_dict(),
                       llm=stages.summarizer.stats.as_dict(),
                       faces=stages.faces.stats if stages.faces is not None else None)
    err.write("\n".join(lines) + "\n")


def _source_line(doc: Any) -> str:
    s = doc.stats
    truncated = (f", truncated ({s['frames_read']} of {s.get('frames_expected')} frames decoded)"
                 if s.get("truncated") else "")
    merged = f" ({s['summaries_merged']} windows merged)" if s.get("summaries_merged") else ""
    return (f"  {doc.label}: frames read {s['frames_read']}, selected {s['selected']}, "
            f"captioned {s['captioned']}, failed {s['caption_failures']}, "
            f"dropped (busy) {s['dropped_busy']}, dropped (replaced) {s['dropped_replaced']}, "
            f"summaries {s['summaries']}{merged}{truncated}")
