"""The loop (SourceRun), the runner (runner.Run) and the run command, in this process on stub
stages (tests/stubs.py): a list of frames, scripted caption and summary models, a tracker that
keeps what it is told. Each test runs in well under a second; the real clients, servers and
Langfuse are covered by the end-to-end files."""
from __future__ import annotations

import io
import json
import threading


from tests.stubs import ListEvents, ListSource, RecordingTracker, ScriptedCaptions, ScriptedSummaries, numbered_images
from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
from video_summarizer.selection import FrameSelector


def _stages(captions=None, summaries=None) -> tuple[Stages, ListEvents]:
    events = ListEvents()
    return Stages(tracker=RecordingTracker(), vlm=captions or ScriptedCaptions(lambda n, p: f"Scene {n}."),
                  summarizer=summaries or ScriptedSummaries(), faces=None, events=events), events


def _run(source: ListSource, stages: Stages, *, interval: float = 0.5, summary_interval: float = 1.0,
         inflight: int = 1):
    selector = FrameSelector(interval=interval, min_change=0.0)
    return SourceRun(source, selector, stages, PipelineConfig(summary_interval=summary_interval,
                                                              max_inflight=inflight),
                     session_id="run-1", stop_event=threading.Event()).run()


def test_one_caption_trace_and_score_set_per_selected_frame():
    stages, events = _stages()
    doc = _run(ListSource(numbered_images(20), fps=10, label="cam"), stages)
    captions = events.of("caption")
    assert [c["frame"] for c in captions] == [0, 5, 10, 15]  # one frame per 0.5 s at 10 fps
    assert [c["video_time"] for c in captions] == [0.0, 0.5, 1.0, 1.5]
    assert [c["caption"] for c in captions] == ["Scene 0.", "Scene 1.", "Scene 2.", "Scene 3."]
    assert all(c["source"] == "cam" for c in captions)
    tracker = stages.tracker
    frames = [t for t in tracker.traces if t.name == "frame_processing"]
    assert len(frames) == 4 and {c["trace_id"] for c in captions} == {t.id for t in frames}
    assert all(t.fields["user_id"] == "cam" and t.fields["session_id"] == "run-1" for t in frames)
    caption_gens = [g for _, g in tracker.generations if g.name == "vlm_caption"]
    assert [g.model for g in caption_gens] == ["scripted-vlm"] * 4
    # the TTFT the event carries is the one the generation's stamps give
    assert [round(g.result.ttft_ms) for g in caption_gens] == [round(c["ttft_ms"]) for c in captions] == [10] * 4
    for trace in frames:
        assert {"vlm_success", "vlm_latency_score", "vlm_quality"} <= set(tracker.score_names(trace.id))
    assert doc.stats["selected"] == doc.stats["captioned"] == 4 and doc.stats["frames_read"] == 20
    assert doc.stats["caption_failures"] == 0


def test_summaries_roll_per_window_then_a_final_one():
    summaries = ScriptedSummaries(lambda n, messages: f"Summary {n} [00:00.5].")
    stages, events = _stages(summaries=summaries)
    doc = _run(ListSource(numbered_images(30), fps=10), stages, summary_interval=1.0)
    windows = [s["window"] for s in events.of("summary")]
    # a window closes at the frame that is due (1 s after the window's first), the final one at the end
    assert windows == [[0.0, 1.0], [1.5, 2.0], [2.5, 2.5]]
    assert len(summaries.calls) == 3
    assert [t.name for t in stages.tracker.traces].count("video_summary") == 1  # the final summary's trace
    assert doc.summary == "Summary 2 [00:00.5]."
    assert [g.name for _, g in stages.tracker.generations].count("llm_summary") == len(windows)
    assert doc.stats["summaries"] == len(windows) and doc.stats["summary_failures"] == 0


def test_a_failed_caption_is_an_error_event_and_counted_not_a_caption():
    captions = ScriptedCaptions(lambda n, p: None if n == 1 else f"Scene {n}.")
    stages, events = _stages(captions=captions)
    doc = _run(ListSource(numbered_images(20), fps=10), stages)
    assert [c["frame"] for c in events.of("caption")] == [0, 10, 15]
    errors = events.of("error")
    assert [(e["frame"], e["stage"], e["kind"]) for e in errors] == [(5, "vlm", "server_error")]
    assert doc.stats["caption_failures"] == 1 and doc.stats["captioned"] == 3
    failed = [t.id for t in stages.tracker.traces if t.name == "frame_processing"
              if any(s["name"] == "vlm_success" and s["value"] in (0, 0.0, False) for s in stages.tracker.scores
                     if s["trace_id"] == t.id)]
    assert failed == [errors[0]["trace_id"]]


def test_a_failed_summary_leaves_the_captions_as_the_summary():
    stages, events = _stages(summaries=ScriptedSummaries([None]))
    doc = _run(ListSource(numbered_images(10), fps=10), stages, summary_interval=60)
    assert [e["stage"] for e in events.of("error")] == ["llm"]
    assert doc.stats["summary_failures"] == 1 and doc.summary == "[00:00.0] Scene 0.\n[00:00.5] Scene 1."


def test_a_stopped_run_reads_no_further():
    stages, events = _stages()
    source = ListSource(numbered_images(50), fps=10)
    stop = threading.Event()

    def stop_after_two(n: int, prompt: str) -> str:
        if n == 1:
            stop.set()
        return f"Scene {n}."

    stages.vlm = ScriptedCaptions(stop_after_two)
    doc = SourceRun(source, FrameSelector(interval=0.5, min_change=0.0), stages, PipelineConfig(max_inflight=1),
                    session_id="s", stop_event=stop).run()
    assert doc.interrupted is True
    assert [c["frame"] for c in events.of("caption")] == [0, 5]
    assert source.frames_read < 50


# -- the runner: one stages build for every input, outputs, failures ---------------------------

def test_the_runner_builds_the_stages_once_and_fails_an_input_with_no_frame(tmp_path):
    from video_summarizer.outputs import OutputDir
    from video_summarizer.runner import Input, Run, RunSettings
    from video_summarizer.options import SelectionOptions

    stages, events = _stages()
    built: list[Stages] = []

    def build() -> Stages:
        built.append(stages)
        return stages

    class Stop:
        event = threading.Event()

        def watch(self, source) -> None:
            pass

    run = Run(RunSettings(selection=SelectionOptions(interval=0.5, min_change=0.0), inflight=1), build,
              events, Stop(), OutputDir(str(tmp_path)), batch=True, run_id="r1")
    for name, n in (("a", 10), ("b", 0), ("c", 6)):
        run.run_input(Input(name, name, label=name), ListSource(numbered_images(n), fps=10, label=name))
    assert len(built) == 1
    assert run.result.failed == [("b", "no frame could be decoded")]
    assert [e["source"] for e in events.of("stats")] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.glob("*.summary.json")) == ["a.summary.json", "c.summary.json"]
    doc = json.loads((tmp_path / "a.summary.json").read_text())
    assert [c["frame"] for c in doc["captions"]] == [0, 5] and doc["complete"] is True


# -- the run command, with the stub classes handed in as the CLI hands the named ones ----------

def test_the_run_command_on_a_real_clip_with_stub_models(tmp_path, clips):
    from video_summarizer.app import Backends
    from video_summarizer.app.commands import run_command
    from video_summarizer.options import RunConfig
    from video_summarizer.tracing.settings import LangfuseSettings

    clip = clips.numbered(seconds=2.0)
    made: dict[str, object] = {}

    def caption(endpoint, api_key, model, **kw):
        made["vlm"] = vlm = ScriptedCaptions(lambda n, p: f"Frame {n}.", model=model)
        vlm.base_url = endpoint
        return vlm

    def summary(model, **kw):
        made["llm"] = ScriptedSummaries(["All frames [00:00.0]."], model=model)
        return made["llm"]

    def tracker(**kw):
        made["tracker"] = RecordingTracker(**kw)
        return made["tracker"]

    cfg = RunConfig.from_params(_run_params(sources=(str(clip.path),), vlm_base_url="http://127.0.0.1:9/v1",
                                            interval=1.0, min_change=0.0, no_faces=True,
                                            events=str(tmp_path / "events.jsonl"),
                                            trace_log=str(tmp_path / "trace.jsonl")))
    out, err = io.StringIO(), io.StringIO()
    code = run_command(cfg, Backends(tracker=tracker, caption=caption, summary=summary), LangfuseSettings(),
                       cache_home=tmp_path / "cache", out=out, err=err, install_signals=False)
    assert code == 0, err.getvalue()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in events if e["type"] == "caption"] == [0, 10]
    assert len(made["vlm"].calls) == 2 and made["vlm"].calls[0].frame_shape == (120, 160, 3)
    assert "All frames" in out.getvalue()
    assert "Statistics:" in err.getvalue() and made["tracker"].format_stats() in err.getvalue()
    assert made["vlm"].stats.as_dict()["requests"] == 2
    assert made["tracker"].closed_with == cfg.tracing.flush_timeout
    assert str(made["tracker"].settings["trace_log"].path) == str(tmp_path / "trace.jsonl")


def _run_params(**given) -> dict:
    """The run command's parameters as click would pass them: every option's default, then ``given``."""
    import real_time_summarizer

    command = real_time_summarizer.cli.commands["run"]
    ctx = command.make_context("run", [], resilient_parsing=True)
    return {**ctx.params, **given}
