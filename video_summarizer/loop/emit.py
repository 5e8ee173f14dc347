"""The caption and summary events one source emits (and keeps for its document)."""
from __future__ import annotations

import logging
from typing import Any

from video_summarizer.loop.frame_jobs import Job, RunCounters
from video_summarizer.results import CaptionResult, MotionReading, SummaryOutcome

log = logging.getLogger("video_summarizer.pipeline")


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def caption_event(label: str, job: Job, names: list[str], matches: list, result: CaptionResult,
                  trace_id: str) -> dict:
    """The `caption` event of a frame that was captioned."""
    return {
        "source": label,
        "frame": job.frame_index,
        "video_time": round(job.video_time, 3),
        "faces": names,
        "unknown_faces": sum(1 for m in matches if m.name == "unknown"),
        "caption": result.caption,
        "ttft_ms": _round(result.ttft_ms),
        "latency_ms": round(result.latency_ms, 1),
        "frame_age_ms": round((result.start_time - job.captured_at) * 1000.0, 1),
        "trace_id": trace_id,
    }


def motion_event(label: str, frame_index: int, reading: MotionReading) -> dict:
    """The `motion` event of a motion start or end (the box and area: what moves now; none at the end)."""
    return {
        "source": label,
        "state": "start" if reading.started else "end",
        "video_time": round(reading.video_time, 3),
        "area": round(reading.area, 4),
        "box": list(reading.box) if reading.box else None,
        "frame": frame_index,
    }


def emit_motion(events: Any, label: str, frame_index: int, reading: MotionReading | None) -> None:
    """Emit the `motion` event of a read frame where motion started or ended (nothing otherwise)."""
    if reading is not None and (reading.started or reading.ended):
        events.emit("motion", **motion_event(label, frame_index, reading))


def summary_event(label: str, summary: SummaryOutcome, window_times: list[float], trace_id: str) -> dict:
    """The `summary` event's fields (only those an `error` event shares when the call failed)."""
    record = {
        "source": label,
        # as the caption events give times: video seconds, or the wall clock of a live source
        "window": window_times,
        "captions_used": len(summary.window),
        "final": summary.final,
        "trace_id": trace_id,
    }
    grounded, result = summary.grounded, summary.result
    if grounded is not None:
        record.update(text=grounded.text, ttft_ms=_round(result.ttft_ms), latency_ms=round(result.latency_ms, 1),
                      grounding=None if grounded.grounding is None else round(grounded.grounding, 3),
                      citations_dropped=grounded.dropped,
                      sentences=[sentence.to_json() for sentence in grounded.sentences])
    return record


def observe_frame(observers: list, image: Any, observed: dict, matches: list, counters: RunCounters,
                  label: str) -> None:
    """Hand a captioned frame to the frame observers; one that raises is counted and said once."""
    for observe in observers:
        try:
            observe(image, observed, matches)
        except Exception:  # an observer never stops the loop
            counters.observer_errors += 1
            if counters.observer_errors == 1:
                log.warning("%s: a frame observer failed (said once)", label, exc_info=True)
