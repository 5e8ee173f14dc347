"""A run over the inputs: plan them (names, what is up to date), then one job per source.

The per-source job (`run_input`) is what every way of running shares: it opens nothing
itself, takes the stages from a factory (so a batch with nothing to do, or whose inputs all
fail to open, loads no model), runs the loop, and writes the input's outputs.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from video_summarizer import defaults as D
from video_summarizer.errors import InputError
from video_summarizer.options import SelectionOptions, SourceOptions
from video_summarizer.outputs import OutputDir, file_sha256, incomplete_reasons

log = logging.getLogger(__name__)

# A file counts as failed when fewer than this share of its stated frames decode.
MIN_DECODED_SHARE = 0.5


class Stopper(Protocol):
    """What the run needs of the signal handling: a stop event and sources to stop with it."""

    event: threading.Event

    def watch(self, source: Any) -> None: ...


@dataclass
class Input:
    """One input of the run: what to open, the name its outputs get, its content hash (batch)."""

    spec: str
    name: str
    label: str = ""  # the source's label, unique within the run (user id and session in Langfuse)
    digest: str | None = None

    @property
    def shown(self) -> str:
        """The spec as it may be printed or stored: a stream's user info, tokens and keys masked."""
        from video_summarizer.redact import redact_url

        return redact_url(self.spec) if "://" in self.spec else self.spec


@dataclass
class RunResult:
    """What a run produced: documents in input order, failed inputs with why, inputs skipped."""

    docs: list = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


def new_run_id() -> str:
    """A run id, sortable by start time: 20261201T091200Z-3fa9c1."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def plan_inputs(source_args: tuple[str, ...], expand: Callable[[list[str]], list[str]],
                labels: tuple[str, ...] = ()) -> list[Input]:
    """The inputs of the given --source values, each with a name unique within the run.

    A file's name is its path relative to the root it was found under (the folder given, the
    fixed part of a glob, or its own folder), without its extension and with '/' as '-'. Inputs
    that still share a name keep their extension (clip.mp4, clip.webm), then a short hash of
    their absolute path: stable across runs, so up-to-date outputs are found again. ``labels``
    (--source-label) name the first --source values in order: label and name both.
    """
    given = _check_labels(source_args, labels)
    inputs: list[Input] = []
    chosen: dict[int, str] = {}  # input index -> the label given for it
    seen: set[str] = set()
    for n, arg in enumerate(source_args):
        root = _root_of(arg)
        specs = expand([arg])
        if n < len(given) and len(specs) != 1:
            raise InputError(f"{given[n]!r} names --source {arg}, which stands for {len(specs)} inputs: "
                             "label single sources only", option=LABEL_OPTION)
        for spec in specs:
            if spec in seen:
                continue
            seen.add(spec)
            if n < len(given):
                chosen[len(inputs)] = given[n]
            inputs.append(Input(spec, given[n] if n < len(given) else _relative_name(spec, root)))
    keep = {id(inputs[n]) for n in chosen}  # a label the user gave is kept as given
    _disambiguate(inputs, lambda i: i.name + Path(i.spec).suffix if _is_path(i.spec) else i.name, keep)
    _disambiguate(inputs, lambda i: f"{i.name}-{hashlib.sha1(os.path.abspath(i.spec).encode()).hexdigest()[:6]}",
                  keep)
    _label(inputs)
    return inputs


LABEL_OPTION = "--source-label"
_LABEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}")


def _check_labels(source_args: tuple[str, ...], labels: tuple[str, ...]) -> tuple[str, ...]:
    """The --source-label values, checked: no more than sources, safe in file names and ids, distinct."""
    if len(labels) > len(source_args):
        raise InputError(f"{len(labels)} labels for {len(source_args)} --source value(s): give at most one "
                         "per --source, in the same order", option=LABEL_OPTION)
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise InputError(f"{label!r} is not a label: use 1-80 letters, digits, '.', '_' or '-', "
                             "not starting with '.' or '-'", option=LABEL_OPTION)
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise InputError(f"{twice[0]!r} is given twice: each source needs its own label", option=LABEL_OPTION)
    return labels


def _label(inputs: list[Input]) -> None:
    """Each input's label is its name, unique within the run: its output files, statistics,
    progress lines, events and traces all call it the same (b/clip.mp4 is b-clip everywhere)."""
    for item in inputs:
        item.label = item.name


def _is_path(spec: str) -> bool:
    return spec != "-" and "://" not in spec and os.path.exists(os.path.expanduser(spec))


def _root_of(arg: str) -> Path | None:
    path = os.path.expanduser(arg)
    if os.path.isdir(path):
        return Path(path)
    if any(ch in arg for ch in "*?["):
        fixed = []
        for part in Path(path).parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path(".")
    return None


def _relative_name(spec: str, root: Path | None) -> str:
    if not _is_path(spec):
        from video_summarizer.source_specs import kind_of, source_label

        if kind_of(spec) != "file":
            return source_label(spec)  # stdin, a camera, a stream: named by their label
    path = Path(os.path.expanduser(spec))
    try:
        rel = path.relative_to(root) if root is not None else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    return str(rel.with_suffix("")).replace(os.sep, "-") or "input"


def _disambiguate(inputs: list[Input], rename: Callable[[Input], str], keep: set[int]) -> None:
    """Inputs sharing a name are renamed, but for those in keep (by id: named with --source-label)."""
    counts = Counter(i.name for i in inputs)
    for item in inputs:
        if counts[item.name] > 1 and id(item) not in keep:
            item.name = rename(item)


def todo(inputs: list[Input], outdir: OutputDir | None, force: bool) -> tuple[list[Input], int]:
    """The inputs to process and how many are skipped as up to date (batch folder only)."""
    if outdir is None:
        return inputs, 0
    out, skipped = [], 0
    for item in inputs:
        if os.path.isfile(item.spec):
            try:
                item.digest = file_sha256(item.spec)
            except OSError:
                item.digest = None  # unreadable: opening it says why, as a failed input
            if item.digest and not force and outdir.is_done(item.name, item.digest):
                log.info("%s: already summarized (unchanged); skipping (--force to redo)", item.spec)
                skipped += 1
                continue
        out.append(item)
    return out, skipped


def input_failure(stats: dict) -> str | None:
    """Why a finished source counts as failed (exit 1), or None."""
    if stats["frames_read"] == 0:
        return "no frame could be decoded"
    expected = stats.get("frames_expected")
    if stats.get("truncated") and expected and stats["frames_read"] < MIN_DECODED_SHARE * expected:
        return f"truncated: only {stats['frames_read']} of {expected} frames could be decoded"
    if stats["selected"] and not stats["captioned"]:
        return f"none of {stats['selected']} selected frames could be captioned (see the VLM failures above)"
    return None


def one_line(err: Exception, spec: str) -> str:
    """An error's message without the input's path in front (the failed list names it already)."""
    text = str(err)
    for prefix in (f"{spec}: ", f"{spec} "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


@dataclass(frozen=True)
class RunSettings:
    """What the per-source job needs of a run's options: opening, selecting, pacing, showing."""

    source: SourceOptions = SourceOptions()
    selection: SelectionOptions = SelectionOptions()
    summary_interval: float = D.SUMMARY_INTERVAL_S
    shutdown_timeout: float = D.SHUTDOWN_TIMEOUT_S
    inflight: int = D.INFLIGHT_SERVER  # caption calls in flight, shared by every source
    jobs: int = 1  # files read at once
    display: bool = False


class Run:
    """Runs the planned inputs: opening each, the per-source job, outputs, failures."""

    def __init__(self, settings: RunSettings, stages: Callable[[], Any], events: Any, stop: Stopper,
                 outdir: OutputDir | None, *, batch: bool, run_id: str | None = None,
                 slots: threading.Semaphore | None = None) -> None:
        self.settings = settings
        self._build_stages = stages  # called once, when the first input has opened
        self._stages: Any = None
        self._build_error: BaseException | None = None
        self.events = events
        self.stop = stop
        self.outdir = outdir
        self.batch = batch
        self.run_id = run_id or new_run_id()
        # --max-inflight is the run's budget of caption calls, shared by every source: a file
        # waiting for a slot holds no other back, and one finishing frees its slots at once.
        self.slots = slots or threading.BoundedSemaphore(settings.inflight)
        self.result = RunResult()
        self._lock = threading.RLock()

    def stages(self) -> Any:
        """The run's stages, built (models loaded) on the first call."""
        with self._lock:
            if self._build_error is not None:  # the other inputs fail the same way, said once
                raise self._build_error
            if self._stages is None:
                try:
                    self._stages = self._build_stages()
                except BaseException as e:
                    self._build_error = e
                    raise
            return self._stages

    @property
    def stages_built(self) -> bool:
        """Whether any input got as far as loading the models."""
        return self._stages is not None

    def open(self, item: Input) -> Any | None:
        """Open one input; in a batch an InputError makes it a failed input (None), else it is raised."""
        from video_summarizer.sources import open_source

        try:
            source = self.settings.source
            return open_source(item.spec, live=source.live, reconnect_attempts=source.reconnect_attempts,
                               label=item.label or None, max_pixels=source.max_pixels,
                               stdin_max_mb=source.stdin_max_mb)
        except InputError as e:
            if not self.batch:
                raise
            self.fail(item, one_line(e, item.spec), stage="input")
            return None

    def fail(self, item: Input, why: str, *, stage: str | None = None) -> None:
        """Count an input as failed (said at the end), with an error event when it never ran."""
        with self._lock:
            self.result.failed.append((item.shown, why))
        if stage is not None:
            self.events.emit("error", source=item.shown, stage=stage, message=why)
        log.warning("%s: %s", item.shown, why)

    def run_all(self, inputs: list[Input], first: Any | None = None) -> RunResult:
        """Every input (files --jobs at a time, live ones beside each other); `first` is inputs[0] opened."""
        order = {item.shown: n for n, item in enumerate(inputs)}
        jobs = min(self.settings.jobs, len(inputs))
        if jobs > 1 and not any(self._live_spec(item) for item in inputs):
            self._run_files(inputs, jobs)
        else:
            self._run_in_turn(inputs, first)
        self.result.docs.sort(key=lambda doc: order.get(doc.source, len(order)))
        return self.result

    def _live_spec(self, item: Input) -> bool:
        from video_summarizer.source_specs import kind_of

        if self.settings.source.live is not None:
            return self.settings.source.live
        return kind_of(item.spec) in ("camera", "stream")

    def _run_in_turn(self, inputs: list[Input], first: Any | None) -> None:
        """Files one after another here, live sources on threads of their own."""
        live_threads: list[threading.Thread] = []
        for n, item in enumerate(inputs):
            if self.stop.event.is_set():
                break
            source = first if n == 0 and first is not None else self.open(item)
            if source is None:
                continue
            if source.live and len(inputs) > 1:
                t = threading.Thread(target=self.run_input, args=(item, source), daemon=True)
                t.start()
                live_threads.append(t)
            else:
                self.run_input(item, source)
        for t in live_threads:
            while t.is_alive():
                t.join(0.5)

    def _run_files(self, inputs: list[Input], jobs: int) -> None:
        """Files `jobs` at a time: a file frees its turn once it is read, so its last captions and
        its final summary overlap the next file's captions. Daemon threads: a model call hung past
        the deadline must not keep the process alive. The first error (a model that cannot load)
        ends the run."""
        reading = threading.Semaphore(jobs)
        errors: list[BaseException] = []
        progress = BatchProgress(len(inputs))
        threads: list[threading.Thread] = []

        def job(item: Input) -> None:
            freed = threading.Event()

            def free() -> None:
                if not freed.is_set():
                    freed.set()
                    reading.release()

            doc = source = None
            try:
                source = self.open(item)
                doc = self.run_input(item, source, on_read=free) if source is not None else None
            except BaseException as e:  # raised in the main thread below
                errors.append(e)
                return
            finally:
                free()
            with self._lock:
                failed = source is None or any(spec == item.shown for spec, _ in self.result.failed)
            progress.finished(item.name, doc.stats["captioned"] if doc is not None else 0, failed)

        for n, item in enumerate(inputs):
            while not reading.acquire(timeout=0.5):  # wakes up for signals
                pass
            if self.stop.event.is_set() or errors:
                reading.release()
                break
            progress.started()
            t = threading.Thread(target=job, args=(item,), name=f"input-{n}", daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        if errors:
            raise errors[0]

    def run_input(self, item: Input, source: Any, on_read: Callable[[], None] | None = None) -> Any:
        """The per-source job: the loop over one opened source, then its outputs (on_read: it is read)."""
        with source:
            stages = self.stages()
            self.stop.watch(source)
            log.info("%s: %s", source.label, source.describe())
            with ExitStack() as stack:
                doc = self._source_run(source, stages, stack, on_read).run()
        doc.source = item.shown
        doc.input_sha256 = item.digest
        for key in ("frames_expected", "truncated"):
            value = getattr(source, key, None)
            if value is not None:
                doc.stats[key] = value
        with self._lock:
            self.result.docs.append(doc)
        self.events.emit("stats", source=source.label, **doc.stats)
        why = input_failure(doc.stats)
        if why and not self.stop.event.is_set():
            self.fail(item, why)
            return doc
        md_path = None
        if self.outdir is not None:
            try:
                json_path, md_path = self.outdir.write(doc, item.name)
            except OSError as e:  # a full disk: the input is redone by the next run
                from video_summarizer.files import NOT_WRITTEN, reason

                NOT_WRITTEN.record("--output-dir", f"the summaries in {self.outdir.path}", e,
                                   "the inputs without them are redone by the next run")
                with self._lock:  # named in the failed list at the end, not once more here
                    self.result.failed.append((item.shown, f"summary not written ({reason(e)})"))
                return doc
            log.info("%s: wrote %s and %s", source.label, json_path, md_path)
        if not self.stop.event.is_set():
            self._say_incomplete(item, doc, md_path)
        return doc

    def _say_incomplete(self, item: Input, doc: Any, kept: Path | None) -> None:
        """A summary model that failed fails the input (as a caption model that failed on every
        frame does); any stage's gap is said, and its outputs are redone by the next run."""
        gaps = incomplete_reasons(doc.stats)
        if not gaps:
            return
        redo = f"; kept in {kept}, marked incomplete: the next run redoes it" if kept else ""
        failed = doc.stats.get("summary_failures") or 0
        if failed:
            calls = failed + (doc.stats.get("summaries") or 0)
            self.fail(item, f"the summary model failed ({failed} of {calls} summaries; see the LLM lines "
                            f"above): the captions stand in for it{redo}")
        elif kept is not None:
            log.warning("%s: %s%s", item.shown, "; ".join(gaps), redo)


    def _source_run(self, source: Any, stages: Any, stack: ExitStack,
                    on_read: Callable[[], None] | None = None) -> Any:
        from video_summarizer.pipeline import PipelineConfig, SourceRun
        from video_summarizer.selection import FrameSelector

        settings, selection = self.settings, self.settings.selection
        config = PipelineConfig(summary_interval=settings.summary_interval, max_inflight=settings.inflight,
                                shutdown_timeout_s=settings.shutdown_timeout)
        selector = FrameSelector(interval=selection.interval, min_change=selection.min_change,
                                 max_gap=selection.max_gap, motion_min_area=selection.motion_min_area)
        return SourceRun(source, selector, stages, config,
                         session_id=f"{self.run_id}-{source.label}", stop_event=self.stop.event,
                         on_frame=self._display_hook(stack) if settings.display else None,
                         on_progress=_progress_bar(stack, source) if settings.jobs == 1 else None,
                         slots=self.slots, on_read=on_read)

    def _display_hook(self, stack: ExitStack) -> Callable[[Any, Any], None] | None:
        from video_summarizer.display import Display, display_unavailable_reason

        reason = display_unavailable_reason()
        if reason:
            log.warning("--display: %s; continuing without a window", reason)
            return None
        display = Display()
        stack.callback(display.close)

        def on_frame(frame: Any, run: Any) -> None:
            if not display.show(frame.image, frame.timestamp, run.latest_caption, run.rolling_summary or "",
                                run.latest_faces):
                self.stop.event.set()
                run.source.stop()

        return on_frame


def _progress_bar(stack: ExitStack, source: Any) -> Callable[[int], None] | None:
    """A progress bar per file when stderr is a terminal; None otherwise."""
    total = getattr(source, "frame_count", None)
    if source.live or not total or total <= 0 or not sys.stderr.isatty():
        return None
    import click

    bar = stack.enter_context(click.progressbar(length=int(total), label=source.label, file=sys.stderr))
    return bar.update


class BatchProgress:
    """Files done / in progress / failed and captions so far: one line per finished file."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = self.running = self.failed = self.captions = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        """A file has started."""
        with self._lock:
            self.running += 1

    def finished(self, name: str, captions: int, failed: bool) -> None:
        """A file has finished (or failed); says where the batch stands."""
        with self._lock:
            self.running -= 1
            self.done += 1
            self.failed += int(failed)
            self.captions += captions
            line = (f"[{self.done}/{self.total} files, {self.running} in progress, {self.failed} failed, "
                    f"{self.captions} captions] {name}{' failed' if failed else ' done'}")
        log.info("%s", line)
