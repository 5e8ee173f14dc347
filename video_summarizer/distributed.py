"""A batch on a Ray cluster: one actor per worker loads the stages once and runs the same
per-source job as a local run (runner.Run.run_input) on each file sent to it.

Ray is imported only here and only when --ray is given, so --help and local runs stay fast.
The driver (the CLI process) holds the output folder's lock, sends the inputs to the
workers as they free up, re-emits each file's events into its own --events, and prints the
progress and the statistics. Ray does the rest: placement, restarting a worker that dies
(``max_restarts``) and retrying its files (``max_task_retries``), cancelling on Ctrl-C
(``ray.cancel``). A file's outputs are written by the attempt that finishes it, atomically;
a retry that finds them already written (its worker died after writing) reads them back.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import weakref
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping, Sequence

from video_summarizer.errors import InputError, SummarizerError
from video_summarizer.options import RunConfig
from video_summarizer.outputs import OutputDir, SummaryDocument, utc_iso
from video_summarizer.runner import BatchProgress, Input, Run, RunResult
from video_summarizer.stats import ModelStats

log = logging.getLogger(__name__)

OPTION = "--ray"
# No secret travels with the job (Ray keeps a job's runtime env and its pickled arguments in the
# cluster's tables, where anyone who can submit a job can read them): each worker reads the API
# keys from its own node's environment, under the CLI options' variables.
# (concern, field): (variable, option)
WORKER_KEYS = {("caption", "vlm_api_key"): ("VLM_API_KEY", "--vlm-api-key"),
               ("summary", "llm_api_key"): ("LLM_API_KEY", "--llm-api-key")}
StagesFactory = Callable[[RunConfig, ExitStack, Any], Any]  # what each worker calls to build its stages
MAX_RESTARTS = 3  # a worker that dies is restarted this often, its files retried on it
PROBE_TIMEOUT_S = 120.0  # a fresh worker process on a loaded node takes seconds to start
CONNECT_CHECK_S = 3.0  # a cluster's port answers at once; a dead or foreign one must not hold the run


def check_ray_inputs(cfg: RunConfig, inputs: list[Input]) -> None:
    """--ray takes files only: a live source or stdin is a usage error (one line, exit 2)."""
    from video_summarizer.source_specs import kind_of

    for item in inputs:
        kind = kind_of(item.spec)
        if kind == "stdin":
            raise InputError("stdin ('-') cannot be sent to a Ray cluster; give files or folders", option=OPTION)
        if cfg.source.live or (kind in ("camera", "stream") and cfg.source.live is not False):
            raise InputError(f"{item.spec} is a live source; --ray runs batches of files only (run one "
                             "process per camera instead, see docs/scale.md)", option=OPTION)
    for (concern, field), (env, option) in WORKER_KEYS.items():
        value = getattr(getattr(cfg, concern), field)
        if value and value != os.environ.get(env):  # given on the command line: no worker would see it
            raise InputError(f"a key on the command line is not sent to Ray workers (they read {env} from "
                             f"their own environment); set {env} instead, on every node (docs/scale.md)",
                             option=option)


def worker_options(cfg: RunConfig) -> RunConfig:
    """The options as sent to the workers: without the API keys (each node has its own), the watch token
    or the index's key (the driver writes the index)."""
    return _with_keys(cfg, dict.fromkeys(WORKER_KEYS)).replace(watch={"metrics_token": None},
                                                               index={"cloud_api_key": None})


def with_node_keys(cfg: RunConfig, environ: Mapping[str, str]) -> RunConfig:
    """On a worker: the options with this node's own API keys, as the CLI would have read them here."""
    return _with_keys(cfg, {key: environ.get(env) or None for key, (env, _) in WORKER_KEYS.items()})


def _with_keys(cfg: RunConfig, values: Mapping[tuple[str, str], str | None]) -> RunConfig:
    changes: dict[str, dict[str, Any]] = {}
    for (concern, field), value in values.items():
        changes.setdefault(concern, {})[field] = value
    return cfg.replace(**changes)


def node_env_needed(cfg: RunConfig) -> list[tuple[str, ...]]:
    """The variables every node must have for this run (any one name of each tuple): the keys the driver has."""
    needed = [(env,) for (concern, field), (env, _) in WORKER_KEYS.items() if getattr(getattr(cfg, concern), field)]
    if (os.environ.get("LANGFUSE_PUBLIC_KEY") and os.environ.get("LANGFUSE_SECRET_KEY")
            and os.environ.get("LANGFUSE_TRACING_ENABLED", "true").strip().lower() != "false"):
        needed += [("LANGFUSE_PUBLIC_KEY",), ("LANGFUSE_SECRET_KEY",)]
        if os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST"):
            needed.append(("LANGFUSE_BASE_URL", "LANGFUSE_HOST"))
    return needed


# -- the worker side ----------------------------------------------------------------------

class EventBuffer:
    """A file's events, kept for the driver: they reach its --events when the file is done,
    and a killed attempt's events never do."""

    to_stdout = False

    def __init__(self) -> None:
        self.items: list[dict] = []
        self._lock = threading.Lock()

    def emit(self, event_type: str, **fields: Any) -> None:
        """Keep one event with the time it happened."""
        with self._lock:
            self.items.append({"type": event_type, "time": utc_iso(), **fields})

    def close(self) -> None:
        """Nothing to close (the driver writes)."""


class _RecordedStats:
    """A model's statistics that also keep each call's outcome, for the driver's merged report."""

    def __init__(self, inner: ModelStats) -> None:
        self.inner = inner
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def record(self, result: Any) -> None:
        """Record the call here and in the model's own statistics."""
        self.inner.record(result)
        with self._lock:
            self.calls.append((result.success, result.error_kind, result.ttft_ms, result.latency_ms))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _WorkerStop:
    """The worker's side of Ctrl-C on the driver: stop every source it runs."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._sources: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, source: Any) -> None:
        """Stop this source too when the driver says stop."""
        with self._lock:
            self._sources.add(source)
            if self.event.is_set():
                source.stop()

    def set(self) -> None:
        """Stop now: the running files finish their in-flight frames and write what they have."""
        with self._lock:
            self.event.set()
            for source in list(self._sources):
                source.stop()


class SummarizerWorker:
    """One Ray worker: the stages loaded once, files run --jobs at a time (a threaded actor)."""

    def __init__(self, cfg: RunConfig, factory: StagesFactory, run_id: str) -> None:
        logging.getLogger("video_summarizer").setLevel(logging.WARNING)
        from video_summarizer.app.assembly import run_settings
        from video_summarizer.redact import install_log_redaction

        install_log_redaction()  # Ray prints workers' log lines on the driver's stderr as they are
        self.cfg = cfg  # without the keys (worker_options): the factory reads this node's own
        self.settings = run_settings(cfg)
        self.run_id = run_id
        self._factory = factory
        self._stack = ExitStack()  # closes the tracker (within --flush-timeout) in close()
        self._stages: Any = None
        self._lock = threading.Lock()
        self._stop = _WorkerStop()
        self._slots = threading.BoundedSemaphore(self.settings.inflight)  # per worker

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def _shared_stages(self) -> Any:
        with self._lock:
            if self._stages is None:
                stages = self._factory(self.cfg, self._stack, EventBuffer())
                stages.vlm.stats = _RecordedStats(stages.vlm.stats)
                stages.summarizer.stats = _RecordedStats(stages.summarizer.stats)
                self._stages = stages
            return self._stages

    def process(self, item: Input) -> dict:
        """The per-source job on one input; its documents, failures and events."""
        outputs = self.cfg.outputs
        outdir = OutputDir(outputs.output_dir) if outputs.output_dir else None
        if outdir is not None and item.digest and outdir.is_done(item.name, item.digest) and not outputs.force:
            # Only a retry gets here (the driver skipped what was done): the worker that died
            # had written the outputs already; they are not written again.
            return {"docs": [_read_doc(outdir, item.name)], "failed": [], "events": []}
        events = EventBuffer()
        run = Run(self.settings, lambda: dataclasses.replace(self._shared_stages(), events=events), events,
                  self._stop, outdir, batch=True, run_id=self.run_id, slots=self._slots)
        source = run.open(item)
        if source is not None:
            run.run_input(item, source)
        return {"docs": run.result.docs, "failed": run.result.failed, "events": events.items}

    def stop(self) -> None:
        """Stop the files running here (Ctrl-C on the driver)."""
        self._stop.set()

    def close(self) -> dict:
        """Close the tracker within its deadline; each model call's outcome and the stages' own
        statistics lines, for the driver's report."""
        self._stack.close()
        if self._stages is None:
            return {}
        stages = self._stages
        part: dict[str, Any] = {key: {"label": stats.label, "calls": stats.calls}
                                for key, stats in (("vlm", stages.vlm.stats), ("llm", stages.summarizer.stats))}
        for key in ("faces", "prompts", "tracker"):
            stage = getattr(stages, key, None)
            if stage is not None and hasattr(stage, "format_stats"):
                stats = getattr(stage, "stats", None)  # a face recognizer's counts (a dict)
                part[key] = {"text": stage.format_stats(),
                             "stats": json.loads(json.dumps(stats, default=str)) if isinstance(stats, dict) else None}
        return part


class _WorkerLines:
    """A stage's statistics as the workers said them (one block per worker where they differ)."""

    def __init__(self, parts: list[dict]) -> None:
        texts = list(dict.fromkeys(p["text"] for p in parts))
        self._text = texts[0] if len(texts) == 1 else "\n".join(
            f"worker {n + 1}: {t}" for n, t in enumerate(texts))
        dicts = [p["stats"] for p in parts if isinstance(p.get("stats"), dict)]
        self.stats = _summed(dicts) if dicts else None

    def format_stats(self) -> str:
        """The text the report prints."""
        return self._text


def _summed(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    return out


def _read_doc(outdir: OutputDir, name: str) -> SummaryDocument:
    data = json.loads(outdir.paths_for(name)[0].read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(SummaryDocument)}
    return SummaryDocument(**{k: v for k, v in data.items() if k in fields})


def probe_node(factory: StagesFactory, output_dir: str | None, token_name: str, token: str, version: str,
               needed_env: Sequence[tuple[str, ...]] = ()) -> tuple[str | None, str]:
    """On one node: what keeps it from running the batch (one line, or None), and its Ray auth mode."""
    # A node's workers inherit its `ray start` environment, where Ray keeps the mode it runs with
    # (it sets RAY_AUTH_MODE=token there itself when it turns token auth on by default).
    auth = os.environ.get("RAY_AUTH_MODE", "").strip().lower() or "disabled"
    return _node_problem(factory, output_dir, token_name, token, version, needed_env), auth


def _node_problem(factory: StagesFactory, output_dir: str | None, token_name: str, token: str, version: str,
                  needed_env: Sequence[tuple[str, ...]]) -> str | None:
    # The factory arrived unpickled: its modules import here (a node without them fails the
    # call with an ImportError, which _answer says as the node lacking the project's packages).
    import video_summarizer

    if not callable(factory):
        return f"got no stages factory ({type(factory).__name__})"
    if video_summarizer.__version__ != version:
        return f"runs version {video_summarizer.__version__} of the project, the driver {version}"
    missing = [names[0] for names in needed_env if not any(os.environ.get(n) for n in names)]
    if missing:  # names only: no value ever leaves a node
        return (f"lacks {', '.join(missing)} in its environment (keys are not sent with the job: set them "
                "where `ray start` runs on that node, see docs/scale.md)")
    if output_dir:
        try:
            seen = (Path(output_dir) / token_name).read_text(encoding="utf-8").strip()
        except OSError as e:
            return f"cannot see the output folder {output_dir} ({e.strerror}); give a path every node sees"
        if seen != token:
            return f"sees another folder at {output_dir}; give a path every node shares"
        try:
            fd, tmp = tempfile.mkstemp(prefix=".ray-write-", dir=output_dir)
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            return f"cannot write to the output folder {output_dir} ({e.strerror})"
    return None


# -- the driver side ----------------------------------------------------------------------

def connect(address: str) -> Any:
    """Join the Ray cluster at address ('local': start a private one); InputError when there is none.

    Nothing of the driver's environment is sent along (no runtime env): workers read their own.
    """
    if address == "auto" and os.environ.get("RAY_ADDRESS", "").strip() == "local":
        address = "local"  # what ray.init("auto") would make of it, made private the same way
    if address == "local":
        _private_token()
        import ray

        # "local", not None: ray.init() would join what RAY_ADDRESS or the address file names
        with _signal_handlers_kept():
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        return ray
    target, named_by = (_auto_address() if address == "auto" else (address, None))
    if target:
        _check_reachable(target, named_by)
    import ray

    try:
        with _signal_handlers_kept():
            ray.init(address=address, logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError here
        raise InputError(f"no Ray cluster at {target or address}: {_first_line(e)}", option=OPTION) from e
    return ray


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """ray.init() in the main thread sets its own SIGTERM handler (sys.exit): the run's own handler,
    which stops reading and writes the summary within its bounds, is put back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _private_token() -> None:
    """A private cluster's own token, in this process's environment only: left to itself, Ray turns
    token auth on by writing ~/.ray/auth_token (with the umask's mode, usually readable by all),
    which every later `ray start` of the user then picks up. An auth mode the user set is theirs."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    if "ray" not in sys.modules:  # Ray reads the mode when it is imported; later, it turns it on itself
        os.environ["RAY_AUTH_MODE"] = "token"


def _auto_address() -> tuple[str | None, str | None]:
    """What ray.init("auto") joins, and what names it: RAY_ADDRESS, else the file the last
    `ray start` on this machine left in Ray's temp folder (Ray's own lookup, linux and macOS)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux")
                                            else None) or "/tmp"
    path = Path(base) / "ray" / "ray_current_cluster"
    try:
        return path.read_text(encoding="utf-8").strip() or None, str(path)
    except OSError:
        return None, None  # Ray looks for a running cluster on this machine, or says there is none


def _check_reachable(address: str, named_by: str | None = None) -> None:
    """A host:port that is not a cluster is said in seconds: Ray retries a dead or silent one forever
    (with ray 2.60 both were still retried after 5 minutes, a "Failed to connect to GCS" every 5 s)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # ray://: Ray's own lookup says what is wrong
    where = f"{address} (named by {named_by})" if named_by else address
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_CHECK_S) as s:
            answers = os.environ.get("RAY_USE_TLS", "0") not in ("0", "") or _speaks_grpc(s)
    except OSError as e:
        raise InputError(f"no Ray cluster at {where}: {e.strerror or e}", option=OPTION) from None
    if not answers:
        raise InputError(f"no Ray cluster at {where}: the port is open but does not answer as one",
                         option=OPTION)


def _speaks_grpc(sock: socket.socket) -> bool:
    """Whether the peer answers an HTTP/2 greeting with its settings, as a Ray GCS (gRPC) does."""
    sock.settimeout(CONNECT_CHECK_S)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    head = b""
    try:
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 4  # a SETTINGS frame


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _answer(ray: Any, ref: Any) -> tuple[str | None, str]:
    """A node's probe_node answer; a node that cannot run it is a problem too."""
    try:
        return ray.get(ref, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        return f"did not answer within {PROBE_TIMEOUT_S:.0f} s", ""
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, ImportError) or "No module named" in str(e):
            return (f"lacks the project's packages ({_first_line(cause)}); install the project there "
                    "(pip install -r requirements.txt, then pip install .)"), ""
        return _first_line(cause), ""


def _open_nodes(nodes: str) -> None:
    """Nodes without token auth: a warning, or an error where this driver has it on (the driver then
    refuses its workers' calls: every actor would die before its first file)."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token":
        raise InputError(f"Ray node {nodes} has no token authentication while this driver has it on "
                         "(RAY_AUTH_MODE=token), so its workers could not report back; start every node with "
                         "RAY_AUTH_MODE=token (see docs/scale.md)", option=OPTION)
    log.warning("Ray: the cluster has no token authentication on node %s: anyone who can reach it can run code "
                "on it. Start every node with RAY_AUTH_MODE=token (see docs/scale.md).", nodes)


class RayRun:
    """The driver of a batch on Ray, with runner.Run's interface for the CLI."""

    def __init__(self, cfg: RunConfig, factory: StagesFactory, events: Any, stop: Any, outdir: OutputDir | None,
                 *, run_id: str | None = None) -> None:
        from video_summarizer.runner import new_run_id

        self.cfg = cfg
        self.factory = factory  # each worker calls it as (cfg, stack, events); pickled by reference
        self.events = events
        self.stop_signal = stop
        self.outdir = outdir
        self.run_id = run_id or new_run_id()
        self.result = RunResult()
        self._stopping = threading.Event()
        self._stats: dict[str, ModelStats] = {}
        self._said: dict[str, list[dict]] = {"faces": [], "prompts": [], "tracker": []}

    # the CLI's StopSignal calls stop() (it takes us for a source)
    live = False

    def stop(self) -> None:
        """Ctrl-C: cancel the files not started, stop the running ones (they still write)."""
        self._stopping.set()

    def open(self, item: Input) -> None:
        """Files are opened on the workers."""
        return None

    @property
    def stages_built(self) -> bool:
        """Whether any worker got as far as loading the models."""
        return bool(self._stats)

    def stages(self) -> Any:
        """What the report reads of the stages: the merged model statistics and the events."""
        said = {key: _WorkerLines(parts) if parts else None for key, parts in self._said.items()}
        return SimpleNamespace(events=self.events, vlm=SimpleNamespace(stats=self._stats["vlm"]),
                               summarizer=SimpleNamespace(stats=self._stats["llm"]),
                               faces=said.get("faces"), prompts=said.get("prompts"),
                               tracker=said.get("tracker") or _WorkerLines([{"text": "Tracker: (no worker)"}]),
                               frame_observers=[])  # datasets and the page run on the workers

    def run_all(self, inputs: list[Input], first: Any | None = None) -> RunResult:
        """Every input on the cluster's workers; returns when all are done, failed or cancelled."""
        ray = connect(self.cfg.scale.ray or "auto")
        try:
            self._probe(ray)
            workers = self._start_workers(ray, len(inputs))
            self.stop_signal.watch(self)  # from here a signal stops the run instead of aborting start-up
            try:
                self._dispatch(ray, workers, inputs)
            finally:
                self._close(ray, workers)
        finally:
            ray.shutdown()
        order = {item.shown: n for n, item in enumerate(inputs)}
        self.result.docs.sort(key=lambda doc: order.get(doc.source, len(order)))
        return self.result

    def _probe(self, ray: Any) -> None:
        """Each node can load the project and sees the output folder, before any file starts."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        import video_summarizer

        token_name, token = f".ray-probe-{self.run_id}", self.run_id
        if self.cfg.outputs.output_dir:
            (Path(self.cfg.outputs.output_dir) / token_name).write_text(token, encoding="utf-8")
        try:
            probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            needed = node_env_needed(self.cfg)
            refs = {n.get("NodeManagerAddress", n["NodeID"]): probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)).remote(
                    self.factory, self.cfg.outputs.output_dir, token_name, token, video_summarizer.__version__, needed)
                for n in nodes}
            open_nodes = []
            for node, ref in refs.items():
                problem, auth = _answer(ray, ref)
                if problem:
                    raise InputError(f"Ray node {node} {problem}", option=OPTION)
                if auth != "token":
                    open_nodes.append(node)
            if open_nodes:  # asked of the nodes: the driver's own RAY_AUTH_MODE says nothing of theirs
                _open_nodes(", ".join(open_nodes))
        finally:
            if self.cfg.outputs.output_dir:
                (Path(self.cfg.outputs.output_dir) / token_name).unlink(missing_ok=True)

    def _start_workers(self, ray: Any, n_inputs: int) -> list:
        """One worker per CPU of the cluster (at most one per input), restarted by Ray if it dies."""
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        jobs = self.cfg.scale.job_count(self.cfg.caption)
        actor = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                           max_concurrency=jobs, concurrency_groups={"control": 2})(SummarizerWorker)
        sent = worker_options(self.cfg)  # no API key in the pickled options
        workers = [actor.remote(sent, self.factory, self.run_id) for _ in range(min(cpus, n_inputs))]
        log.info("Ray: %d worker(s), %d file(s) at a time each, --max-inflight %d each",
                 len(workers), jobs, self.cfg.scale.inflight(self.cfg.caption))
        return workers

    def _dispatch(self, ray: Any, workers: list, inputs: list[Input]) -> None:
        """Keep every worker at --jobs files until the inputs run out (ActorPool runs one per actor)."""
        jobs = self.cfg.scale.job_count(self.cfg.caption)
        queue = list(reversed(inputs))
        free = {n: jobs for n in range(len(workers))}
        in_flight: dict[Any, tuple[int, Input]] = {}
        progress = BatchProgress(len(inputs))
        stopped = False
        while queue or in_flight:
            if self._stopping.is_set() and not stopped:
                stopped = True
                queue.clear()
                for ref in in_flight:
                    ray.cancel(ref)  # not started yet: cancelled; running: stopped below, still written
                for worker in workers:
                    worker.stop.options(concurrency_group="control").remote()
            while queue:
                n = max(free, key=free.get)
                if free[n] == 0:
                    break
                item = queue.pop()
                free[n] -= 1
                in_flight[workers[n].process.remote(item)] = (n, item)
                progress.started()
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                n, item = in_flight.pop(ref)
                free[n] += 1
                captions, failed = self._collect(ray, ref, item)
                progress.finished(item.name, captions, failed)

    def _collect(self, ray: Any, ref: Any, item: Input) -> tuple[int, bool]:
        """One finished file: its events to --events, its documents and failures to the result."""
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return 0, False
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SummarizerError):  # a model that cannot load: exit 2, as locally
                raise cause from None
            self.result.failed.append((item.spec, _first_line(cause or e)))
            return 0, True
        except ray.exceptions.RayError as e:  # the worker died more often than it is restarted
            self.result.failed.append((item.spec, f"Ray worker lost: {_first_line(e)}"))
            return 0, True
        for event in out["events"]:
            event = dict(event)
            self.events.emit(event.pop("type"), **event)
        self.result.docs.extend(out["docs"])
        self.result.failed.extend(out["failed"])
        captions = sum(doc.stats.get("captioned", 0) for doc in out["docs"])
        return captions, bool(out["failed"])

    def _close(self, ray: Any, workers: list) -> None:
        """Each worker closes its tracker within --flush-timeout; their model statistics merged."""
        refs = [w.close.options(concurrency_group="control").remote() for w in workers]
        try:
            parts = ray.get(refs, timeout=self.cfg.tracing.flush_timeout + 30.0)
        except ray.exceptions.RayError as e:
            log.warning("Ray: workers did not close in time (%s); some traces may be lost", _first_line(e))
            parts = []
        for part in parts:
            for key in self._said:
                if key in part:
                    self._said[key].append(part.pop(key))
            for key, value in part.items():
                stats = self._stats.setdefault(key, ModelStats(value["label"]))
                for success, kind, ttft, latency in value["calls"]:
                    stats.record(SimpleNamespace(success=success, error_kind=kind, ttft_ms=ttft,
                                                 latency_ms=latency))
