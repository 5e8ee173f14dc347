"""The stages of a run, built from its options with the classes the CLI hands in (``Backends``).

Order matters to the user: every model is checked (cheap: reachable, files present) before any
loads, the tracker is built before the models load (a Langfuse problem is said at once), and
each model loads once with its own progress line. A Ray worker builds its stages with the same
function, from its own node's environment (``build_worker_stages``).
"""
from __future__ import annotations

import logging
import os
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from video_summarizer import defaults as D
from video_summarizer.app import Backends
from video_summarizer.options import (
    CaptionOptions,
    ClipOptions,
    DatasetOptions,
    FaceOptions,
    OutboxOptions,
    RunConfig,
    SourceOptions,
    SummaryOptions,
    TracingOptions,
)
from video_summarizer.tracing.settings import LangfuseSettings

log = logging.getLogger("video_summarizer.cli")  # the run's start-up lines, as they always were named


def build_stages(cfg: RunConfig, stack: ExitStack, events: Any, *, backends: Backends,
                 langfuse: LangfuseSettings, cache_home: Path) -> Any:
    """The models checked (cheap: reachable, files present), then the tracker, then the models loaded."""
    from video_summarizer.models.fit import check_models
    from video_summarizer.pipeline import Stages
    from video_summarizer.prompts import PromptSource

    vlm, endpoint = caption_model(cfg.caption, backends)
    summarizer = summary_model(cfg.summary, backends)
    vlm.check()  # a bad --vlm-model / --vlm-base-url or --llm-model is said before anything loads
    summarizer.check()
    check_models([vlm, summarizer])  # in-process models too big for the memory: refused before any download
    stack.callback(vlm.close)
    stack.callback(summarizer.close)
    tracker = open_tracker(cfg.tracing, cfg.outbox, langfuse, backends, stack, source=cfg.source,
                           output_dir=cfg.outputs.output_dir, cache_home=cache_home)
    prompts = PromptSource(tracker, label=cfg.prompts.prompt_label, cache_ttl_s=cfg.prompts.prompt_cache_ttl).load()
    observers = [dataset_writer(cfg.dataset, cfg.tracing, tracker, backends)] if cfg.dataset.dataset else []
    vlm, alerts = alert_listener(cfg, events, tracker, vlm, stack)
    observers += [alerts] if alerts is not None else []

    vlm.load()  # once, with its own progress line (nothing to load for a server)
    blur, why = blur_setting(cfg.faces.blur_faces, endpoint)
    _say_caption_model(vlm, endpoint, why, blur, cfg.tracing, tracker.enabled)
    summarizer.load()
    faces = face_model(cfg.faces, blur, max_pixels=cfg.source.max_pixels, cache_home=cache_home)
    return Stages(tracker=tracker, vlm=vlm, summarizer=summarizer, faces=faces, events=events,
                  blur_faces=blur, prompts=prompts, frame_observers=observers, trace_frames=cfg.tracing.frames,
                  clips=clip_collectors(cfg.clip, cfg.caption.backend, vlm))


def alert_listener(cfg: RunConfig, events: Any, tracker: Any, vlm: Any, stack: ExitStack) -> tuple[Any, Any]:
    """--alert / --notify: the caption model (asked the plain-words rules too) and the notifier's frame observer."""
    if not cfg.alerts.enabled:
        return vlm, None
    from video_summarizer.alerts.notify import AlertObserver
    from video_summarizer.alerts.setup import build_alerts

    vlm, notifier = build_alerts(cfg.alerts, events, tracker, vlm)
    stack.callback(notifier.close)
    return vlm, AlertObserver(notifier)


def build_worker_stages(cfg: RunConfig, stack: ExitStack, events: Any, *, backends: Backends) -> Any:
    """On a Ray worker: the API keys and Langfuse settings of this node's own environment, then build_stages."""
    from video_summarizer.distributed import with_node_keys
    from video_summarizer.paths import cache_home

    return build_stages(with_node_keys(cfg, os.environ), stack, events, backends=backends,
                        langfuse=LangfuseSettings.from_env(os.environ), cache_home=cache_home(os.environ))


def run_settings(cfg: RunConfig) -> Any:
    """What the per-source job needs of the options (runner.RunSettings), the caption budget resolved."""
    from video_summarizer.runner import RunSettings

    return RunSettings(cfg.source, cfg.selection, summary_interval=cfg.summary.summary_interval,
                       shutdown_timeout=cfg.scale.shutdown_timeout, inflight=cfg.scale.inflight(cfg.caption),
                       jobs=cfg.scale.job_count(cfg.caption), display=cfg.outputs.display)


def caption_model(caption: CaptionOptions, backends: Backends) -> tuple[Any, str | None]:
    """The caption model for --vlm-backend, and its endpoint (None: in this process); not loaded."""
    if caption.backend == "local":
        from video_summarizer.models.local_vlm import LocalVLM

        if caption.vlm_base_url:
            from video_summarizer.redact import redact_url

            log.warning("--vlm-backend local: --vlm-base-url %s is not used", redact_url(caption.vlm_base_url))
        return LocalVLM(caption.model, device=caption.vlm_device, timeout_s=caption.vlm_timeout,
                        max_new_tokens=caption.vlm_max_tokens, dtype=caption.vlm_dtype), None
    vlm = backends.caption(caption.endpoint, caption.vlm_api_key, caption.model,
                           timeout_s=caption.vlm_timeout, max_tokens=caption.vlm_max_tokens or D.VLM_MAX_TOKENS)
    return vlm, vlm.base_url


def clip_collectors(clip: ClipOptions, backend: str, vlm: Any) -> Any:
    """What makes each source's clip collector (--clip-frames, --clip-max-pixels); --clip-as set on the model."""
    from functools import partial

    from video_summarizer.clips import ClipCollector

    frames, pixels = clip.frames(backend), clip.max_pixels(backend)
    if clip.clip_as == "video":
        if backend == "local":
            log.info("--clip-as video: the in-process model takes a clip as images")
        else:
            vlm.clip_as = "video"
    log.info("Captions cover clips of up to %d frame(s), %d pixels a request", frames, pixels)
    return partial(ClipCollector, frames, max_pixels=pixels)


def summary_model(summary: SummaryOptions, backends: Backends) -> Any:
    """The summary model (in this process, or the server at --llm-base-url); not loaded."""
    return backends.summary(summary.llm_model, device=summary.llm_device, dtype=summary.llm_dtype,
                            base_url=summary.llm_base_url, api_key=summary.llm_api_key)


def blur_setting(option: bool | None, endpoint: str | None) -> tuple[bool, str]:
    """Whether to blur faces before captioning (endpoint None: in process), and the startup line's words."""
    from video_summarizer.privacy import is_local_endpoint

    local = is_local_endpoint(endpoint)
    if option is None:
        option = not local
        why = ("the model runs in this process" if endpoint is None else
               "the endpoint is on this machine" if local else "the endpoint is not on this machine")
    else:
        why = "--blur-faces" if option else "--no-blur-faces"
    if option:
        return True, f"faces blurred before frames are sent ({why})"
    return False, f"faces sent unblurred ({why})"


def _say_caption_model(vlm: Any, endpoint: str | None, why: str, blur: bool, tracing: TracingOptions,
                       uploads: bool) -> None:
    from video_summarizer.redact import redact_url

    where = f"at {redact_url(endpoint)}" if endpoint else f"in this process on {vlm.device}"
    log.info("VLM: %s %s; %s", vlm.model, where, why)
    if tracing.trace_frames:
        log.info("Frames traced: the JPEG the caption model gets goes on each vlm_caption generation "
                 "(%d px, quality %d; faces %s in them; %s)", tracing.trace_frame_max_side,
                 tracing.trace_frame_quality, "blurred" if blur else "NOT blurred",
                 "uploaded to Langfuse" if uploads else "no keys: the trace log keeps size and hash")


def open_tracker(tracing: TracingOptions, outbox: OutboxOptions, langfuse: LangfuseSettings, backends: Backends,
                 stack: ExitStack, *, source: SourceOptions, output_dir: str | None, cache_home: Path) -> Any:
    """The run's tracker, with its trace log (rotated when live) and outbox; closed by the stack."""
    from video_summarizer.tracing.outbox import open_outbox
    from video_summarizer.tracing.trace_log import TraceLog

    path = tracing.trace_log_path(langfuse.has_keys, output_dir)
    trace_log = TraceLog(path, source.log_max_bytes(tracing.trace_log_max_mb)) if path else None
    kept = open_outbox(outbox.folder(cache_home), outbox.langfuse_outbox_max_mb, has_keys=langfuse.has_keys,
                       timeout_s=langfuse.timeout_s or D.LANGFUSE_TIMEOUT_S)
    tracker = backends.tracker(**langfuse.tracker_kwargs(), trace_log=trace_log, outbox=kept)
    stack.callback(close_tracker, tracker, tracing.flush_timeout)
    if path:
        log.info("Trace log: %s (python trace_report.py %s)", path, path)
    return tracker


def plain_tracker(backends: Backends, langfuse: LangfuseSettings, trace_log: str | None) -> Any:
    """A tracker without outbox, for the commands that read no source (ask, experiment, dataset push)."""
    return backends.tracker(**langfuse.tracker_kwargs(), trace_log=trace_log)


def close_tracker(tracker: Any, deadline_s: float) -> None:
    """Flush and close within deadline_s (it logs what was sent and what may be lost)."""
    tracker.close(deadline_s=deadline_s)


def dataset_writer(dataset: DatasetOptions, tracing: TracingOptions, tracker: Any, backends: Backends) -> Any:
    """--dataset with a source: the frame observer adding each captioned frame to the dataset."""
    from video_summarizer.evals.datasets import DatasetWriter, LocalDataset

    name = dataset.dataset
    if tracker.enabled and backends.dataset is not None:
        store, where = backends.dataset(tracker, name), f"Langfuse dataset {name}"
    else:
        store, where = LocalDataset(name), f"folder {name}/"
    writer = DatasetWriter(store, name=name, max_side=tracing.trace_frame_max_side,
                           quality=tracing.trace_frame_quality, session_id=uuid.uuid4().hex, where=where)
    log.info("Dataset: every captioned frame goes to %s, as the caption model gets it", where)
    return writer


def face_model(faces: FaceOptions, blur: bool, *, max_pixels: int, cache_home: Path) -> Any:
    """The face recognizer, loaded (None with --no-faces, unless faces must be found to be blurred)."""
    if faces.no_faces and not blur:
        return None
    from video_summarizer.faces import FaceRecognizer

    if faces.no_faces:
        log.info("--no-faces with blurring on: faces are detected (not recognized) to be blurred")
    model = FaceRecognizer(None if faces.no_faces else faces.known_faces, tolerance=faces.face_tolerance,
                           model=faces.face_model, smoothing=faces.face_smoothing, max_pixels=max_pixels,
                           cache_dir=cache_home / "real-time-summarizer" / "faces")
    model.load()
    return model
