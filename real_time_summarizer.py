#!/usr/bin/env python3
"""Real-time video summarizer: captions sampled frames with a VLM, names known faces, rolls
the captions into summaries with an LLM, and traces every processed frame to Langfuse."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from video_summarizer import __version__
from video_summarizer import defaults as D
from video_summarizer.errors import SummarizerError
from video_summarizer.app.signals import EXIT_SIGNAL, EXIT_SOME_FAILED, EXIT_USAGE, StartupInterrupted

log = logging.getLogger("video_summarizer.cli")


EPILOG = """\b
Examples:
  # live camera, caption model in this process (Qwen3-VL-2B, downloaded on first use)
  python real_time_summarizer.py --source cam0 --known-faces faces/ --display
\b
  # a recorded file, every 2 s of video, captions from vLLM on this machine
  # (vllm serve Qwen/Qwen3-VL-8B-Instruct --served-model-name qwen3), events as JSON lines
  python real_time_summarizer.py --source clip.mp4 --vlm-base-url http://localhost:8000/v1 \\
      --interval 2 --events events.jsonl
\b
  # a video piped on stdin (Ollama serving qwen3-vl)
  cat clip.mp4 | python real_time_summarizer.py --source - \\
      --vlm-base-url http://localhost:11434/v1 --vlm-model qwen3-vl
\b
  # cron: summarize every new video of a folder, skipping those already done
  */10 * * * * cd /opt/summarizer && .venv/bin/python real_time_summarizer.py \\
      --source /data/incoming/ --output-dir /data/summaries >> /var/log/summarizer.log 2>&1
\b
Exit codes: 0 done, 1 some inputs failed (named on stderr), 2 bad usage or input,
130 interrupted (SIGINT), 143 terminated (SIGTERM).
Langfuse: set LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL (or `source
setup_langfuse.sh`); without keys traces go to --trace-log only (default traces.jsonl).
"""


class UsageProblem(click.ClickException):
    """One line on stderr naming the option, exit code 2."""

    exit_code = EXIT_USAGE


def _fail(err: SummarizerError, debug: bool) -> UsageProblem:
    if debug:
        log.error("details", exc_info=err)
    from video_summarizer.redact import redact_text

    prefix = f"{err.option}: " if err.option else ""
    return UsageProblem(redact_text(f"{prefix}{err}"))  # a message may quote a URL as given


class _Smoothing(click.ParamType):
    """K/N with 1 <= K <= N, as (K, N)."""

    name = "K/N"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        k, sep, n = str(value).partition("/")
        if sep and k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n):
            return int(k), int(n)
        self.fail(f"{value!r} is not K/N with 1 <= K <= N (e.g. 2/3)", param, ctx)


SMOOTHING = _Smoothing()


def _opt(*names: str, envvar: str, **kw: Any):
    """A click option whose help shows its environment variable."""
    return click.option(*names, envvar=envvar, show_envvar=True, **kw)


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="real-time-summarizer")
@_opt("--source", "sources", envvar="SUMMARIZER_SOURCE", multiple=True, metavar="SRC",
      help="cam0/cam1/device index//dev/videoN, a video file, '-' for stdin, rtsp:// or http(s):// "
           "stream, a folder or a glob. Repeatable.")
@_opt("--source-label", "source_labels", envvar="SUMMARIZER_SOURCE_LABEL", multiple=True, metavar="LABEL",
      help="Name the Nth --source LABEL (repeat, in the order of --source; letters, digits, . _ -): its "
           "trace user id, metric label, output file name. Default: cam0, a file's name, a stream's host "
           "and the plain words of its path (never its user info, query or key-like path parts).")
@_opt("--live/--no-live", "live", envvar="SUMMARIZER_LIVE", default=None,
      help="Treat the source as live (newest frame only, wall-clock time). Default: cameras and "
           "streams are live, files and stdin are not.")
@_opt("--reconnect-attempts", envvar="SUMMARIZER_RECONNECT_ATTEMPTS", type=click.IntRange(min=-1), default=D.RECONNECT_ATTEMPTS,
      show_default=True,
      help="Times in a row a camera or stream that stops delivering is reopened (0.5 s apart, "
           "doubling to 10 s) before its run ends; -1: forever, for a camera left running.")
@_opt("--max-pixels", envvar="SUMMARIZER_MAX_PIXELS", type=click.IntRange(min=1), default=D.MAX_PIXELS,
      show_default=True,
      help="Largest frame in pixels (width x height; 8K is 7680x4320) of a source, a known-faces or a "
           "dataset image, read from the image header or the container before anything is decoded.")
@_opt("--stdin-max-mb", envvar="SUMMARIZER_STDIN_MAX_MB", type=click.FloatRange(min=1.0),
      default=D.STDIN_MAX_MB, show_default=True,
      help="Most of stdin kept on disk: an MP4 or an image piped in is copied to a temporary file first "
           "(MPEG-TS and MKV are read as they come, unbounded).")
@_opt("--known-faces", envvar="KNOWN_FACES_DIR", type=click.Path(), default=None, metavar="DIR",
      help="Folder of known people: name.jpg, or name/ with several images.")
@_opt("--no-faces", envvar="SUMMARIZER_NO_FACES", is_flag=True, help="Skip face recognition.")
@_opt("--face-tolerance", envvar="FACE_TOLERANCE", type=click.FloatRange(0.0, 1.0), default=D.FACE_TOLERANCE,
      show_default=True, help="Face match distance threshold (lower is stricter).")
@_opt("--face-smoothing", envvar="FACE_SMOOTHING", type=SMOOTHING, default=None, metavar="K/N",
      help="Name a person only once recognized in K of the last N processed frames (e.g. 2/3), so a "
           "passing look-alike is not named. Default off.")
@_opt("--blur-faces/--no-blur-faces", "blur_faces", envvar="SUMMARIZER_BLUR_FACES", default=None,
      help="Blur every detected face in the frames sent to the caption model (the recognized names "
           "still go as text). Default: on when the VLM endpoint is not on this machine.")
@_opt("--face-model", envvar="FACE_MODEL", type=click.Choice(["hog", "cnn"]), default=D.FACE_MODEL,
      show_default=True, help="Face detector: hog (CPU) or cnn (GPU).")
@_opt("--vlm-backend", envvar="VLM_BACKEND", type=click.Choice(["auto", "local", "api"]), default=D.VLM_BACKEND,
      show_default=True,
      help="local: run the caption model in this process (transformers); api: an OpenAI-compatible "
           "server. auto: api when --vlm-base-url is given, else local.")
@_opt("--vlm-base-url", envvar="VLM_BASE_URL", default=None,
      help="OpenAI-compatible endpoint serving the caption model (vLLM, Ollama, LM Studio, llama.cpp). "
           f"Default with --vlm-backend api: {D.VLM_URL}.")
@_opt("--vlm-model", envvar="VLM_MODEL", default=None,
      help=f"Caption model: for local a hub id or a folder (default {D.LOCAL_VLM_MODEL}); for api the "
           f"name the server lists (default {D.API_VLM_MODEL}).")
@_opt("--vlm-device", envvar="VLM_DEVICE", default=D.DEVICE, show_default=True,
      help="Local caption model: auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@_opt("--vlm-api-key", envvar="VLM_API_KEY", default=None, help="API key for the VLM endpoint, if it needs one.")
@_opt("--vlm-timeout", envvar="VLM_TIMEOUT", type=click.FloatRange(min=0.1), default=D.VLM_TIMEOUT_S, show_default=True,
      help="Seconds before one caption request is given up.")
@_opt("--vlm-max-tokens", envvar="VLM_MAX_TOKENS", type=click.IntRange(min=1), default=D.VLM_MAX_TOKENS, show_default=True,
      help="Longest caption in tokens.")
@_opt("--llm-model", envvar="LLM_MODEL", default=D.LLM_MODEL, show_default=True,
      help="Summary model: a hub id or a local folder (transformers), or the served name with --llm-base-url.")
@_opt("--llm-base-url", envvar="LLM_BASE_URL", default=None,
      help="Use an OpenAI-compatible server for summaries instead of loading the model here.")
@_opt("--llm-api-key", envvar="LLM_API_KEY", default=None, help="API key for --llm-base-url.")
@_opt("--llm-device", envvar="LLM_DEVICE", default=D.DEVICE, show_default=True,
      help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@_opt("--interval", envvar="SUMMARIZER_INTERVAL", type=click.FloatRange(min=0.0), default=D.INTERVAL_S, show_default=True,
      help="Seconds of video between processed frames; 0 = every frame.")
@_opt("--min-change", envvar="SUMMARIZER_MIN_CHANGE", type=click.FloatRange(0.0, 1.0), default=D.MIN_CHANGE,
      show_default=True, help="Skip frames that differ less than this (0..1) from the last processed one; 0 turns "
      "gating off.")
@_opt("--max-gap", envvar="SUMMARIZER_MAX_GAP", type=click.FloatRange(min=0.0), default=None,
      help="Process a frame anyway after this many seconds without one. Default max(1 s, 2 x interval).")
@_opt("--summary-interval", envvar="SUMMARIZER_SUMMARY_INTERVAL", type=click.FloatRange(min=0.0),
      default=D.SUMMARY_INTERVAL_S, show_default=True, help="Seconds of video between rolling summaries (and one at the end).")
@_opt("--max-inflight", envvar="SUMMARIZER_MAX_INFLIGHT", type=click.IntRange(1, 64), default=None,
      help="Caption requests in flight at once (default 2 for a server, 1 for the in-process model, "
           "which captions one frame at a time). Live sources drop frames when all are busy.")
@_opt("--jobs", envvar="SUMMARIZER_JOBS", type=click.IntRange(1, 256), default=None,
      help="Batch: inputs run at once, sharing the --max-inflight caption calls (default: enough to "
           "keep them busy, at most 2 per CPU). With --ray: per worker.")
@_opt("--ray", envvar="RAY_ADDRESS", default=None, is_flag=False, flag_value="auto", metavar="[ADDRESS]",
      help="Batch: send the inputs to the Ray cluster at ADDRESS (alone: the one this machine is in; "
           "'local': a private one for this run). --output-dir must be a folder every node sees.")
@_opt("--index", envvar="SUMMARIZER_INDEX", default=None, metavar="DIR",
      help="Put every caption and summary into this LanceDB folder (or db://NAME: LanceDB Cloud, key from "
           "LANCEDB_API_KEY), embedded for --search and --ask; a re-run over a file replaces its moments. "
           "Off unless given. For --search/--ask: the index to read (default: LANCEDB_URI).")
@_opt("--embed-model", envvar="SUMMARIZER_EMBED_MODEL", default=None,
      help="sentence-transformers model (hub id or folder) that embeds what --index writes and what --search "
           f"looks for. Default: {D.EMBED_MODEL} for a new index; an index keeps the model it was made "
           "with, and --search/--ask use it (another one is refused).")
@_opt("--search", envvar="SUMMARIZER_SEARCH", default=None, metavar="TEXT",
      help="Print the moments of --index that best match TEXT (meaning and exact words), best first: "
           "source, [mm:ss] or wall time, caption, faces, score, trace id. Reads no source.")
@_opt("--ask", envvar="SUMMARIZER_ASK", default=None, metavar="QUESTION",
      help="Answer QUESTION with the summary model from the best moments of --index, citing them as "
           "[source mm:ss] (invalid citations removed); traced as video_question.")
@_opt("--faces", envvar="SUMMARIZER_FACES", multiple=True, metavar="NAME",
      help="--search/--ask: only moments showing NAME (repeat: all of them).")
@_opt("--source-filter", envvar="SUMMARIZER_SOURCE_FILTER", default=None, metavar="GLOB",
      help="--search/--ask: only moments of sources matching GLOB (* and ?), by label or path.")
@_opt("--since", envvar="SUMMARIZER_SINCE", default=None, metavar="T",
      help="--search/--ask: only moments from T on: a video time (90, 01:30) for files, or a date and "
           "time (2026-12-01T09:00, UTC unless a zone is given) for live sources.")
@_opt("--until", envvar="SUMMARIZER_UNTIL", default=None, metavar="T", help="--search/--ask: only moments up to T.")
@_opt("--limit", envvar="SUMMARIZER_LIMIT", type=click.IntRange(1, 1000), default=D.QUERY_LIMIT, show_default=True,
      help="--search/--ask: moments returned (given to the model for --ask).")
@_opt("--events", envvar="SUMMARIZER_EVENTS", default=None, metavar="PATH|-",
      help="Write caption/summary/error/stats events as JSON lines ('-' = stdout).")
@_opt("--summary-out", envvar="SUMMARIZER_SUMMARY_OUT", default=None, metavar="FILE",
      help="Also write the final summary to this file (atomically).")
@_opt("--output-dir", envvar="SUMMARIZER_OUTPUT_DIR", default=None, metavar="DIR",
      help="Batch mode: write <stem>.summary.json and .md per input; skip inputs already done.")
@_opt("--force", envvar="SUMMARIZER_FORCE", is_flag=True, help="Batch mode: redo inputs already done.")
@_opt("--trace-log", envvar="SUMMARIZER_TRACE_LOG", default=None, metavar="PATH",
      help="Append every trace, observation and score as JSON lines (read it with trace_report.py). "
           f"Default without Langfuse keys: {D.TRACE_LOG} (in --output-dir in batch mode).")
@_opt("--prompt-label", envvar="LANGFUSE_PROMPT_LABEL", default=D.PROMPT_LABEL, show_default=True,
      help="Fetch the caption and summary prompts (video-caption, video-summary) from Langfuse prompt "
           "management by this label; the built-in prompts are used when Langfuse is off or lacks them.")
@_opt("--prompt-cache-ttl", envvar="LANGFUSE_PROMPT_CACHE_TTL", type=click.FloatRange(min=1.0), default=D.PROMPT_CACHE_TTL_S,
      show_default=True, help="Seconds before a fetched prompt is refreshed (in the background).")
@_opt("--shutdown-timeout", envvar="SUMMARIZER_SHUTDOWN_TIMEOUT", type=click.FloatRange(min=0.0),
      default=D.SHUTDOWN_TIMEOUT_S, show_default=True,
      help="On SIGINT/SIGTERM: seconds to finish in-flight calls and the final summary.")
@_opt("--flush-timeout", envvar="LANGFUSE_FLUSH_DEADLINE", type=click.FloatRange(min=0.0), default=D.FLUSH_TIMEOUT_S,
      show_default=True, help="Seconds allowed for sending the last traces to Langfuse at exit.")
@_opt("--langfuse-outbox", envvar="LANGFUSE_OUTBOX", default=None, metavar="DIR|off",
      help="Keep what Langfuse does not acknowledge (spans and scores, with their ids) in DIR and send it "
           "again when Langfuse answers: during the run, at the next run with keys, or with --send-outbox "
           "(Langfuse keeps each id once). Default: $XDG_CACHE_HOME (~/.cache)/real-time-summarizer/outbox; "
           "off: keep nothing.")
@_opt("--langfuse-outbox-max-mb", envvar="LANGFUSE_OUTBOX_MAX_MB", type=click.FloatRange(min=1.0), default=D.OUTBOX_MAX_MB,
      show_default=True, help="Largest size of the outbox; past it the oldest batches are dropped (counted).")
@_opt("--send-outbox", envvar="SUMMARIZER_SEND_OUTBOX", is_flag=True,
      help="Send what the outbox holds for the Langfuse keys of the environment and exit: 0 all sent, 1 some "
           "left (for cron). Needs no --source and loads no model.")
@_opt("--trace-log-max-mb", envvar="SUMMARIZER_TRACE_LOG_MAX_MB", type=click.FloatRange(min=0.0), default=None,
      help="Rotate --trace-log to PATH.1 ... PATH.5 when it reaches this size, at a line boundary "
           "(trace_report.py PATH reads them all); 0: never. Default: 100 for live sources, unbounded for files.")
@_opt("--events-max-mb", envvar="SUMMARIZER_EVENTS_MAX_MB", type=click.FloatRange(min=0.0), default=None,
      help="Rotate --events PATH the same way; 0: never. Default: 100 for live sources, unbounded for files.")
@_opt("--display", envvar="SUMMARIZER_DISPLAY", is_flag=True,
      help="Show a window with the frame, caption, summary and faces (q or Esc quits).")
@_opt("--metrics-port", envvar="SUMMARIZER_METRICS_PORT", type=click.IntRange(1, 65535), default=None,
      metavar="PORT",
      help="Serve Prometheus metrics at /metrics, a health check at /healthz (200 while frames arrive "
           "and captions succeed, else 503 with why) and a page to watch the run at / on this port. "
           "Off by default.")
@_opt("--metrics-host", envvar="SUMMARIZER_METRICS_HOST", default=D.METRICS_HOST, show_default=True,
      help="Address the --metrics-port server listens on; 0.0.0.0 for every interface, which needs "
           "--metrics-token (the page shows the frames and who is in them).")
@_opt("--metrics-token", envvar="SUMMARIZER_METRICS_TOKEN", default=None, metavar="TOKEN",
      help="Token for every --metrics-port path but /healthz: Authorization: Bearer TOKEN, or open the page "
           "once at /?token=TOKEN (it sets a cookie). /healthz without it says only ok or unhealthy. Prefer "
           "the environment variable (a command line is visible to every user). Default: one made at start "
           "and printed once as the page's URL; required for a --metrics-host beyond loopback.")
@_opt("--metrics-allow-host", envvar="SUMMARIZER_METRICS_ALLOW_HOST", multiple=True, metavar="NAME",
      help="A Host name the --metrics-port server answers besides localhost, 127.0.0.1, [::1] and "
           "--metrics-host (a reverse proxy's or Prometheus' name for this machine); others get 421. "
           "Repeatable; the variable takes names separated by spaces. Default: none.")
@_opt("--trace-frames", envvar="SUMMARIZER_TRACE_FRAMES", is_flag=True,
      help="Attach the JPEG the caption model got (after --blur-faces) to each vlm_caption generation "
           "as Langfuse media. Off: no pixel goes into a trace. Without keys the trace log keeps its size and hash.")
@_opt("--trace-frame-max-side", envvar="SUMMARIZER_TRACE_FRAME_MAX_SIDE", type=click.IntRange(64, 4096),
      default=D.TRACE_FRAME_MAX_SIDE, show_default=True, help="Longest side in pixels of a traced frame or dataset image.")
@_opt("--trace-frame-quality", envvar="SUMMARIZER_TRACE_FRAME_QUALITY", type=click.IntRange(10, 100),
      default=D.TRACE_FRAME_QUALITY, show_default=True, help="JPEG quality of a traced frame or dataset image (768 px at 75: "
      "15-55 KB a frame on the test clips).")
@_opt("--dataset", envvar="SUMMARIZER_DATASET", default=None, metavar="NAME",
      help="With --source: add every captioned frame to this Langfuse dataset (without keys: the folder "
           "NAME/); a second run over the same file adds nothing twice. With --experiment: the items to caption.")
@_opt("--dataset-push", envvar="SUMMARIZER_DATASET_PUSH", default=None, metavar="NAME",
      help="Upload the local dataset folder NAME/ (made without keys) to the Langfuse dataset NAME, and exit.")
@_opt("--experiment", envvar="SUMMARIZER_EXPERIMENT", default=None, metavar="RUN",
      help="Caption every item of --dataset with --vlm-model / --prompt-label as the run RUN (a Langfuse "
           "dataset run), score it, and print the runs of that dataset side by side. Needs no --source.")
@_opt("--judge-model", envvar="JUDGE_MODEL", default=None,
      help="--experiment: an OpenAI-compatible chat model that sees each frame and caption and scores "
           "its faithfulness 0-1 (judge_faithfulness, on the generation).")
@_opt("--judge-base-url", envvar="JUDGE_BASE_URL", default=None,
      help="Endpoint of --judge-model (default: --vlm-base-url).")
@_opt("--judge-api-key", envvar="JUDGE_API_KEY", default=None, help="API key for --judge-base-url, if it needs one.")
@_opt("--json", "as_json", envvar="SUMMARIZER_JSON", is_flag=True, help="Print the final summary as JSON.")
@_opt("--debug", envvar="SUMMARIZER_DEBUG", is_flag=True, help="Verbose logs and tracebacks.")
def main(**params: Any) -> None:
    """Summarize a camera, a video file or a pipe in real time.

    Every --interval seconds of video a frame is selected (frames that barely change are
    skipped), known faces are recognized, the frame is captioned by a vision-language model,
    and every --summary-interval seconds the captions are rolled into a summary. Each
    processed frame is one Langfuse trace with time-to-first-token and quality scores.
    """
    debug = params["debug"]
    _setup_logging(debug)
    try:
        code = _dispatch(params)
    except SummarizerError as e:
        raise _fail(e, debug) from None
    except KeyboardInterrupt as e:  # Ctrl-C while starting up (models loading): nothing to save yet
        sys.stderr.write("\nInterrupted while starting up.\n")
        code = EXIT_SIGNAL[e.signum if isinstance(e, StartupInterrupted) else signal.SIGINT]
    _exit(_name_unwritten(code))


def _name_unwritten(code: int) -> int:
    """Name the outputs that could not be written, last on stderr; such a run exits 1, not 0."""
    from video_summarizer.files import NOT_WRITTEN

    line = NOT_WRITTEN.summary()
    if line is None:
        return code
    sys.stderr.write(line + "\n")
    return code or EXIT_SOME_FAILED


def _exit(code: int) -> None:
    """Exit; skip interpreter teardown when a worker abandoned at the shutdown deadline still runs.

    Everything that matters is written and closed by now. A daemon thread still inside a model
    call (torch, a hanging HTTP read) would otherwise abort the process during finalization
    ("terminate called without an active exception") and turn exit 130/143 into a crash.
    """
    abandoned = [t for t in threading.enumerate() if t.daemon and t.name.startswith(("frame-", "final-summary"))]
    if abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


# Our loggers share one root and log progress at INFO; libraries (HTTP clients, SDKs) only
# warnings unless --debug.
LOG_ROOT = "video_summarizer"


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(message)s")
    if not debug:
        logging.getLogger(LOG_ROOT).setLevel(logging.INFO)
    from video_summarizer.redact import install_log_redaction

    install_log_redaction()  # URLs in every record masked: ours and the HTTP clients' debug lines
    if not sys.stderr.isatty():  # no progress bars in logs and cron mail
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _load_dotenv(path: Path) -> None:
    """Take LANGFUSE_* settings from a git-ignored .env (parsed, never executed); the environment wins."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if sep and name.startswith("LANGFUSE_") and not os.environ.get(name):
            os.environ[name] = value.strip().strip("'\"")


def _dispatch(params: dict[str, Any]) -> int:
    """The mode the flags name, each handed its own options (the commands of the next step)."""
    from video_summarizer.app import commands
    from video_summarizer.options import (
        CaptionOptions,
        ExperimentOptions,
        IndexOptions,
        OutboxOptions,
        PromptOptions,
        QueryOptions,
        RunConfig,
        ScaleOptions,
        SourceOptions,
        SummaryOptions,
        TracingOptions,
    )
    from video_summarizer.paths import cache_home
    from video_summarizer.tracing.settings import LangfuseSettings

    _load_dotenv(Path(__file__).resolve().parent / ".env")
    langfuse, home, p = LangfuseSettings.from_env(os.environ), cache_home(os.environ), dict(params)
    modes = {k: p.pop(k) for k in ("send_outbox", "search", "ask", "experiment", "dataset_push")}
    exp = ExperimentOptions.from_params({**{k: p.pop(k) for k in ("judge_model", "judge_base_url",
                                                                  "judge_api_key")},
                                         "name": modes["experiment"] or "", "dataset": p.get("dataset")})
    query = {k: p.pop(k) for k in ("faces", "source_filter", "since", "until", "limit")}
    if modes["send_outbox"]:  # cron: no source, no model
        return commands.outbox_send_command(OutboxOptions.from_params(p), langfuse, home)
    text = modes["ask"] if modes["ask"] is not None else modes["search"]
    if text is not None:  # read the index: no source, no caption model
        q, index = QueryOptions.from_params({**query, "text": text}), IndexOptions.from_params(p)
        if modes["ask"] is None:
            return commands.search_command(index, q, as_json=p["as_json"], out=sys.stdout)
        return commands.ask_command(index, q, SummaryOptions.from_params(p), TracingOptions.from_params(p),
                                    _backends(), langfuse, as_json=p["as_json"], out=sys.stdout)
    if modes["dataset_push"] is not None:
        return commands.push_command(modes["dataset_push"], TracingOptions.from_params(p), _backends(), langfuse,
                                     out=sys.stdout)
    if modes["experiment"] is not None:  # a dataset: no source
        return commands.experiment_command(exp, CaptionOptions.from_params(p), PromptOptions.from_params(p),
                                           ScaleOptions.from_params(p), TracingOptions.from_params(p), _backends(),
                                           langfuse, max_pixels=SourceOptions.from_params(p).max_pixels,
                                           out=sys.stdout)
    return commands.run_command(RunConfig.from_params(p), _backends(), langfuse, cache_home=home,
                                worker_stages=WORKER_STAGES)


def _backends() -> Any:
    """The named classes, imported when a command needs them (langfuse and openai are slow to import)."""
    from langfuse_datasets import LangfuseDataset
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.app import Backends
    from vlm_client_module import VLMClient

    return Backends(tracker=LangfuseTracker, caption=VLMClient, summary=LLMSummarizer, dataset=LangfuseDataset)


def _worker_stages(cfg: Any, stack: Any, events: Any, *, backends: Any) -> Any:
    """What a Ray worker calls to build its stages (app.assembly's; a test puts a spy in WORKER_STAGES)."""
    from video_summarizer.app.assembly import build_worker_stages

    return build_worker_stages(cfg, stack, events, backends=backends)


WORKER_STAGES = _worker_stages


if __name__ == "__main__":
    main()
