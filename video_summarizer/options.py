"""What a command was given, by concern: small frozen objects built once per command from click's values.

The field names are the click parameter names, so ``X.from_params(ctx.params)`` takes a concern's
own values and leaves the others alone. Each object goes only where its concern is used: the
caption options to the caption model's assembly, the query to the index, and so on. ``RunConfig``
is the `run` command's whole set, taken apart by the assembly. Values that depend on others (the
caption model of a backend, the caption calls in flight) are methods of the concern they belong to.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

from video_summarizer import defaults as D

_C = TypeVar("_C", bound="_Concern")


class _Concern:
    """A concern's frozen options; ``from_params`` picks its own fields out of click's values."""

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The click parameter names this concern takes."""
        return frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_params(cls: type[_C], params: Mapping[str, Any]) -> _C:
        """This concern's fields out of click's values (the others are left alone)."""
        values = {k: v for k, v in params.items() if k in cls.field_names()}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.default == () and f.name in values:  # a repeatable option: a tuple, never None
                values[f.name] = tuple(values[f.name] or ())
        return cls(**values)


@dataclass(frozen=True)
class SourceOptions(_Concern):
    """What to read and how: the sources, their labels, live or not, reconnects, input bounds."""

    sources: tuple[str, ...] = ()
    source_labels: tuple[str, ...] = ()  # --source-label: the Nth names the Nth --source
    live: bool | None = None  # None: cameras and streams are live, files and stdin are not
    reconnect_attempts: int = D.RECONNECT_ATTEMPTS
    max_pixels: int = D.MAX_PIXELS  # frames (and known-faces, dataset images) larger are refused
    stdin_max_mb: float = D.STDIN_MAX_MB  # what stdin may keep on disk (an MP4 or an image)

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


@dataclass(frozen=True)
class SelectionOptions(_Concern):
    """Which frames are captioned: every --interval seconds, skipped when they barely changed."""

    interval: float = D.INTERVAL_S
    min_change: float = D.MIN_CHANGE
    max_gap: float | None = None  # None: max(1 s, 2 x interval)
    motion_min_area: float = D.MOTION_MIN_AREA  # 0: no motion trigger


@dataclass(frozen=True)
class FaceOptions(_Concern):
    """Known faces, recognition and blurring."""

    known_faces: str | None = None
    no_faces: bool = False
    face_tolerance: float = D.FACE_TOLERANCE
    face_smoothing: tuple[int, int] | None = None
    blur_faces: bool | None = None  # None: on when the caption endpoint is not on this machine
    face_model: str = D.FACE_MODEL


@dataclass(frozen=True)
class CaptionOptions(_Concern):
    """The caption model: in this process or an OpenAI-compatible server."""

    vlm_backend: str = D.VLM_BACKEND
    vlm_base_url: str | None = None
    vlm_model: str | None = None  # None: the backend's default
    vlm_device: str = D.DEVICE
    vlm_api_key: str | None = field(default=None, repr=False)
    vlm_timeout: float = D.VLM_TIMEOUT_S
    vlm_max_tokens: int | None = None  # None: the backend's default (smaller in process on a CPU)
    vlm_dtype: str = D.DTYPE

    @property
    def backend(self) -> str:
        """local or api: --vlm-backend, or for auto whether a --vlm-base-url was given."""
        if self.vlm_backend != "auto":
            return self.vlm_backend
        return "api" if self.vlm_base_url else "local"

    @property
    def model(self) -> str:
        """The caption model: --vlm-model, or the backend's default."""
        if self.vlm_model:
            return self.vlm_model
        return D.LOCAL_VLM_MODEL if self.backend == "local" else D.API_VLM_MODEL

    @property
    def endpoint(self) -> str | None:
        """The server's URL (api), or None: the model runs in this process."""
        return (self.vlm_base_url or D.VLM_URL) if self.backend == "api" else None


@dataclass(frozen=True)
class ClipOptions(_Concern):
    """What one caption covers: how many frames, sent how, within how many pixels."""

    clip_frames: int | None = None  # None: 6 for a server, 4 in process
    clip_as: str = D.CLIP_AS  # "images" or "video"
    clip_max_pixels: int | None = None  # None: four 768x432 stills for a server, one in process

    def frames(self, backend: str) -> int:
        """--clip-frames, or the backend's default (backend: local or api)."""
        if self.clip_frames is not None:
            return self.clip_frames
        return D.CLIP_FRAMES_LOCAL if backend == "local" else D.CLIP_FRAMES_SERVER

    def max_pixels(self, backend: str) -> int:
        """--clip-max-pixels, or the backend's default."""
        if self.clip_max_pixels is not None:
            return self.clip_max_pixels
        return D.CLIP_MAX_PIXELS_LOCAL if backend == "local" else D.CLIP_MAX_PIXELS_SERVER


@dataclass(frozen=True)
class SummaryOptions(_Concern):
    """The summary model and how often it summarizes."""

    llm_model: str = D.LLM_MODEL
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_device: str = D.DEVICE
    summary_interval: float = D.SUMMARY_INTERVAL_S
    llm_dtype: str = D.DTYPE


@dataclass(frozen=True)
class ScaleOptions(_Concern):
    """How much runs at once, where, and how long a stop may take."""

    max_inflight: int | None = None
    jobs: int | None = None
    ray: str | None = None  # a Ray address, "auto" or "local"; None: run on this machine
    shutdown_timeout: float = D.SHUTDOWN_TIMEOUT_S

    def inflight(self, caption: CaptionOptions) -> int:
        """Caption calls in flight: --max-inflight, else 1 in process (one frame at a time), 2 for a server."""
        if self.max_inflight:
            return self.max_inflight
        return D.INFLIGHT_LOCAL if caption.backend == "local" else D.INFLIGHT_SERVER

    def job_count(self, caption: CaptionOptions) -> int:
        """Files read at once: --jobs, else enough to keep the caption budget busy, two per CPU at most."""
        if self.jobs:
            return self.jobs
        # A file being read mostly waits for a caption slot; two per CPU keep the decoders ahead
        # (measured: 0.85 of the server's time busy with one per CPU, 0.90 with two, 2 cores).
        return max(1, min(self.inflight(caption), D.JOBS_PER_CPU * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class OutputOptions(_Concern):
    """What the run writes besides traces: events, summaries, the batch folder, the window."""

    events: str | None = None
    events_max_mb: float | None = None  # None: 100 for live sources, unbounded for files
    summary_out: str | None = None
    output_dir: str | None = None
    force: bool = False
    display: bool = False
    as_json: bool = False


@dataclass(frozen=True)
class TracingOptions(_Concern):
    """The trace log, the flush at exit, and frames on the caption generations."""

    trace_log: str | None = None
    trace_log_max_mb: float | None = None  # None: 100 for live sources, unbounded for files
    flush_timeout: float = D.FLUSH_TIMEOUT_S
    trace_frames: bool = False  # the JPEG the caption model got, as Langfuse media on vlm_caption
    trace_frame_max_side: int = D.TRACE_FRAME_MAX_SIDE
    trace_frame_quality: int = D.TRACE_FRAME_QUALITY

    def trace_log_path(self, has_keys: bool, output_dir: str | None = None) -> str | None:
        """--trace-log, or traces.jsonl (in --output-dir in batch mode) when Langfuse has no keys."""
        if self.trace_log is not None or has_keys:
            return self.trace_log
        return str(Path(output_dir or ".") / D.TRACE_LOG)

    @property
    def frames(self) -> tuple[int, int] | None:
        """(max side, quality) of the traced frames, or None: no pixel goes into a trace."""
        return (self.trace_frame_max_side, self.trace_frame_quality) if self.trace_frames else None


@dataclass(frozen=True)
class PromptOptions(_Concern):
    """Which Langfuse-managed prompts, and how long they are kept."""

    prompt_label: str = D.PROMPT_LABEL
    prompt_cache_ttl: float = D.PROMPT_CACHE_TTL_S


@dataclass(frozen=True)
class OutboxOptions(_Concern):
    """Where what Langfuse did not take is kept, and how much."""

    langfuse_outbox: str | None = None  # None: the cache folder's; "off": keep nothing
    langfuse_outbox_max_mb: float = D.OUTBOX_MAX_MB

    def folder(self, cache_home: Path) -> Path | None:
        """--langfuse-outbox, else cache_home/real-time-summarizer/outbox; None for "off"."""
        given = self.langfuse_outbox
        if given is not None and given.strip().lower() in ("off", "none", ""):
            return None
        return Path(given) if given else cache_home / "real-time-summarizer" / "outbox"


@dataclass(frozen=True)
class WatchOptions(_Concern):
    """The /metrics, /healthz and watch page server."""

    metrics_port: int | None = None  # None: off
    metrics_host: str = D.METRICS_HOST
    metrics_token: str | None = field(default=None, repr=False)  # None: one made at start (loopback only)
    metrics_allow_host: tuple[str, ...] = ()  # Host header names beyond loopback and the bound address


@dataclass(frozen=True)
class IndexOptions(_Concern):
    """The LanceDB index a run writes or a query reads."""

    index: str | None = None  # a folder or db:// URI; None: off (a run), LANCEDB_URI (a query)
    embed_model: str | None = None  # None: the index's own model (EMBED_MODEL for a new one)
    # LanceDB Cloud, from LANCEDB_URI / LANCEDB_API_KEY / LANCEDB_REGION, read at the CLI's edge (with_env)
    cloud_uri: str | None = None  # a query's index when --index is not given
    cloud_api_key: str | None = field(default=None, repr=False)
    cloud_region: str | None = None

    def with_env(self, environ: Mapping[str, str]) -> "IndexOptions":
        """These options with LanceDB Cloud's settings from the environment (the edge calls this once)."""
        import dataclasses

        return dataclasses.replace(self, cloud_uri=environ.get("LANCEDB_URI") or None,
                                   cloud_api_key=environ.get("LANCEDB_API_KEY") or None,
                                   cloud_region=environ.get("LANCEDB_REGION") or None)


@dataclass(frozen=True)
class QueryOptions(_Concern):
    """What `search` and `ask` look for: the text and the filters."""

    text: str = ""
    faces: tuple[str, ...] = ()  # moments showing all of these people
    source_filter: str | None = None  # a glob on the source
    since: str | None = None  # a video time or a date and time
    until: str | None = None
    limit: int = D.QUERY_LIMIT


@dataclass(frozen=True)
class DatasetOptions(_Concern):
    """The dataset a run adds its captioned frames to."""

    dataset: str | None = None


@dataclass(frozen=True)
class ExperimentOptions(_Concern):
    """An experiment: its run name, the dataset it captions, and the judge."""

    name: str = ""
    dataset: str | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AlertOptions(_Concern):
    """Watch rules on what is seen, and where their notifications go."""

    alerts: tuple[str, ...] = ()  # NAME:CONDITION
    alerts_file: str | None = None  # TOML (or YAML) with more rules
    notify: tuple[str, ...] = field(default=(), repr=False)  # mqtt(s):// brokers and https:// hooks (passwords)
    notify_secret: str | None = field(default=None, repr=False)  # signs the webhooks' bodies
    notify_first: bool = D.NOTIFY_FIRST
    notify_snapshots: bool = D.NOTIFY_SNAPSHOTS

    @property
    def enabled(self) -> bool:
        """True when there is a rule or a target (alerts cost nothing otherwise)."""
        return bool(self.alerts or self.alerts_file or self.notify)


@dataclass(frozen=True)
class RunConfig:
    """What `run` was given, by concern: built once by the command, taken apart by the assembly."""

    source: SourceOptions = SourceOptions()
    selection: SelectionOptions = SelectionOptions()
    faces: FaceOptions = FaceOptions()
    caption: CaptionOptions = CaptionOptions()
    clip: ClipOptions = ClipOptions()
    summary: SummaryOptions = SummaryOptions()
    scale: ScaleOptions = ScaleOptions()
    outputs: OutputOptions = OutputOptions()
    tracing: TracingOptions = TracingOptions()
    prompts: PromptOptions = PromptOptions()
    outbox: OutboxOptions = OutboxOptions()
    watch: WatchOptions = WatchOptions()
    index: IndexOptions = IndexOptions()
    dataset: DatasetOptions = DatasetOptions()
    alerts: AlertOptions = AlertOptions()
    debug: bool = False

    @classmethod
    def concerns(cls) -> dict[str, type[_Concern]]:
        """Each concern's attribute name and class."""
        return dict(_CONCERNS)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "RunConfig":
        """Every key lands in exactly one concern; a key that none takes is a TypeError."""
        concerns = cls.concerns()
        taken = set().union(*(c.field_names() for c in concerns.values()), {"debug"})
        unknown = set(params) - taken
        if unknown:
            raise TypeError(f"RunConfig has no concern for {sorted(unknown)}")
        return cls(debug=bool(params.get("debug", False)),
                   **{name: concern.from_params(params) for name, concern in concerns.items()})

    def replace(self, **concerns: Any) -> "RunConfig":
        """A copy with some concerns' fields changed: replace(caption={"vlm_api_key": None})."""
        import dataclasses

        return dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name), **values)
                                            for name, values in concerns.items()})


_CONCERNS: dict[str, type[_Concern]] = {
    "source": SourceOptions, "selection": SelectionOptions, "faces": FaceOptions, "caption": CaptionOptions,
    "summary": SummaryOptions, "scale": ScaleOptions, "outputs": OutputOptions, "tracing": TracingOptions,
    "prompts": PromptOptions, "outbox": OutboxOptions, "watch": WatchOptions, "index": IndexOptions,
    "dataset": DatasetOptions,
    "alerts": AlertOptions,
    "clip": ClipOptions,
}
