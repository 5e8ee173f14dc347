"""The run's assembly in the package: options by concern, the stages built from the classes the CLI
hands in (recording stand-ins here: no model is built), and the factory Ray gets, by reference."""
from __future__ import annotations

import dataclasses
import functools
import pickle
from contextlib import ExitStack
from pathlib import Path

import pytest

from video_summarizer import defaults as D
from video_summarizer.app import Backends
from video_summarizer.app.assembly import build_stages, build_worker_stages, caption_model, run_settings
from video_summarizer.options import (
    CaptionOptions,
    FaceOptions,
    OutboxOptions,
    RunConfig,
    ScaleOptions,
    SourceOptions,
    TracingOptions,
)
from video_summarizer.tracing.settings import LangfuseSettings


class _Recorded:
    """A stand-in model that notes what is done to it, in one list shared by all of them."""

    stats = None

    def __init__(self, record: list[str], role: str, *args, **kw) -> None:  # noqa: ANN002, ANN003
        self.record, self.role, self.args, self.kw = record, role, args, kw
        self.model, self.device, self.base_url = f"stub-{role}", "cpu", (args[0] if args else None)
        record.append(f"{role}.new")

    def check(self) -> None:
        self.record.append(f"{self.role}.check")

    def load(self) -> None:
        self.record.append(f"{self.role}.load")

    def close(self) -> None:
        self.record.append(f"{self.role}.close")


class _Tracker:
    enabled = False

    def __init__(self, record: list[str], **kw) -> None:  # noqa: ANN003
        self.kw = kw
        self.record = record
        record.append("tracker.new")

    def close(self, deadline_s: float) -> None:
        self.record.append(f"tracker.close({deadline_s:g})")


def stub_backends(record: list[str]) -> Backends:
    """Backends whose classes record construct/check/load/close order; nothing real is built."""
    return Backends(tracker=functools.partial(_Tracker, record),
                    caption=functools.partial(_Recorded, record, "caption"),
                    summary=functools.partial(_Recorded, record, "summary"))


def test_build_stages_checks_every_model_before_any_loads_and_builds_no_real_one(tmp_path):
    record: list[str] = []
    cfg = RunConfig(caption=CaptionOptions(vlm_base_url="http://127.0.0.1:8000/v1", vlm_api_key="k"),
                    faces=FaceOptions(no_faces=True), tracing=TracingOptions(trace_log=str(tmp_path / "t.jsonl"),
                                                                           flush_timeout=2.0))
    with ExitStack() as stack:
        stages = build_stages(cfg, stack, events=None, backends=stub_backends(record),
                              langfuse=LangfuseSettings(), cache_home=tmp_path)
        assert record == ["caption.new", "summary.new", "caption.check", "summary.check", "tracker.new",
                          "caption.load", "summary.load"]
        assert stages.faces is None and stages.blur_faces is False  # the endpoint is on this machine
        assert stages.vlm.args == ("http://127.0.0.1:8000/v1", "k", D.API_VLM_MODEL)
        assert stages.vlm.kw == {"timeout_s": D.VLM_TIMEOUT_S, "max_tokens": D.VLM_MAX_TOKENS}
        assert stages.summarizer.args == (D.LLM_MODEL,) and stages.summarizer.kw["base_url"] is None
        assert stages.tracker.kw["outbox"] is None  # no keys: nothing kept for Langfuse
        assert str(stages.tracker.kw["trace_log"].path) == str(tmp_path / "t.jsonl")
    assert record[-3:] == ["tracker.close(2)", "summary.close", "caption.close"]  # the tracker flushes first


def test_the_ray_factory_pickles_by_reference_to_the_same_function_and_classes():
    from langfuse_datasets import LangfuseDataset
    from langfuse_tracker import LangfuseTracker
    from llm_summarizer import LLMSummarizer
    from vlm_client_module import VLMClient

    factory = functools.partial(build_worker_stages, backends=Backends(LangfuseTracker, VLMClient, LLMSummarizer,
                                                                       LangfuseDataset))
    data = pickle.dumps(factory)
    assert b"build_worker_stages" in data and len(data) < 1000  # names, not code
    back = pickle.loads(data)
    assert back.func is build_worker_stages and back.keywords == factory.keywords


def test_a_worker_reads_its_own_nodes_keys_and_sends_none():
    from video_summarizer.distributed import with_node_keys, worker_options

    cfg = RunConfig.from_params({"sources": ("a.mp4",), "vlm_api_key": "sk-SECRET-1", "llm_api_key": "sk-SECRET-2",
                                 "metrics_token": "SECRET-3"})
    sent = worker_options(cfg)
    assert (sent.caption.vlm_api_key, sent.summary.llm_api_key, sent.watch.metrics_token) == (None, None, None)
    assert sent.source == cfg.source and sent.caption.vlm_model == cfg.caption.vlm_model
    node = with_node_keys(sent, {"VLM_API_KEY": "sk-node"})
    assert (node.caption.vlm_api_key, node.summary.llm_api_key) == ("sk-node", None)
    assert "SECRET" not in repr(cfg)  # secrets never in a repr (logs, Ray's tables)


def test_run_config_puts_every_click_value_in_exactly_one_concern():
    import real_time_summarizer

    run = real_time_summarizer.cli.commands["run"]
    names = [p.name for p in run.params if p.name not in ("help", "version")]
    owners = {name: [c for c, cls in RunConfig.concerns().items() if name in cls.field_names()] for name in names}
    assert {n: o for n, o in owners.items() if len(o) != 1} == {"debug": []}  # debug is the command's own
    params = run.make_context("run", ["--source", "a.mp4", "--source", "b.mp4", "--face-smoothing", "2/3",
                                      "--vlm-base-url", "http://x/v1", "--max-inflight", "3"]).params
    cfg = RunConfig.from_params(params)
    assert cfg.source.sources == ("a.mp4", "b.mp4") and cfg.faces.face_smoothing == (2, 3)
    assert (cfg.caption.backend, cfg.caption.model, cfg.scale.inflight(cfg.caption)) == ("api", "qwen3", 3)
    with pytest.raises(TypeError, match="no concern for \\['nonsense'\\]"):
        RunConfig.from_params({**params, "nonsense": 1})


def test_resolved_values_live_on_their_concern(tmp_path):
    local, api = CaptionOptions(), CaptionOptions(vlm_base_url="http://h/v1")
    assert (local.backend, local.model, local.endpoint) == ("local", D.LOCAL_VLM_MODEL, None)
    assert (api.backend, api.model, api.endpoint) == ("api", D.API_VLM_MODEL, "http://h/v1")
    assert CaptionOptions(vlm_backend="api").endpoint == D.VLM_URL
    assert (ScaleOptions().inflight(local), ScaleOptions().inflight(api)) == (D.INFLIGHT_LOCAL, D.INFLIGHT_SERVER)
    assert ScaleOptions(jobs=7).job_count(api) == 7
    assert OutboxOptions().folder(tmp_path) == tmp_path / "real-time-summarizer" / "outbox"
    assert OutboxOptions(langfuse_outbox="off").folder(tmp_path) is None
    assert TracingOptions().trace_log_path(has_keys=False, output_dir="out") == str(Path("out") / D.TRACE_LOG)
    assert TracingOptions().trace_log_path(has_keys=True) is None
    settings = run_settings(RunConfig(source=SourceOptions(sources=("cam0",)), caption=api))
    assert (settings.inflight, settings.source.any_live) == (D.INFLIGHT_SERVER, True)


def test_the_caption_model_of_each_backend(tmp_path):
    record: list[str] = []
    vlm, endpoint = caption_model(CaptionOptions(vlm_base_url="http://10.0.0.5:8000/v1", vlm_model="m"),
                                  stub_backends(record))
    assert (vlm.args, endpoint) == (("http://10.0.0.5:8000/v1", None, "m"), "http://10.0.0.5:8000/v1")
    local, none = caption_model(CaptionOptions(vlm_model=str(tmp_path)), stub_backends(record))
    assert none is None and type(local).__name__ == "LocalVLM" and local.model == str(tmp_path)
    assert (local.max_new_tokens, local.timeout_s) == (D.VLM_MAX_TOKENS, D.VLM_TIMEOUT_S)
    assert record == ["caption.new"]  # the in-process model is the package's own class
    assert dataclasses.is_dataclass(Backends)
