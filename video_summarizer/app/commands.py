"""The commands' bodies, each handed its own options, the named classes (``Backends``) and Langfuse's settings.

`run` plans and checks everything that needs no model (inputs, output paths, the batch lock,
the watch port, a bad single source) before any model loads, then runs the inputs and reports.
The others read no source: `search` and `ask` read the index, `experiment` and `dataset push` a
dataset, `outbox send` the outbox.
"""
from __future__ import annotations

import functools
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, TextIO

from video_summarizer.app import Backends
from video_summarizer.app.assembly import build_stages, build_worker_stages, run_settings
from video_summarizer.app.signals import EXIT_OK, EXIT_SOME_FAILED, StopSignal
from video_summarizer.errors import InputError
from video_summarizer.options import (
    CaptionOptions,
    ExperimentOptions,
    IndexOptions,
    OutboxOptions,
    PromptOptions,
    QueryOptions,
    RunConfig,
    ScaleOptions,
    SummaryOptions,
    TracingOptions,
)
from video_summarizer.tracing.settings import LangfuseSettings

log = logging.getLogger("video_summarizer.cli")


# -- run ------------------------------------------------------------------------------------------

def run_command(cfg: RunConfig, backends: Backends, langfuse: LangfuseSettings, *, cache_home: Path,
                worker_stages: Callable[..., Any] = build_worker_stages, out: TextIO | None = None,
                err: TextIO | None = None, install_signals: bool = True) -> int:
    """`run`: the inputs planned and checked before any model loads, run, reported; the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    inputs, batch = plan(cfg)
    preflight(cfg, langfuse, cache_home)
    stop = StopSignal()
    try:
        with ExitStack() as stack:
            outdir = _output_dir(cfg, stack)
            from video_summarizer.runner import todo

            inputs, skipped = todo(inputs, outdir, cfg.outputs.force)
            if not inputs:
                log.info("Nothing to do: all %d input(s) are up to date in %s (--force to redo)",
                         skipped, cfg.outputs.output_dir)
                return EXIT_OK
            env = _RunEnv(backends, langfuse, cache_home, worker_stages, install_signals)
            result = _start(cfg, inputs, batch, outdir, stop, stack, env, out, err)
            result.skipped = skipped
    finally:
        stop.restore()
    # after the tracker's exit line: the failures are the last thing a cron mail shows
    if result.failed:
        err.write("Failed inputs:\n" + "".join(f"  {s}: {why}\n" for s, why in result.failed))
    if stop.exit_code is not None:
        return stop.exit_code
    return EXIT_SOME_FAILED if result.failed else EXIT_OK


def plan(cfg: RunConfig) -> tuple[list, bool]:
    """The run's inputs (named, labelled) and whether it is a batch; usage errors said here."""
    if not cfg.source.sources:
        raise InputError("give at least one --source (cam0, a video file, '-' for stdin, a folder)",
                         option="--source")
    from video_summarizer.runner import plan_inputs
    from video_summarizer.sources import expand_sources

    inputs = plan_inputs(cfg.source.sources, expand_sources, cfg.source.source_labels)
    batch = cfg.outputs.output_dir is not None or len(inputs) > 1 or cfg.scale.ray is not None
    if cfg.scale.ray is not None:
        from video_summarizer.distributed import check_ray_inputs

        check_ray_inputs(cfg, inputs)
    if cfg.outputs.output_dir and any(i.spec == "-" for i in inputs):
        raise InputError("stdin ('-') cannot be used with --output-dir", option="--source")
    return inputs, batch


def preflight(cfg: RunConfig, langfuse: LangfuseSettings, cache_home: Path) -> None:
    """Everything that needs no model, before any loads: output paths, known faces, the watch, the outbox."""
    from video_summarizer.preflight import check_known_faces, check_output_dir, check_output_file

    outputs = cfg.outputs
    check_output_dir(outputs.output_dir)
    check_output_file(outputs.events, "--events")
    check_output_file(outputs.summary_out, "--summary-out")
    trace_log = cfg.tracing.trace_log_path(langfuse.has_keys, outputs.output_dir)
    if trace_log and not (outputs.output_dir and cfg.tracing.trace_log is None):  # the default: made there
        check_output_file(trace_log, "--trace-log")
    if not cfg.faces.no_faces:
        check_known_faces(cfg.faces.known_faces)
    elif cfg.faces.known_faces:
        log.warning("--known-faces is not used with --no-faces")
    if cfg.watch.metrics_port is not None:
        from video_summarizer.watch.guard import check_watch_options

        check_watch_options(cfg.watch.metrics_host, cfg.watch.metrics_token, cfg.watch.metrics_allow_host)
    if cfg.alerts.enabled:  # a bad rule, URL or an unreachable broker: said before any model loads
        from video_summarizer.alerts.setup import check_alerts

        check_alerts(cfg.alerts, ray=cfg.scale.ray is not None)
    outbox = cfg.outbox.folder(cache_home)
    if langfuse.has_keys and outbox is not None:
        from video_summarizer.tracing.outbox import check_outbox_dir

        check_outbox_dir(outbox)


class _RunEnv:
    """What a run is given besides its options: the classes, Langfuse, the cache, how Ray builds stages."""

    def __init__(self, backends: Backends, langfuse: LangfuseSettings, cache_home: Path,
                 worker_stages: Callable[..., Any], install_signals: bool) -> None:
        self.backends, self.langfuse, self.cache_home = backends, langfuse, cache_home
        self.worker_stages, self.install_signals = worker_stages, install_signals


def _output_dir(cfg: RunConfig, stack: ExitStack) -> Any:
    """--output-dir, its lock held for the run (a held lock is said before any model loads)."""
    if not cfg.outputs.output_dir:
        return None
    from video_summarizer.outputs import OutputDir

    outdir = OutputDir(cfg.outputs.output_dir)
    outdir.acquire()
    stack.callback(outdir.release)
    return outdir


def _start(cfg: RunConfig, inputs: list, batch: bool, outdir: Any, stop: StopSignal, stack: ExitStack,
           env: _RunEnv, out: TextIO, err: TextIO) -> Any:
    """Events and the watch server opened, the first source opened, the index loaded; then every input."""
    from video_summarizer.app.report import report
    from video_summarizer.outputs import EventWriter

    events = EventWriter(cfg.outputs.events, cfg.source.log_max_bytes(cfg.outputs.events_max_mb))
    stack.callback(events.close)
    watch = None
    if cfg.watch.metrics_port is not None:  # bound now: a port in use is said before any model loads
        from video_summarizer.watch.server import start_watch

        watch = start_watch(cfg.watch, cfg.selection.interval, events, stack)
    run = _make_run(cfg, batch, outdir, stop, stack, events, watch, env)
    first = None if batch else run.open(inputs[0])  # a bad single source: exit 2 before models load
    if first is not None:
        stack.callback(first.close)  # closed here too when the models fail to load
    if cfg.index.index is not None:  # the embedding model loads here, before the caption model
        from video_summarizer.search.index import open_indexer

        indexer = open_indexer(cfg.index, inputs, cfg.source.live)
        stack.callback(indexer.close)
        events.add_listener(indexer.listen)
    if env.install_signals:
        stop.install()
    result = run.run_all(inputs, first)
    if run.stages_built:
        report(result.docs, run.stages(), cfg.outputs, out=out, err=err)
    return result


def _make_run(cfg: RunConfig, batch: bool, outdir: Any, stop: StopSignal, stack: ExitStack, events: Any,
              watch: Any, env: _RunEnv) -> Any:
    """The run here (stages built on the first input that opens) or on Ray (each worker builds its own)."""
    if cfg.scale.ray is not None:
        from video_summarizer.distributed import RayRun

        # A module-level function and a dataclass of importable classes: pickled by reference.
        return RayRun(cfg, functools.partial(env.worker_stages, backends=env.backends), events, stop, outdir)
    from video_summarizer.runner import Run

    def build() -> Any:
        stages = build_stages(cfg, stack, events, backends=env.backends, langfuse=env.langfuse,
                              cache_home=env.cache_home)
        return watch.attach(stages) if watch is not None else stages

    return Run(run_settings(cfg), build, events, stop, outdir, batch=batch)


# -- the commands that read no source -----------------------------------------------------------

def search_command(index: IndexOptions, query: QueryOptions, *, as_json: bool, out: TextIO) -> int:
    """`search TEXT`: the best moments of the index."""
    from video_summarizer.search.index import search_command as search

    return search(index, query, as_json, out)


def ask_command(index: IndexOptions, query: QueryOptions, summary: SummaryOptions, tracing: TracingOptions,
                backends: Backends, langfuse: LangfuseSettings, *, as_json: bool, out: TextIO) -> int:
    """`ask QUESTION`: answered by the summary model from the best moments, traced as video_question."""
    from video_summarizer.app.assembly import plain_tracker, summary_model
    from video_summarizer.search.ask import ask_command as ask

    return ask(index, query, lambda: summary_model(summary, backends),
               lambda: plain_tracker(backends, langfuse, tracing.trace_log_path(langfuse.has_keys)),
               flush_timeout=tracing.flush_timeout, as_json=as_json, out=out)


def experiment_command(exp: ExperimentOptions, caption: CaptionOptions, prompts: PromptOptions, scale: ScaleOptions,
                       tracing: TracingOptions, backends: Backends, langfuse: LangfuseSettings, *,
                       max_pixels: int, out: TextIO) -> int:
    """`experiment RUN --dataset NAME`: every item captioned as the run RUN, scored, compared."""
    from video_summarizer.app.assembly import caption_model
    from video_summarizer.evals.experiments import experiment_command as experiment

    with ExitStack() as stack:
        return experiment(exp, caption, prompts, max_pixels=max_pixels, concurrency=scale.inflight(caption),
                          make_tracker=_closed_tracker(stack, tracing, backends, langfuse),
                          remote=backends.dataset if langfuse.has_keys else None,
                          caption_model=lambda: caption_model(caption, backends)[0], out=out)


def push_command(name: str, tracing: TracingOptions, backends: Backends, langfuse: LangfuseSettings, *,
                 out: TextIO) -> int:
    """`dataset push NAME`: the local dataset folder NAME/ uploaded to the Langfuse dataset NAME."""
    from video_summarizer.evals.experiments import push_command as push

    with ExitStack() as stack:
        return push(name, _closed_tracker(stack, tracing, backends, langfuse),
                    backends.dataset if langfuse.has_keys else None, out)


def outbox_send_command(outbox: OutboxOptions, langfuse: LangfuseSettings, cache_home: Path) -> int:
    """`outbox send`: 0 all sent, 1 some left (for cron); needs no source and loads no model."""
    from video_summarizer.tracing.outbox import send_command

    return EXIT_OK if send_command(outbox, langfuse, cache_home) == 0 else EXIT_SOME_FAILED


def _closed_tracker(stack: ExitStack, tracing: TracingOptions, backends: Backends,
                    langfuse: LangfuseSettings) -> Callable[[], Any]:
    """A maker of the command's tracker (--trace-log only when given), closed with the stack."""
    from video_summarizer.app.assembly import close_tracker, plain_tracker

    def make() -> Any:
        tracker = plain_tracker(backends, langfuse, tracing.trace_log)
        stack.callback(close_tracker, tracker, tracing.flush_timeout)
        return tracker

    return make
