"""The commands' options, in groups by concern (each group a decorator a command stacks).

Every option has its environment variable (shown in --help) and takes its default from
video_summarizer.defaults (shown as ``[default: X]``; help says a default in words only where it
is computed from other options). The parameter names are the fields of video_summarizer.options.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from video_summarizer import defaults as D

F = TypeVar("F", bound=Callable[..., Any])


class _Smoothing(click.ParamType):
    """K/N with 1 <= K <= N, as (K, N)."""

    name = "K/N"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        """'2/3' -> (2, 3); anything else is a usage error naming the option."""
        if isinstance(value, tuple):
            return value
        k, sep, n = str(value).partition("/")
        if sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n):
            return int(k), int(n)
        self.fail(f"{value!r} is not K/N with 1 <= K <= N (e.g. 2/3)", param, ctx)


SMOOTHING = _Smoothing()


def opt(*names: str, envvar: str, **kw: Any) -> Callable[[F], F]:
    """A click option whose help shows its environment variable."""
    return click.option(*names, envvar=envvar, show_envvar=True, **kw)


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, listed in --help in the order given."""
    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


source_options = option_group(
    opt("--source", "sources", envvar="SUMMARIZER_SOURCE", multiple=True, metavar="SRC",
        help="cam0/cam1/device index//dev/videoN, a video file, '-' for stdin, rtsp:// or http(s):// "
             "stream, a folder or a glob. Repeatable."),
    opt("--source-label", "source_labels", envvar="SUMMARIZER_SOURCE_LABEL", multiple=True, metavar="LABEL",
        help="Name the Nth --source LABEL (repeat, in the order of --source; letters, digits, . _ -): its "
             "trace user id, metric label, output file name. Default: cam0, a file's name, a stream's host "
             "and the plain words of its path (never its user info, query or key-like path parts)."),
    opt("--live/--no-live", "live", envvar="SUMMARIZER_LIVE", default=None,
        help="Treat the source as live (newest frame only, wall-clock time). Default: cameras and "
             "streams are live, files and stdin are not."),
    opt("--reconnect-attempts", envvar="SUMMARIZER_RECONNECT_ATTEMPTS", type=click.IntRange(min=-1),
        default=D.RECONNECT_ATTEMPTS, show_default=True,
        help="Times in a row a camera or stream that stops delivering is reopened (0.5 s apart, "
             "doubling to 10 s) before its run ends; -1: forever, for a camera left running."),
    opt("--max-pixels", envvar="SUMMARIZER_MAX_PIXELS", type=click.IntRange(min=1), default=D.MAX_PIXELS,
        show_default=True,
        help="Largest frame in pixels (width x height; 8K is 7680x4320) of a source, a known-faces or a "
             "dataset image, read from the image header or the container before anything is decoded."),
    opt("--stdin-max-mb", envvar="SUMMARIZER_STDIN_MAX_MB", type=click.FloatRange(min=1.0),
        default=D.STDIN_MAX_MB, show_default=True,
        help="Most of stdin kept on disk: an MP4 or an image piped in is copied to a temporary file first "
             "(MPEG-TS and MKV are read as they come, unbounded)."),
)

max_pixels_option = opt(
    "--max-pixels", envvar="SUMMARIZER_MAX_PIXELS", type=click.IntRange(min=1), default=D.MAX_PIXELS,
    show_default=True, help="Largest dataset image in pixels (width x height), read from its header before "
                            "it is decoded.")

face_options = option_group(
    opt("--known-faces", envvar="KNOWN_FACES_DIR", type=click.Path(), default=None, metavar="DIR",
        help="Folder of known people: name.jpg, or name/ with several images."),
    opt("--no-faces", envvar="SUMMARIZER_NO_FACES", is_flag=True, help="Skip face recognition."),
    opt("--face-tolerance", envvar="FACE_TOLERANCE", type=click.FloatRange(0.0, 1.0), default=D.FACE_TOLERANCE,
        show_default=True, help="Face match distance threshold (lower is stricter)."),
    opt("--face-smoothing", envvar="FACE_SMOOTHING", type=SMOOTHING, default=None, metavar="K/N",
        help="Name a person only once recognized in K of the last N processed frames (e.g. 2/3), so a "
             "passing look-alike is not named. Default off."),
    opt("--blur-faces/--no-blur-faces", "blur_faces", envvar="SUMMARIZER_BLUR_FACES", default=None,
        help="Blur every detected face in the frames sent to the caption model (the recognized names "
             "still go as text). Default: on when the VLM endpoint is not on this machine."),
    opt("--face-model", envvar="FACE_MODEL", type=click.Choice(["hog", "cnn"]), default=D.FACE_MODEL,
        show_default=True, help="Face detector: hog (CPU) or cnn (GPU)."),
)

def _dtype_option(name: str, envvar: str, role: str) -> Callable[[F], F]:
    """--vlm-dtype / --llm-dtype: the in-process model's weights (fit.py sizes the model at it)."""
    return opt(name, envvar=envvar, type=click.Choice(D.DTYPES), default=D.DTYPE, show_default=True,
               help=f"Local {role} model's weights: auto (bfloat16 on CUDA and on a CPU with AVX512-BF16 or AMX, "
                    "else float32), float32, bfloat16, float16, or int8 (a CPU only: about 2-3x fewer CPU seconds "
                    "a token, unchecked for quality). A model that cannot fit in memory at it is refused before "
                    "anything downloads.")


caption_options = option_group(
    opt("--vlm-backend", envvar="VLM_BACKEND", type=click.Choice(["auto", "local", "api"]), default=D.VLM_BACKEND,
        show_default=True,
        help="local: run the caption model in this process (transformers); api: an OpenAI-compatible "
             "server. auto: api when --vlm-base-url is given, else local."),
    opt("--vlm-base-url", envvar="VLM_BASE_URL", default=None,
        help="OpenAI-compatible endpoint serving the caption model (vLLM, Ollama, LM Studio, llama.cpp). "
             f"Default with --vlm-backend api: {D.VLM_URL}."),
    opt("--vlm-model", envvar="VLM_MODEL", default=None,
        help=f"Caption model: for local a hub id or a folder (default {D.LOCAL_VLM_MODEL}); for api the "
             f"name the server lists (default {D.API_VLM_MODEL})."),
    opt("--vlm-device", envvar="VLM_DEVICE", default=D.DEVICE, show_default=True,
        help="Local caption model: auto (CUDA, then MPS, then CPU), cpu, cuda, mps."),
    opt("--vlm-api-key", envvar="VLM_API_KEY", default=None, help="API key for the VLM endpoint, if it needs one."),
    opt("--vlm-timeout", envvar="VLM_TIMEOUT", type=click.FloatRange(min=0.1), default=D.VLM_TIMEOUT_S,
        show_default=True, help="Seconds before one caption request is given up."),
    opt("--vlm-max-tokens", envvar="VLM_MAX_TOKENS", type=click.IntRange(min=1), default=None,
        help=f"Longest caption in tokens: {D.VLM_MAX_TOKENS}, or {D.VLM_CPU_MAX_TOKENS} for the caption model "
             "in this process on a CPU."),
    _dtype_option("--vlm-dtype", "VLM_DTYPE", "caption"),
)

clip_options = option_group(
    opt("--clip-frames", envvar="SUMMARIZER_CLIP_FRAMES", type=click.IntRange(1, 32), default=None,
        help=f"Frames one caption covers: those since the last caption chosen by motion and change, the "
             f"selected one last, in one request; 1 = a still (default {D.CLIP_FRAMES_SERVER} for a server, "
             f"{D.CLIP_FRAMES_LOCAL} in process)."),
    opt("--clip-as", envvar="SUMMARIZER_CLIP_AS", type=click.Choice(["images", "video"]), default=D.CLIP_AS,
        show_default=True,
        help="A clip as several images with their times in the text (any server), or one video part "
             "(servers that take one, e.g. vLLM with Qwen3-VL; in process: images)."),
    opt("--clip-max-pixels", envvar="SUMMARIZER_CLIP_MAX_PIXELS", type=click.IntRange(min=4096), default=None,
        help=f"Pixels of all a request's frames together; each of N frames gets 1/N, so N frames cost the "
             f"visual tokens of one such still (default {D.CLIP_MAX_PIXELS_SERVER} for a server, about "
             f"{D.CLIP_MAX_PIXELS_SERVER // 1024} Qwen3-VL tokens; {D.CLIP_MAX_PIXELS_LOCAL}, one 768x432 "
             f"still, in process)."),
)

summary_model_options = option_group(
    opt("--llm-model", envvar="LLM_MODEL", default=D.LLM_MODEL, show_default=True,
        help="Summary model: a hub id or a local folder (transformers), or the served name with --llm-base-url."),
    opt("--llm-base-url", envvar="LLM_BASE_URL", default=None,
        help="Use an OpenAI-compatible server for summaries instead of loading the model here."),
    opt("--llm-api-key", envvar="LLM_API_KEY", default=None, help="API key for --llm-base-url."),
    opt("--llm-device", envvar="LLM_DEVICE", default=D.DEVICE, show_default=True,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps."),
    _dtype_option("--llm-dtype", "LLM_DTYPE", "summary"),
)

selection_options = option_group(
    opt("--interval", envvar="SUMMARIZER_INTERVAL", type=click.FloatRange(min=0.0), default=D.INTERVAL_S,
        show_default=True, help="Seconds of video between processed frames; 0 = every frame."),
    opt("--min-change", envvar="SUMMARIZER_MIN_CHANGE", type=click.FloatRange(0.0, 1.0), default=D.MIN_CHANGE,
        show_default=True, help="Skip frames that differ less than this (0..1) from the last processed one; "
                                "0 turns gating off (one frame per interval, no motion trigger either)."),
    opt("--max-gap", envvar="SUMMARIZER_MAX_GAP", type=click.FloatRange(min=0.0), default=None,
        help="Process a frame anyway after this many seconds without one. Default max(1 s, 2 x interval)."),
    opt("--motion-min-area", envvar="SUMMARIZER_MOTION_MIN_AREA", type=click.FloatRange(0.0, 0.5),
        default=D.MOTION_MIN_AREA, show_default=True,
        help="Motion sensitivity: the smallest moving region, as a share of the frame, that counts as "
             "motion. A motion start is captioned at once, motion that goes on once per --interval, a "
             "still scene once per --max-gap (sooner if it changes by --min-change); 0 turns it off."),
)

summary_interval_option = opt(
    "--summary-interval", envvar="SUMMARIZER_SUMMARY_INTERVAL", type=click.FloatRange(min=0.0),
    default=D.SUMMARY_INTERVAL_S, show_default=True,
    help="Seconds of video between rolling summaries (and one at the end).")

max_inflight_option = opt(
    "--max-inflight", envvar="SUMMARIZER_MAX_INFLIGHT", type=click.IntRange(1, 64), default=None,
    help="Caption requests in flight at once (default 2 for a server, 1 for the in-process model, "
         "which captions one frame at a time). Live sources drop frames when all are busy.")

scale_options = option_group(
    max_inflight_option,
    opt("--jobs", envvar="SUMMARIZER_JOBS", type=click.IntRange(1, 256), default=None,
        help="Batch: inputs run at once, sharing the --max-inflight caption calls (default: enough to "
             "keep them busy, at most 2 per CPU). With --ray: per worker."),
    opt("--ray", envvar="RAY_ADDRESS", default=None, is_flag=False, flag_value="auto", metavar="[ADDRESS]",
        help="Batch: send the inputs to the Ray cluster at ADDRESS (alone: the one this machine is in; "
             "'local': a private one for this run). --output-dir must be a folder every node sees."),
)

index_write_options = option_group(
    opt("--index", envvar="SUMMARIZER_INDEX", default=None, metavar="DIR",
        help="Put every caption and summary into this LanceDB folder (or db://NAME: LanceDB Cloud, key from "
             "LANCEDB_API_KEY), embedded for the commands search and ask; a re-run over a file replaces its "
             "moments. Off unless given."),
    opt("--embed-model", envvar="SUMMARIZER_EMBED_MODEL", default=None,
        help=f"sentence-transformers model (hub id or folder) that embeds what --index writes. Default: "
             f"{D.EMBED_MODEL} for a new index; an index keeps the model it was made with (another one is "
             "refused)."),
)

index_read_options = option_group(
    opt("--index", envvar="SUMMARIZER_INDEX", default=None, metavar="DIR",
        help="The LanceDB folder (or db://NAME: LanceDB Cloud, key from LANCEDB_API_KEY) that a run with "
             "--index wrote. Default: LANCEDB_URI."),
    opt("--embed-model", envvar="SUMMARIZER_EMBED_MODEL", default=None,
        help="sentence-transformers model (hub id or folder) for the query. Default: the one the index "
             "was made with (another one is refused)."),
)

query_options = option_group(
    opt("--faces", envvar="SUMMARIZER_FACES", multiple=True, metavar="NAME",
        help="Only moments showing NAME (repeat: all of them)."),
    opt("--source-filter", envvar="SUMMARIZER_SOURCE_FILTER", default=None, metavar="GLOB",
        help="Only moments of sources matching GLOB (* and ?), by label or path."),
    opt("--since", envvar="SUMMARIZER_SINCE", default=None, metavar="T",
        help="Only moments from T on: a video time (90, 01:30) for files, or a date and time "
             "(2026-12-01T09:00, UTC unless a zone is given) for live sources."),
    opt("--until", envvar="SUMMARIZER_UNTIL", default=None, metavar="T", help="Only moments up to T."),
    opt("--limit", envvar="SUMMARIZER_LIMIT", type=click.IntRange(1, 1000), default=D.QUERY_LIMIT,
        show_default=True, help="Moments returned (given to the model by ask)."),
)

json_option = opt("--json", "as_json", envvar="SUMMARIZER_JSON", is_flag=True, help="Print the result as JSON.")

output_options = option_group(
    opt("--events", envvar="SUMMARIZER_EVENTS", default=None, metavar="PATH|-",
        help="Write caption/summary/error/stats events as JSON lines ('-' = stdout)."),
    opt("--summary-out", envvar="SUMMARIZER_SUMMARY_OUT", default=None, metavar="FILE",
        help="Also write the final summary to this file (atomically)."),
    opt("--output-dir", envvar="SUMMARIZER_OUTPUT_DIR", default=None, metavar="DIR",
        help="Batch mode: write <stem>.summary.json and .md per input; skip inputs already done."),
    opt("--force", envvar="SUMMARIZER_FORCE", is_flag=True, help="Batch mode: redo inputs already done."),
)

shutdown_option = opt(
    "--shutdown-timeout", envvar="SUMMARIZER_SHUTDOWN_TIMEOUT", type=click.FloatRange(min=0.0),
    default=D.SHUTDOWN_TIMEOUT_S, show_default=True,
    help="On SIGINT/SIGTERM: seconds to finish in-flight calls and the final summary.")

flush_option = opt(
    "--flush-timeout", envvar="LANGFUSE_FLUSH_DEADLINE", type=click.FloatRange(min=0.0), default=D.FLUSH_TIMEOUT_S,
    show_default=True, help="Seconds allowed for sending the last traces to Langfuse at exit.")


def trace_log_option(default_log: bool) -> Callable[[F], F]:
    """--trace-log; default_log: without Langfuse keys a run (and ask) writes traces.jsonl unless given."""
    said = (f" Default without Langfuse keys: {D.TRACE_LOG} (in --output-dir in batch mode)." if default_log
            else " Off unless given.")
    return opt("--trace-log", envvar="SUMMARIZER_TRACE_LOG", default=None, metavar="PATH",
               help="Append every trace, observation and score as JSON lines (read it with trace_report.py)." + said)


prompt_options = option_group(
    opt("--prompt-label", envvar="LANGFUSE_PROMPT_LABEL", default=D.PROMPT_LABEL, show_default=True,
        help="Fetch the caption and summary prompts (video-caption, video-summary) from Langfuse prompt "
             "management by this label; the built-in prompts are used when Langfuse is off or lacks them."),
    opt("--prompt-cache-ttl", envvar="LANGFUSE_PROMPT_CACHE_TTL", type=click.FloatRange(min=1.0),
        default=D.PROMPT_CACHE_TTL_S, show_default=True,
        help="Seconds before a fetched prompt is refreshed (in the background)."),
)

outbox_options = option_group(
    opt("--langfuse-outbox", envvar="LANGFUSE_OUTBOX", default=None, metavar="DIR|off",
        help="Keep what Langfuse does not acknowledge (spans and scores, with their ids) in DIR and send it "
             "again when Langfuse answers: during the run, at the next run with keys, or with the command "
             "outbox send (Langfuse keeps each id once). Default: $XDG_CACHE_HOME "
             "(~/.cache)/real-time-summarizer/outbox; off: keep nothing."),
    opt("--langfuse-outbox-max-mb", envvar="LANGFUSE_OUTBOX_MAX_MB", type=click.FloatRange(min=1.0),
        default=D.OUTBOX_MAX_MB, show_default=True,
        help="Largest size of the outbox; past it the oldest batches are dropped (counted)."),
)

rotation_options = option_group(
    opt("--trace-log-max-mb", envvar="SUMMARIZER_TRACE_LOG_MAX_MB", type=click.FloatRange(min=0.0), default=None,
        help="Rotate --trace-log to PATH.1 ... PATH.5 when it reaches this size, at a line boundary "
             "(trace_report.py PATH reads them all); 0: never. Default: 100 for live sources, unbounded for files."),
    opt("--events-max-mb", envvar="SUMMARIZER_EVENTS_MAX_MB", type=click.FloatRange(min=0.0), default=None,
        help="Rotate --events PATH the same way; 0: never. Default: 100 for live sources, unbounded for files."),
)

display_option = opt("--display", envvar="SUMMARIZER_DISPLAY", is_flag=True,
                     help="Show a window with the frame, caption, summary and faces (q or Esc quits).")

watch_options = option_group(
    opt("--metrics-port", envvar="SUMMARIZER_METRICS_PORT", type=click.IntRange(1, 65535), default=None,
        metavar="PORT",
        help="Serve Prometheus metrics at /metrics, a health check at /healthz (200 while frames arrive "
             "and captions succeed, else 503 with why) and a page to watch the run at / on this port. "
             "Off by default."),
    opt("--metrics-host", envvar="SUMMARIZER_METRICS_HOST", default=D.METRICS_HOST, show_default=True,
        help="Address the --metrics-port server listens on; 0.0.0.0 for every interface, which needs "
             "--metrics-token (the page shows the frames and who is in them)."),
    opt("--metrics-token", envvar="SUMMARIZER_METRICS_TOKEN", default=None, metavar="TOKEN",
        help="Token for every --metrics-port path but /healthz: Authorization: Bearer TOKEN, or open the page "
             "once at /?token=TOKEN (it sets a cookie). /healthz without it says only ok or unhealthy. Prefer "
             "the environment variable (a command line is visible to every user). Default: one made at start "
             "and printed once as the page's URL; required for a --metrics-host beyond loopback."),
    opt("--metrics-allow-host", envvar="SUMMARIZER_METRICS_ALLOW_HOST", multiple=True, metavar="NAME",
        help="A Host name the --metrics-port server answers besides localhost, 127.0.0.1, [::1] and "
             "--metrics-host (a reverse proxy's or Prometheus' name for this machine); others get 421. "
             "Repeatable; the variable takes names separated by spaces. Default: none."),
)

trace_frame_options = option_group(
    opt("--trace-frames", envvar="SUMMARIZER_TRACE_FRAMES", is_flag=True,
        help="Attach the JPEG the caption model got (after --blur-faces) to each vlm_caption generation "
             "as Langfuse media. Off: no pixel goes into a trace. Without keys the trace log keeps its size and hash."),
    opt("--trace-frame-max-side", envvar="SUMMARIZER_TRACE_FRAME_MAX_SIDE", type=click.IntRange(64, 4096),
        default=D.TRACE_FRAME_MAX_SIDE, show_default=True,
        help="Longest side in pixels of a traced frame or dataset image."),
    opt("--trace-frame-quality", envvar="SUMMARIZER_TRACE_FRAME_QUALITY", type=click.IntRange(10, 100),
        default=D.TRACE_FRAME_QUALITY, show_default=True,
        help="JPEG quality of a traced frame or dataset image (768 px at 75: 15-55 KB a frame on the test clips)."),
)

dataset_option = opt(
    "--dataset", envvar="SUMMARIZER_DATASET", default=None, metavar="NAME",
    help="Add every captioned frame to this Langfuse dataset (without keys: the folder NAME/); a second "
         "run over the same file adds nothing twice.")

experiment_dataset_option = opt(
    "--dataset", envvar="SUMMARIZER_DATASET", default=None, metavar="NAME",
    help="The dataset whose items are captioned: the Langfuse dataset NAME with keys, else the folder NAME/ "
         "(made by run --dataset). Required.")

judge_options = option_group(
    opt("--judge-model", envvar="JUDGE_MODEL", default=None,
        help="An OpenAI-compatible chat model that sees each frame and caption and scores its faithfulness "
             "0-1 (judge_faithfulness, on the generation)."),
    opt("--judge-base-url", envvar="JUDGE_BASE_URL", default=None,
        help="Endpoint of --judge-model (default: --vlm-base-url)."),
    opt("--judge-api-key", envvar="JUDGE_API_KEY", default=None, help="API key for --judge-base-url, if it needs one."),
)

class _Lines(click.ParamType):
    """A text; from the environment, one value per line (a rule's words have spaces)."""

    name = "text"
    envvar_list_splitter = "\n"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        """The text, stripped."""
        return str(value).strip()


alert_options = option_group(
    opt("--alert", "alerts", envvar="SUMMARIZER_ALERT", multiple=True, type=_Lines(), metavar="NAME:CONDITION",
        help="A watch rule checked on every caption: plain words judged by the caption model in the same call "
             "('door:a person at the front door'), /regex/ on the caption, face=NAME, or unknown-face. "
             "Repeatable; the variable takes one rule per line. Default: none."),
    opt("--alerts-file", envvar="SUMMARIZER_ALERTS_FILE", default=None, metavar="FILE",
        help="More rules in a TOML file ([[alert]] with name, condition, and optionally sources, cooldown "
             f"(default {D.ALERT_COOLDOWN_S:g} s), schedule HH:MM-HH:MM); YAML with PyYAML. Default: none."),
    opt("--notify", envvar="SUMMARIZER_NOTIFY", multiple=True, metavar="URL",
        help="Send notifications to mqtt://[user:pass@]host[:port][/prefix] (Home Assistant discovery; "
             "mqtts:// for TLS) or to a webhook at https://... (http:// only to this machine). Repeatable. "
             "Default: none (alert events only)."),
    opt("--notify-secret", envvar="SUMMARIZER_NOTIFY_SECRET", default=None, metavar="SECRET",
        help="Sign each webhook body with HMAC-SHA256 (X-Summarizer-Signature: sha256=HEX). Prefer the "
             "environment variable. Default: unsigned."),
    opt("--notify-first/--no-notify-first", "notify_first", envvar="SUMMARIZER_NOTIFY_FIRST",
        default=D.NOTIFY_FIRST, show_default=True,
        help="Notify at once when motion starts, then update that notification (same id) with the caption "
             "and the matched rules; off: only rule matches notify."),
    opt("--notify-snapshots/--no-notify-snapshots", "notify_snapshots", envvar="SUMMARIZER_NOTIFY_SNAPSHOTS",
        default=D.NOTIFY_SNAPSHOTS, show_default=True,
        help="Publish the JPEG of each described frame (as the caption model got it: blurred with "
             "--blur-faces) to MQTT's image entity."),
)

debug_option = opt("--debug", envvar="SUMMARIZER_DEBUG", is_flag=True, help="Verbose logs and tracebacks.")
