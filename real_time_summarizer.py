#!/usr/bin/env python3
"""Real-time video summarizer: captions sampled frames with a VLM, names known faces, rolls
the captions into summaries with an LLM, and traces every processed frame to Langfuse."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from video_summarizer import __version__
from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.options import (
    DEFAULT_API_VLM,
    DEFAULT_EMBED_MODEL,
    DEFAULT_LLM,
    DEFAULT_LOCAL_VLM,
    DEFAULT_MAX_PIXELS,
    DEFAULT_STDIN_MAX_MB,
    DEFAULT_TRACE_LOG,
    DEFAULT_VLM_URL,
    RunOptions,
)

log = logging.getLogger("video_summarizer.cli")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

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


class StartupInterrupted(KeyboardInterrupt):
    """A signal before any source ran (models loading): nothing to save, exit at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignal:
    """First SIGINT/SIGTERM: stop reading and shut down in order. Second: exit at once.

    Until the first source runs (the models may take minutes to load) a signal interrupts
    the start-up instead, as Ctrl-C would without a handler.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._sources: list[Any] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def watch(self, source: Any) -> None:
        """Stop this source too when a signal comes."""
        with self._lock:
            self._sources.append(source)
            if self.event.is_set():
                source.stop()

    def _handle(self, signum: int, _frame: Any) -> None:
        with self._lock:
            started = bool(self._sources)
        if not started and threading.current_thread() is threading.main_thread():
            raise StartupInterrupted(signum)
        if self.event.is_set():
            sys.stderr.write("\nSecond signal: exiting now without the final summary.\n")
            sys.stderr.flush()
            os._exit(EXIT_SIGNAL.get(signum, 1))
        self.signum = signum
        self.event.set()
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping; finishing in-flight frames "
                         "and writing the summary (send again to exit at once).\n")
        sys.stderr.flush()
        with self._lock:
            for src in self._sources:
                src.stop()


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
@_opt("--reconnect-attempts", envvar="SUMMARIZER_RECONNECT_ATTEMPTS", type=click.IntRange(min=-1), default=5,
      show_default=True,
      help="Times in a row a camera or stream that stops delivering is reopened (0.5 s apart, "
           "doubling to 10 s) before its run ends; -1: forever, for a camera left running.")
@_opt("--max-pixels", envvar="SUMMARIZER_MAX_PIXELS", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
      show_default=True,
      help="Largest frame in pixels (width x height; 8K is 7680x4320) of a source, a known-faces or a "
           "dataset image, read from the image header or the container before anything is decoded.")
@_opt("--stdin-max-mb", envvar="SUMMARIZER_STDIN_MAX_MB", type=click.FloatRange(min=1.0),
      default=DEFAULT_STDIN_MAX_MB, show_default=True,
      help="Most of stdin kept on disk: an MP4 or an image piped in is copied to a temporary file first "
           "(MPEG-TS and MKV are read as they come, unbounded).")
@_opt("--known-faces", envvar="KNOWN_FACES_DIR", type=click.Path(), default=None, metavar="DIR",
      help="Folder of known people: name.jpg, or name/ with several images.")
@_opt("--no-faces", envvar="SUMMARIZER_NO_FACES", is_flag=True, help="Skip face recognition.")
@_opt("--face-tolerance", envvar="FACE_TOLERANCE", type=click.FloatRange(0.0, 1.0), default=None,
      help="Face match distance threshold (lower is stricter). Default 0.5.")
@_opt("--face-smoothing", envvar="FACE_SMOOTHING", type=SMOOTHING, default=None, metavar="K/N",
      help="Name a person only once recognized in K of the last N processed frames (e.g. 2/3), so a "
           "passing look-alike is not named. Default off.")
@_opt("--blur-faces/--no-blur-faces", "blur_faces", envvar="SUMMARIZER_BLUR_FACES", default=None,
      help="Blur every detected face in the frames sent to the caption model (the recognized names "
           "still go as text). Default: on when the VLM endpoint is not on this machine.")
@_opt("--face-model", envvar="FACE_MODEL", type=click.Choice(["hog", "cnn"]), default="hog",
      show_default=True, help="Face detector: hog (CPU) or cnn (GPU).")
@_opt("--vlm-backend", envvar="VLM_BACKEND", type=click.Choice(["auto", "local", "api"]), default="auto",
      show_default=True,
      help="local: run the caption model in this process (transformers); api: an OpenAI-compatible "
           "server. auto: api when --vlm-base-url is given, else local.")
@_opt("--vlm-base-url", envvar="VLM_BASE_URL", default=None,
      help="OpenAI-compatible endpoint serving the caption model (vLLM, Ollama, LM Studio, llama.cpp). "
           f"Default with --vlm-backend api: {DEFAULT_VLM_URL}.")
@_opt("--vlm-model", envvar="VLM_MODEL", default=None,
      help=f"Caption model: for local a hub id or a folder (default {DEFAULT_LOCAL_VLM}); for api the "
           f"name the server lists (default {DEFAULT_API_VLM}).")
@_opt("--vlm-device", envvar="VLM_DEVICE", default="auto", show_default=True,
      help="Local caption model: auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@_opt("--vlm-api-key", envvar="VLM_API_KEY", default=None, help="API key for the VLM endpoint, if it needs one.")
@_opt("--vlm-timeout", envvar="VLM_TIMEOUT", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
      help="Seconds before one caption request is given up.")
@_opt("--vlm-max-tokens", envvar="VLM_MAX_TOKENS", type=click.IntRange(min=1), default=256, show_default=True,
      help="Longest caption in tokens.")
@_opt("--llm-model", envvar="LLM_MODEL", default=DEFAULT_LLM, show_default=True,
      help="Summary model: a hub id or a local folder (transformers), or the served name with --llm-base-url.")
@_opt("--llm-base-url", envvar="LLM_BASE_URL", default=None,
      help="Use an OpenAI-compatible server for summaries instead of loading the model here.")
@_opt("--llm-api-key", envvar="LLM_API_KEY", default=None, help="API key for --llm-base-url.")
@_opt("--llm-device", envvar="LLM_DEVICE", default="auto", show_default=True,
      help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@_opt("--interval", envvar="SUMMARIZER_INTERVAL", type=click.FloatRange(min=0.0), default=5.0, show_default=True,
      help="Seconds of video between processed frames; 0 = every frame.")
@_opt("--min-change", envvar="SUMMARIZER_MIN_CHANGE", type=click.FloatRange(0.0, 1.0), default=None,
      help="Skip frames that differ less than this (0..1) from the last processed one; 0 turns gating "
           "off. Default 0.12.")
@_opt("--max-gap", envvar="SUMMARIZER_MAX_GAP", type=click.FloatRange(min=0.0), default=None,
      help="Process a frame anyway after this many seconds without one. Default max(1 s, 2 x interval).")
@_opt("--summary-interval", envvar="SUMMARIZER_SUMMARY_INTERVAL", type=click.FloatRange(min=0.0),
      default=60.0, show_default=True, help="Seconds of video between rolling summaries (and one at the end).")
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
           f"looks for. Default: {DEFAULT_EMBED_MODEL} for a new index; an index keeps the model it was made "
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
@_opt("--limit", envvar="SUMMARIZER_LIMIT", type=click.IntRange(1, 1000), default=10, show_default=True,
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
           f"Default without Langfuse keys: {DEFAULT_TRACE_LOG} (in --output-dir in batch mode).")
@_opt("--prompt-label", envvar="LANGFUSE_PROMPT_LABEL", default="production", show_default=True,
      help="Fetch the caption and summary prompts (video-caption, video-summary) from Langfuse prompt "
           "management by this label; the built-in prompts are used when Langfuse is off or lacks them.")
@_opt("--prompt-cache-ttl", envvar="LANGFUSE_PROMPT_CACHE_TTL", type=click.FloatRange(min=1.0), default=300.0,
      show_default=True, help="Seconds before a fetched prompt is refreshed (in the background).")
@_opt("--shutdown-timeout", envvar="SUMMARIZER_SHUTDOWN_TIMEOUT", type=click.FloatRange(min=0.0),
      default=10.0, show_default=True,
      help="On SIGINT/SIGTERM: seconds to finish in-flight calls and the final summary.")
@_opt("--flush-timeout", envvar="LANGFUSE_FLUSH_DEADLINE", type=click.FloatRange(min=0.0), default=5.0,
      show_default=True, help="Seconds allowed for sending the last traces to Langfuse at exit.")
@_opt("--langfuse-outbox", envvar="LANGFUSE_OUTBOX", default=None, metavar="DIR|off",
      help="Keep what Langfuse does not acknowledge (spans and scores, with their ids) in DIR and send it "
           "again when Langfuse answers: during the run, at the next run with keys, or with --send-outbox "
           "(Langfuse keeps each id once). Default: $XDG_CACHE_HOME (~/.cache)/real-time-summarizer/outbox; "
           "off: keep nothing.")
@_opt("--langfuse-outbox-max-mb", envvar="LANGFUSE_OUTBOX_MAX_MB", type=click.FloatRange(min=1.0), default=500.0,
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
@_opt("--metrics-host", envvar="SUMMARIZER_METRICS_HOST", default="127.0.0.1", show_default=True,
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
      default=768, show_default=True, help="Longest side in pixels of a traced frame or dataset image.")
@_opt("--trace-frame-quality", envvar="SUMMARIZER_TRACE_FRAME_QUALITY", type=click.IntRange(10, 100),
      default=75, show_default=True, help="JPEG quality of a traced frame or dataset image (768 px at 75: "
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
    opts = RunOptions.from_params(params)
    _setup_logging(opts.debug)
    try:
        code = _run(opts)
    except SummarizerError as e:
        raise _fail(e, opts.debug) from None
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


def _has_langfuse_keys() -> bool:
    return bool(os.environ.get("LANGFUSE_PUBLIC_KEY") and os.environ.get("LANGFUSE_SECRET_KEY"))


def _preflight(opts: RunOptions) -> None:
    """Everything that needs no model, before any loads: output paths and the known-faces folder."""
    from video_summarizer.preflight import (
        check_known_faces,
        check_output_dir,
        check_output_file,
    )

    check_output_dir(opts.output_dir)
    check_output_file(opts.events, "--events")
    check_output_file(opts.summary_out, "--summary-out")
    trace_log = opts.resolved_trace_log(_has_langfuse_keys())
    if trace_log and not (opts.output_dir and opts.trace_log is None):  # the default in --output-dir: made there
        check_output_file(trace_log, "--trace-log")
    if not opts.no_faces:
        check_known_faces(opts.known_faces)
    elif opts.known_faces:
        log.warning("--known-faces is not used with --no-faces")
    if opts.metrics_port is not None:
        from video_summarizer.watch_http import check_watch_options

        check_watch_options(opts.metrics_host, opts.metrics_token, opts.metrics_allow_host)
    if _has_langfuse_keys() and opts.resolved_outbox is not None:
        from video_summarizer.tracing.outbox import check_outbox_dir

        check_outbox_dir(opts.resolved_outbox)


def _run(opts: RunOptions) -> int:
    _load_dotenv(Path(__file__).resolve().parent / ".env")
    if opts.send_outbox:  # cron: no source, no model
        from video_summarizer.tracing.outbox import send_outbox_from_options

        return EXIT_OK if send_outbox_from_options(opts) == 0 else EXIT_SOME_FAILED
    if opts.search is not None or opts.ask is not None:  # read the index: no source, no caption model
        return _query(opts)
    if opts.experiment is not None or opts.dataset_push is not None:  # a dataset: no source
        return _dataset_command(opts)
    if not opts.sources:
        raise InputError("give at least one --source (cam0, a video file, '-' for stdin, a folder)",
                         option="--source")
    from video_summarizer.runner import Run, plan_inputs, todo
    from video_summarizer.sources import expand_sources

    inputs = plan_inputs(opts.sources, expand_sources, opts.source_labels)
    batch = opts.output_dir is not None or len(inputs) > 1 or opts.ray is not None
    if opts.ray is not None:
        from video_summarizer.distributed import check_ray_inputs

        check_ray_inputs(opts, inputs)
    if opts.output_dir and any(i.spec == "-" for i in inputs):
        raise InputError("stdin ('-') cannot be used with --output-dir", option="--source")
    _preflight(opts)

    with ExitStack() as stack:
        outdir = None
        if opts.output_dir:
            from video_summarizer.outputs import OutputDir

            outdir = OutputDir(opts.output_dir)
            outdir.acquire()  # a held lock is said before any model loads
            stack.callback(outdir.release)
        inputs, skipped = todo(inputs, outdir, opts.force)
        if not inputs:
            log.info("Nothing to do: all %d input(s) are up to date in %s (--force to redo)",
                     skipped, opts.output_dir)
            return EXIT_OK
        from video_summarizer.outputs import EventWriter

        events = EventWriter(opts.events, opts.log_max_bytes(opts.events_max_mb))
        stack.callback(events.close)
        watch = None
        if opts.metrics_port is not None:  # bound now: a port in use is said before any model loads
            from video_summarizer.watch import start_watch

            watch = start_watch(opts, events, stack)
        stop = StopSignal()
        if opts.ray is not None:
            from video_summarizer.distributed import RayRun

            # Workers import this module and build their stages with the same function.
            run = RayRun(opts, STAGES_FACTORY, events, stop, outdir)
        else:
            build = lambda: _build_stages(opts, stack, events)  # noqa: E731
            run = Run(opts, (lambda: watch.attach(build())) if watch else build, events, stop, outdir,
                      batch=batch)
        first = None if batch else run.open(inputs[0])  # a bad single source: exit 2 before models load
        if first is not None:
            stack.callback(first.close)  # closed here too when the models fail to load
        if opts.index is not None:  # the embedding model loads here, before the caption model
            from video_summarizer.index import open_indexer

            indexer = open_indexer(opts, inputs)
            stack.callback(indexer.close)
            events.add_listener(indexer.listen)
        stop.install()
        result = run.run_all(inputs, first)
        result.skipped = skipped
        if run.stages_built:
            _report(result.docs, run.stages(), opts)
    # after the tracker's exit line: the failures are the last thing a cron mail shows
    if result.failed:
        sys.stderr.write("Failed inputs:\n" + "".join(f"  {s}: {why}\n" for s, why in result.failed))
    if stop.signum is not None:
        return EXIT_SIGNAL.get(stop.signum, 1)
    return EXIT_SOME_FAILED if result.failed else EXIT_OK


def _query(opts: RunOptions) -> int:
    """--search or --ask over the index; --ask gets the summary model and the tracker built here."""
    if opts.ask is None:
        from video_summarizer.index import search_command

        return search_command(opts, sys.stdout)
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.ask import ask_command

    def summarizer() -> Any:
        return LLMSummarizer(opts.llm_model, device=opts.llm_device, base_url=opts.llm_base_url,
                             api_key=opts.llm_api_key)

    def tracker() -> Any:
        return LangfuseTracker(trace_log=opts.resolved_trace_log(_has_langfuse_keys()))

    return ask_command(opts, summarizer, tracker, sys.stdout)


def _dataset_command(opts: RunOptions) -> int:
    """--experiment / --dataset-push: no source; the caption model is built as a run builds it."""
    from langfuse_datasets import LangfuseDataset
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.experiments import command

    with ExitStack() as stack:
        def make_tracker() -> Any:
            tracker = LangfuseTracker(trace_log=opts.trace_log)
            stack.callback(_close_tracker, tracker, opts.flush_timeout)
            return tracker

        remote = LangfuseDataset if _has_langfuse_keys() else None
        return command(opts, make_tracker, remote, lambda: _caption_model(opts)[0], sys.stdout)


def _dataset_writer(opts: RunOptions, tracker: Any) -> Any:
    """--dataset with a source: the frame observer adding each captioned frame to the dataset."""
    import uuid

    from video_summarizer.datasets import DatasetWriter, LocalDataset

    if tracker.enabled:
        from langfuse_datasets import LangfuseDataset

        store, where = LangfuseDataset(tracker, opts.dataset), f"Langfuse dataset {opts.dataset}"
    else:
        store, where = LocalDataset(opts.dataset), f"folder {opts.dataset}/"
    writer = DatasetWriter(store, name=opts.dataset, max_side=opts.trace_frame_max_side,
                           quality=opts.trace_frame_quality, session_id=uuid.uuid4().hex, where=where)
    log.info("Dataset: every captioned frame goes to %s, as the caption model gets it", where)
    return writer


STAGES_FACTORY = "real_time_summarizer:_build_stages"  # what a Ray worker calls to build its stages


def _build_stages(opts: RunOptions, stack: ExitStack, events: Any):
    """The models checked (cheap: reachable, files present), then the tracker, then the models loaded."""
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.pipeline import Stages
    from video_summarizer.prompts import PromptSource
    from video_summarizer.redact import redact_url

    vlm, endpoint = _caption_model(opts)
    summarizer = LLMSummarizer(opts.llm_model, device=opts.llm_device,
                               base_url=opts.llm_base_url, api_key=opts.llm_api_key)
    vlm.check()  # a bad --vlm-model / --vlm-base-url or --llm-model is said before anything loads
    summarizer.check()
    stack.callback(vlm.close)
    stack.callback(summarizer.close)

    trace_log = opts.resolved_trace_log(_has_langfuse_keys())
    from video_summarizer.tracing.outbox import outbox_for
    from video_summarizer.tracing.trace_log import TraceLog

    tracker = LangfuseTracker(trace_log=trace_log and TraceLog(trace_log, opts.log_max_bytes(opts.trace_log_max_mb)),
                              outbox=outbox_for(opts, _has_langfuse_keys()))
    stack.callback(_close_tracker, tracker, opts.flush_timeout)
    if trace_log:
        log.info("Trace log: %s (python trace_report.py %s)", trace_log, trace_log)
    prompts = PromptSource(tracker, label=opts.prompt_label, cache_ttl_s=opts.prompt_cache_ttl).load()
    observers = [_dataset_writer(opts, tracker)] if opts.dataset else []  # Langfuse asked before models load

    vlm.load()  # once, with its own progress line (nothing to load for a server)
    blur, why = _blur_setting(opts.blur_faces, endpoint)
    where = f"at {redact_url(endpoint)}" if endpoint else f"in this process on {vlm.device}"
    log.info("VLM: %s %s; %s", vlm.model, where, why)
    if opts.trace_frames:
        log.info("Frames traced: the JPEG the caption model gets goes on each vlm_caption generation "
                 "(%d px, quality %d; faces %s in them; %s)", opts.trace_frame_max_side,
                 opts.trace_frame_quality, "blurred" if blur else "NOT blurred",
                 "uploaded to Langfuse" if tracker.enabled else "no keys: the trace log keeps size and hash")
    summarizer.load()

    faces = None
    if not opts.no_faces or blur:
        from video_summarizer.faces import FaceRecognizer

        kw: dict[str, Any] = {"model": opts.face_model, "max_pixels": opts.max_pixels}
        if opts.face_tolerance is not None:
            kw["tolerance"] = opts.face_tolerance
        if opts.face_smoothing is not None:
            kw["smoothing"] = opts.face_smoothing
        if opts.no_faces:
            log.info("--no-faces with blurring on: faces are detected (not recognized) to be blurred")
        faces = FaceRecognizer(None if opts.no_faces else opts.known_faces, **kw)
        faces.load()
    return Stages(tracker=tracker, vlm=vlm, summarizer=summarizer, faces=faces, events=events,
                  blur_faces=blur, prompts=prompts, frame_observers=observers,
                  trace_frames=(opts.trace_frame_max_side, opts.trace_frame_quality) if opts.trace_frames else None)


def _caption_model(opts: RunOptions) -> tuple[Any, str | None]:
    """The caption model for --vlm-backend, and its endpoint (None: in this process)."""
    if opts.resolved_vlm_backend == "local":
        from video_summarizer.models.local_vlm import LocalVLM

        if opts.vlm_base_url:
            from video_summarizer.redact import redact_url

            log.warning("--vlm-backend local: --vlm-base-url %s is not used", redact_url(opts.vlm_base_url))
        return LocalVLM(opts.resolved_vlm_model, device=opts.vlm_device, timeout_s=opts.vlm_timeout,
                        max_new_tokens=opts.vlm_max_tokens), None
    from vlm_client_module import VLMClient

    vlm = VLMClient(opts.vlm_base_url or DEFAULT_VLM_URL, opts.vlm_api_key, opts.resolved_vlm_model,
                    timeout_s=opts.vlm_timeout, max_tokens=opts.vlm_max_tokens)
    return vlm, vlm.base_url


def _blur_setting(option: bool | None, endpoint: str | None) -> tuple[bool, str]:
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


def _close_tracker(tracker: Any, deadline_s: float) -> None:
    tracker.close(deadline_s=deadline_s)  # logs what was sent and what may be lost


def _report(docs: list, stages: Any, opts: RunOptions) -> None:
    """The final summaries on stdout (or stderr when events use stdout), stats on stderr."""
    import json

    from video_summarizer.outputs import write_atomic

    out = sys.stderr if stages.events.to_stdout else sys.stdout
    for doc in docs:
        if opts.as_json:
            out.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
        else:
            out.write(doc.to_markdown() if len(docs) > 1 or opts.output_dir else
                      (doc.summary or "(no summary: no frame was captioned)") + "\n")
    out.flush()
    if opts.summary_out and docs:
        text = "\n".join(doc.to_markdown() for doc in docs)
        try:
            write_atomic(opts.summary_out, text)
        except OSError as e:  # checked at start; the folder may have gone since, or the disk filled
            from video_summarizer.files import NOT_WRITTEN

            NOT_WRITTEN.record("--summary-out", opts.summary_out, e, "the summary is on stdout above")
    _print_stats(docs, stages)


def _print_stats(docs: list, stages: Any) -> None:
    lines = ["", "Statistics:"]
    for doc in docs:
        s = doc.stats
        truncated = (f", truncated ({s['frames_read']} of {s.get('frames_expected')} frames decoded)"
                     if s.get("truncated") else "")
        lines.append(f"  {doc.label}: frames read {s['frames_read']}, selected {s['selected']}, "
                     f"captioned {s['captioned']}, failed {s['caption_failures']}, "
                     f"dropped (busy) {s['dropped_busy']}, dropped (replaced) {s['dropped_replaced']}, "
                     f"summaries {s['summaries']}{truncated}")
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
    sys.stderr.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
