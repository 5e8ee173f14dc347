#!/usr/bin/env python3
"""Real-time video summarizer: captions sampled frames with a VLM, names known faces, rolls
the captions into summaries with an LLM, and traces every processed frame to Langfuse.

The commands: `run` (the default: ``--source cam0`` alone runs it), `search`, `ask`,
`experiment`, `dataset push` and `outbox send`, each with only its own options. This file is
the edge: it reads the environment (click's envvar=, Langfuse's settings, the cache folder) and
hands the package the named classes (``Backends``); the commands' bodies are video_summarizer.app.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from video_summarizer import __version__
from video_summarizer.app.assembly import build_worker_stages
from video_summarizer.cli.errors import guarded
from video_summarizer.cli.group import LEGACY, DefaultGroup
from video_summarizer.cli import params as P

EXAMPLES = """\b
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
  # the moments of an index (made by a run with --index moments/), and a question about them
  python real_time_summarizer.py search "a man at a podium" --index moments/
  python real_time_summarizer.py ask "when did Biden appear?" --index moments/
"""
RUN_EPILOG = EXAMPLES + """\b
Exit codes: 0 done, 1 some inputs failed (named on stderr), 2 bad usage or input,
130 interrupted (SIGINT), 143 terminated (SIGTERM).
Langfuse: set LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL (or `source
setup_langfuse.sh`); without keys traces go to --trace-log only (default traces.jsonl).
"""
GROUP_EPILOG = EXAMPLES + """\b
A first word that names no command runs `run`. COMMAND --help lists that command's options.
"""
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group("real_time_summarizer.py", cls=DefaultGroup, default="run", legacy=LEGACY, epilog=GROUP_EPILOG,
             context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="real-time-summarizer")
def cli() -> None:
    """Summarize a camera, a video file or a pipe in real time, and search what was seen."""


@cli.command("run", epilog=RUN_EPILOG, short_help="Summarize cameras, files, pipes, streams, folders.")
@click.version_option(__version__, "--version", prog_name="real-time-summarizer")
@P.source_options
@P.face_options
@P.caption_options
@P.clip_options
@P.summary_model_options
@P.selection_options
@P.summary_interval_option
@P.scale_options
@P.index_write_options
@P.output_options
@P.trace_log_option(default_log=True)
@P.prompt_options
@P.shutdown_option
@P.flush_option
@P.outbox_options
@P.rotation_options
@P.display_option
@P.watch_options
@P.trace_frame_options
@P.dataset_option
@P.alert_options
@P.json_option
@P.debug_option
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Summarize a camera, a video file or a pipe in real time (the default command).

    Every --interval seconds of video a frame is selected (frames that barely change are
    skipped), known faces are recognized, the frame is captioned by a vision-language model,
    and every --summary-interval seconds the captions are rolled into a summary. Each
    processed frame is one Langfuse trace with time-to-first-token and quality scores.
    """
    from video_summarizer.app.commands import run_command
    from video_summarizer.options import RunConfig

    cfg = RunConfig.from_params(params)
    cfg = cfg.replace(index=vars(cfg.index.with_env(os.environ)))  # LanceDB Cloud's settings, read here
    langfuse, home = _edge(ctx, cfg.debug)
    ctx.exit(guarded(cfg.debug, lambda: run_command(cfg, _backends(), langfuse, cache_home=home,
                                                    worker_stages=WORKER_STAGES)))


@cli.command("search", short_help="The moments of an index that best match TEXT.")
@click.argument("text", envvar="SUMMARIZER_SEARCH")
@P.index_read_options
@P.query_options
@P.json_option
@P.debug_option
@click.pass_context
def search(ctx: click.Context, **params: Any) -> None:
    """Print the moments of the index that best match TEXT (meaning and exact words), best first:
    source, [mm:ss] or wall time, caption, faces, score, trace id. Reads no source."""
    from video_summarizer.app.commands import search_command
    from video_summarizer.options import IndexOptions, QueryOptions

    _edge(ctx, params["debug"])
    ctx.exit(guarded(params["debug"], lambda: search_command(
        IndexOptions.from_params(params).with_env(os.environ), QueryOptions.from_params(params),
        as_json=params["as_json"],
        out=sys.stdout)))


@cli.command("ask", short_help="A question answered from an index's moments, citing them.")
@click.argument("text", metavar="QUESTION", envvar="SUMMARIZER_ASK")
@P.index_read_options
@P.query_options
@P.summary_model_options
@P.trace_log_option(default_log=True)
@P.flush_option
@P.json_option
@P.debug_option
@click.pass_context
def ask(ctx: click.Context, **params: Any) -> None:
    """Answer QUESTION with the summary model from the best moments of the index, citing them as
    [source mm:ss] (invalid citations removed); traced as video_question."""
    from video_summarizer.app.commands import ask_command
    from video_summarizer.options import IndexOptions, QueryOptions, SummaryOptions, TracingOptions

    langfuse, _ = _edge(ctx, params["debug"])
    ctx.exit(guarded(params["debug"], lambda: ask_command(
        IndexOptions.from_params(params).with_env(os.environ), QueryOptions.from_params(params), SummaryOptions.from_params(params),
        TracingOptions.from_params(params), _backends(), langfuse, as_json=params["as_json"], out=sys.stdout)))


@cli.command("experiment", short_help="Caption a dataset as the run RUN; compare the runs.")
@click.argument("name", metavar="RUN", envvar="SUMMARIZER_EXPERIMENT")
@P.experiment_dataset_option
@P.caption_options
@P.prompt_options
@P.judge_options
@P.max_inflight_option
@P.max_pixels_option
@P.trace_log_option(default_log=False)
@P.flush_option
@P.debug_option
@click.pass_context
def experiment(ctx: click.Context, **params: Any) -> None:
    """Caption every item of --dataset with --vlm-model / --prompt-label as the run RUN (a Langfuse
    dataset run), score it, and print the runs of that dataset side by side."""
    from video_summarizer.app.commands import experiment_command
    from video_summarizer.options import (
        CaptionOptions,
        ExperimentOptions,
        PromptOptions,
        ScaleOptions,
        TracingOptions,
    )

    langfuse, _ = _edge(ctx, params["debug"])
    ctx.exit(guarded(params["debug"], lambda: experiment_command(
        ExperimentOptions.from_params(params), CaptionOptions.from_params(params), PromptOptions.from_params(params),
        ScaleOptions.from_params(params), TracingOptions.from_params(params), _backends(), langfuse,
        max_pixels=params["max_pixels"], out=sys.stdout)))


@cli.group("dataset", context_settings=CONTEXT, short_help="dataset push NAME: a local dataset uploaded to Langfuse.")
def dataset() -> None:
    """Datasets of captioned frames (made by run --dataset)."""


@dataset.command("push")
@click.argument("name", envvar="SUMMARIZER_DATASET_PUSH")
@P.trace_log_option(default_log=False)
@P.flush_option
@P.debug_option
@click.pass_context
def dataset_push(ctx: click.Context, **params: Any) -> None:
    """Upload the local dataset folder NAME/ (made without keys) to the Langfuse dataset NAME."""
    from video_summarizer.app.commands import push_command
    from video_summarizer.options import TracingOptions

    langfuse, _ = _edge(ctx, params["debug"])
    ctx.exit(guarded(params["debug"], lambda: push_command(
        params["name"], TracingOptions.from_params(params), _backends(), langfuse, out=sys.stdout)))


@cli.group("outbox", context_settings=CONTEXT, short_help="outbox send: what Langfuse did not take, sent (cron).")
def outbox() -> None:
    """What Langfuse did not acknowledge, kept on disk (see --langfuse-outbox)."""


@outbox.command("send")
@P.outbox_options
@P.debug_option
@click.pass_context
def outbox_send(ctx: click.Context, **params: Any) -> None:
    """Send what the outbox holds for the Langfuse keys of the environment: exit 0 all sent, 1 some
    left (for cron). Needs no source and loads no model."""
    from video_summarizer.app.commands import outbox_send_command
    from video_summarizer.options import OutboxOptions

    langfuse, home = _edge(ctx, params["debug"])
    ctx.exit(guarded(params["debug"], lambda: outbox_send_command(OutboxOptions.from_params(params), langfuse,
                                                                  home)))


def main() -> None:
    """The console entry point: the commands, then an exit that skips teardown past abandoned workers."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit as e:
        _exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))


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


# -- the edge: logging, the environment, the named classes ---------------------------------------

# Our loggers share one root and log progress at INFO; libraries (HTTP clients, SDKs) only
# warnings unless --debug.
LOG_ROOT = "video_summarizer"


def _edge(ctx: click.Context, debug: bool) -> tuple[Any, Path]:
    """Logging for this invocation, .env read; Langfuse's settings and the cache folder, from the environment."""
    from video_summarizer.files import NOT_WRITTEN
    from video_summarizer.paths import cache_home
    from video_summarizer.tracing.settings import LangfuseSettings

    _setup_logging(ctx, debug)
    NOT_WRITTEN.clear()  # one invocation's failures (several run in one process under tests)
    _load_dotenv(Path(__file__).resolve().parent / ".env")
    return LangfuseSettings.from_env(os.environ), cache_home(os.environ)


def _setup_logging(ctx: click.Context, debug: bool) -> None:
    """A handler on this invocation's stderr, removed (and the levels put back) when the command ends."""
    root, ours = logging.getLogger(), logging.getLogger(LOG_ROOT)
    saved = root.level, ours.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if debug
                                           else "%(message)s"))
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    ours.setLevel(logging.NOTSET if debug else logging.INFO)
    root.addHandler(handler)
    from video_summarizer.redact import install_log_redaction

    install_log_redaction()  # URLs in every record masked: ours and the HTTP clients' debug lines
    if not sys.stderr.isatty():  # no progress bars in logs and cron mail
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])

    ctx.call_on_close(restore)


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


def _backends() -> Any:
    """The named classes, imported when a command needs them (langfuse and openai are slow to import)."""
    from langfuse_datasets import LangfuseDataset
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from video_summarizer.app import Backends
    from vlm_client_module import VLMClient

    return Backends(tracker=LangfuseTracker, caption=VLMClient, summary=LLMSummarizer, dataset=LangfuseDataset)


# What a Ray worker calls to build its stages, from its node's own environment: a module-level function
# of the package, so it is pickled by reference even when this file runs as __main__ (a test puts a spy here).
WORKER_STAGES = build_worker_stages


if __name__ == "__main__":
    main()
