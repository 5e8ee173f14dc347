"""The run's settings: one frozen object built once from the CLI's values and handed whole to the run."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from video_summarizer import defaults as D

DEFAULT_LLM = D.LLM_MODEL
DEFAULT_LOCAL_VLM = D.LOCAL_VLM_MODEL
DEFAULT_API_VLM = D.API_VLM_MODEL
DEFAULT_VLM_URL = D.VLM_URL
DEFAULT_TRACE_LOG = D.TRACE_LOG
DEFAULT_EMBED_MODEL = D.EMBED_MODEL
DEFAULT_MAX_PIXELS = D.MAX_PIXELS
DEFAULT_STDIN_MAX_MB = D.STDIN_MAX_MB


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run, as the user gave it (``None`` where the default depends on others)."""

    sources: tuple[str, ...] = ()
    source_labels: tuple[str, ...] = ()  # --source-label: the Nth names the Nth --source
    live: bool | None = None
    reconnect_attempts: int = D.RECONNECT_ATTEMPTS
    max_pixels: int = DEFAULT_MAX_PIXELS  # frames (and known-faces, dataset images) larger are refused
    stdin_max_mb: float = DEFAULT_STDIN_MAX_MB  # what stdin may keep on disk (an MP4 or an image)
    known_faces: str | None = None
    no_faces: bool = False
    face_tolerance: float = D.FACE_TOLERANCE
    face_smoothing: tuple[int, int] | None = None
    blur_faces: bool | None = None
    face_model: str = D.FACE_MODEL
    vlm_backend: str = D.VLM_BACKEND
    vlm_base_url: str | None = None
    vlm_model: str | None = None
    vlm_device: str = D.DEVICE
    vlm_api_key: str | None = None
    vlm_timeout: float = D.VLM_TIMEOUT_S
    vlm_max_tokens: int = D.VLM_MAX_TOKENS
    llm_model: str = DEFAULT_LLM
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_device: str = D.DEVICE
    interval: float = D.INTERVAL_S
    min_change: float = D.MIN_CHANGE
    max_gap: float | None = None
    summary_interval: float = D.SUMMARY_INTERVAL_S
    max_inflight: int | None = None
    jobs: int | None = None
    ray: str | None = None  # a Ray address, "auto" or "local"; None: run on this machine
    index: str | None = None  # a LanceDB folder or db:// URI for captions and summaries; None: off
    embed_model: str | None = None  # None: the index's own model (DEFAULT_EMBED_MODEL for a new one)
    search: str | None = None  # words to find in the index (no source is read)
    ask: str | None = None  # a question answered from the index by the summary model
    faces: tuple[str, ...] = ()  # --search/--ask: moments showing all of these people
    source_filter: str | None = None  # --search/--ask: a glob on the source
    since: str | None = None  # --search/--ask: a video time or a date and time
    until: str | None = None
    limit: int = D.QUERY_LIMIT  # --search/--ask: moments returned
    events: str | None = None
    summary_out: str | None = None
    output_dir: str | None = None
    force: bool = False
    trace_log: str | None = None
    prompt_label: str = D.PROMPT_LABEL
    prompt_cache_ttl: float = D.PROMPT_CACHE_TTL_S
    shutdown_timeout: float = D.SHUTDOWN_TIMEOUT_S
    flush_timeout: float = D.FLUSH_TIMEOUT_S
    langfuse_outbox: str | None = None  # what Langfuse did not take; None: the cache folder's, "off"
    langfuse_outbox_max_mb: float = D.OUTBOX_MAX_MB
    send_outbox: bool = False  # send the outbox and exit (cron)
    trace_log_max_mb: float | None = None  # None: 100 for live sources, unbounded for files
    events_max_mb: float | None = None
    display: bool = False
    metrics_port: int | None = None  # /metrics, /healthz and the watch page; None: off
    metrics_host: str = D.METRICS_HOST
    metrics_token: str | None = field(default=None, repr=False)  # None: one made at start (loopback only)
    metrics_allow_host: tuple[str, ...] = ()  # Host header names beyond loopback and the bound address
    trace_frames: bool = False  # the JPEG the caption model got, as Langfuse media on vlm_caption
    trace_frame_max_side: int = D.TRACE_FRAME_MAX_SIDE
    trace_frame_quality: int = D.TRACE_FRAME_QUALITY
    dataset: str | None = None  # with a source: add captioned frames; with --experiment: the items
    dataset_push: str | None = None  # a local dataset folder to upload to Langfuse
    experiment: str | None = None  # a run name: caption every item of --dataset
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key: str | None = None
    as_json: bool = False
    debug: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "RunOptions":
        """Build from click's values (unknown keys are an error: every option has a field)."""
        names = {f.name for f in fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise TypeError(f"RunOptions has no field for {sorted(unknown)}")
        values = dict(params)
        values["sources"] = tuple(values.get("sources") or ())
        values["source_labels"] = tuple(values.get("source_labels") or ())
        if "faces" in values:
            values["faces"] = tuple(values["faces"] or ())
        if "metrics_allow_host" in values:
            values["metrics_allow_host"] = tuple(values["metrics_allow_host"] or ())
        return cls(**values)

    @property
    def resolved_vlm_backend(self) -> str:
        """local or api: --vlm-backend, or for auto whether a --vlm-base-url was given."""
        if self.vlm_backend != "auto":
            return self.vlm_backend
        return "api" if self.vlm_base_url else "local"

    @property
    def resolved_vlm_model(self) -> str:
        """The caption model: --vlm-model, or the backend's default."""
        if self.vlm_model:
            return self.vlm_model
        return DEFAULT_LOCAL_VLM if self.resolved_vlm_backend == "local" else DEFAULT_API_VLM

    @property
    def resolved_max_inflight(self) -> int:
        """Caption calls in flight: --max-inflight, else 1 in process (one frame at a time), 2 for a server."""
        if self.max_inflight:
            return self.max_inflight
        return D.INFLIGHT_LOCAL if self.resolved_vlm_backend == "local" else D.INFLIGHT_SERVER

    @property
    def resolved_jobs(self) -> int:
        """Files read at once: --jobs, else enough to keep the caption budget busy, two per CPU at most."""
        if self.jobs:
            return self.jobs
        # A file being read mostly waits for a caption slot; two per CPU keep the decoders ahead
        # (measured: 0.85 of the server's time busy with one per CPU, 0.90 with two, 2 cores).
        return max(1, min(self.resolved_max_inflight, D.JOBS_PER_CPU * (os.cpu_count() or 1)))

    @property
    def any_live(self) -> bool:
        """True when a source is live (--live, a camera or a stream): its logs run for weeks."""
        from video_summarizer.source_specs import kind_of

        if self.live is not None:
            return self.live
        return any(kind_of(spec) in ("camera", "stream") for spec in self.sources)

    def log_max_bytes(self, max_mb: float | None) -> int:
        """--trace-log-max-mb / --events-max-mb in bytes: given, else 100 MB when live; 0 = unbounded."""
        from video_summarizer.rotation import max_bytes_of

        return max_bytes_of(max_mb if max_mb is not None else (D.LIVE_LOG_MAX_MB if self.any_live else 0.0))

    @property
    def resolved_outbox(self) -> Path | None:
        """--langfuse-outbox, else the cache folder's; None for "off"."""
        from video_summarizer.tracing.outbox import default_outbox_dir

        if self.langfuse_outbox is not None and self.langfuse_outbox.strip().lower() in ("off", "none", ""):
            return None
        return Path(self.langfuse_outbox) if self.langfuse_outbox else default_outbox_dir()

    def resolved_trace_log(self, has_keys: bool) -> str | None:
        """--trace-log, or traces.jsonl (in --output-dir in batch mode) when Langfuse has no keys."""
        if self.trace_log is not None or has_keys:
            return self.trace_log
        return str(Path(self.output_dir or ".") / DEFAULT_TRACE_LOG)
