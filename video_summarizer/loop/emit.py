"""The caption and summary events one source emits (and keeps for its document)."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable

from video_summarizer.loop.frame_jobs import Job, RunCounters
from video_summarizer.results import CaptionOutcome, CaptionResult, Clip, FaceOutcome, MotionReading, SummaryOutcome

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
        "span": job_clip(job).span(),  # the frames the caption covers; frame/video_time: the key frame
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


def job_clip(job: Job) -> Clip:
    """The clip a job captions: the collector's, else its frame alone."""
    return job.clip if job.clip is not None else Clip.single(job.frame_index, job.video_time, job.image)


def caption_clip(stages: Any, job: Job, faces: FaceOutcome | None, caption_time: Callable[[float], float],
                 source_spec: str | None) -> CaptionOutcome:
    """Caption a job's clip (faces blurred when asked): the result, the prompt, and the clip as sent."""
    from video_summarizer.prompts import faces_sentence, for_clip, render_caption

    vlm, prompts = stages.vlm, stages.prompts
    names = faces.names if faces else []
    clip, privacy = private_clip(job_clip(job), stages, faces)
    managed = prompts.caption() if prompts is not None else None
    prompt = render_caption(managed, faces_sentence(names)) if managed else vlm.build_prompt(names)
    prompt = for_clip(prompt, len(clip.frames))
    # The model reads each frame's time as the captions give it (live: since the first caption).
    sent = Clip(tuple(replace(f, video_time=caption_time(f.video_time)) for f in clip.frames), clip.key)
    job.caption_input = {"prompt": prompt, "model": vlm.name, "source_spec": source_spec,
                         "prompt_version": managed.version if managed else None,
                         "clip": clip}  # the frames as sent, for the watch page (not JSON: observers pick fields)
    start = time.time()
    result = vlm.generate_clip(sent, prompt)
    return CaptionOutcome(result, prompt, managed, sent.key_frame.image, privacy, start, time.time(),
                          model=vlm.name, clip=sent)


def private_clip(clip: Clip, stages: Any, faces: FaceOutcome | None) -> tuple[Clip, dict]:
    """The clip with every face blurred when asked: the key frame by the boxes recognition found,
    the others by the face model's detector alone (no names, no encodings); a face model that
    cannot detect alone leaves the key frame the only one sent."""
    if not stages.blur_faces:
        return clip, {}
    from video_summarizer.privacy import blur_faces

    key = clip.key_frame
    image, blurred = blur_faces(key.image, [m.box for m in faces.matches] if faces else [])
    frames = [replace(key, image=image)]
    others = [f for f in clip.frames if f is not key]
    detect = getattr(stages.faces, "boxes", None)  # FaceModel.boxes; None: no face model at all
    if others and detect is not None:
        found = [detect(f.image) for f in others]
        if all(boxes is not None for boxes in found):
            for frame, boxes in zip(others, found):
                frames.append(replace(frame, image=blur_faces(frame.image, boxes)[0]))
                blurred += len(boxes)
    frames.sort(key=lambda f: f.index)
    return Clip(tuple(frames), next(i for i, f in enumerate(frames) if f.index == key.index)), {
        "blur_faces": True, "faces_blurred": blurred}
