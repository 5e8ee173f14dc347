"""Alerts: how soon a subject entering the scene is notified, and what the rule checks cost a caption.

The real path at live pace: a generated clip (tests.clips.figure_walk at 640x360, 30 fps: a
figure of 1.5 % of the frame walks into a still noisy room at 1.0 s) is decoded first, then
played to the run's own loop (pipeline.SourceRun) as a live camera would deliver it, each
frame handed over at its time. The loop's motion detector (video_summarizer.motion) emits the
``motion`` start; the loop captions that frame at once (the test suite's VLM stand-in, 300 ms
to its first token, through the judged caption model); the notifier and its senders are built
by alerts.setup.build_alerts as the CLI builds them, sending to a local webhook receiver (and
to mosquitto, when installed). Times are taken where the frames are handed over and where the
notifications arrive.

    python -m bench.bench_alerts [--reps 5]     # or: python -m bench.benchmark --only 24
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

FPS = 30.0
SIZE = (640, 360)
SECONDS, ENTER_S = 2.5, 1.0  # the figure walks on past the clip's end (exit at 9 s): one motion start
CAPTION_DELAY_S = 0.3
RULES = ["person:a person walking into the room", "van:/van/", "boss:face=alice", "stranger:unknown-face"]
REPLY = "A person walks in from the left across a plain room.\nALERTS: 1=yes 0.90"
EMPTY = "An empty room with a plain wall.\nALERTS: 1=no 0.95"


def replier(background: np.ndarray):
    """The VLM stand-in's answer to a request: REPLY where the frame sent shows the figure (it differs
    from the empty room), EMPTY where it does not, so the empty first frame matches no rule."""
    from tests.cli_runner import sent_image

    def reply(body: dict) -> str:
        image = sent_image(body)
        if image is None:
            return EMPTY
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.int16)
        empty = cv2.resize(cv2.cvtColor(background, cv2.COLOR_BGR2GRAY), grey.shape[::-1]).astype(np.int16)
        return REPLY if int((np.abs(grey - empty) > 40).sum()) >= 20 else EMPTY

    return reply


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


class PacedCamera:
    """Decoded frames handed to the loop at their times, as a live camera delivers them (wall-clock
    timestamps); ``shown[i]`` is when frame i was handed over (time.monotonic)."""

    live = True
    label = "cam0"
    frames_dropped = 0

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.images = frames
        self.shown: list[float] = []

    def __iter__(self) -> Iterator:
        from video_summarizer.sources import Frame

        t0 = time.monotonic() + 0.05
        for i, image in enumerate(self.images):
            time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
            self.shown.append(time.monotonic())
            now = time.time()
            yield Frame(i, now, now, image)


def _summaries():
    """The summary model: not part of what is measured (the loop's only summary is its final one)."""
    from video_summarizer.backends import SummaryModel
    from video_summarizer.results import SummaryResult

    class Summaries(SummaryModel):
        def generate(self, messages):
            now = time.time()
            return SummaryResult(text="Someone walked in.", success=True, model="none", start_time=now,
                                 end_time=now)

    return Summaries()


def one_run(frames: list[np.ndarray], vlm_url: str, hook, mqtt_port: int | None) -> dict:
    """Play the clip live once through the loop; the monotonic times of motion, first and described."""
    from langfuse_tracker import LangfuseTracker
    from tests.mqtt_broker import Recorder
    from video_summarizer.alerts.setup import build_alerts
    from video_summarizer.options import AlertOptions
    from video_summarizer.outputs import EventWriter
    from video_summarizer.pipeline import PipelineConfig, SourceRun, Stages
    from video_summarizer.selection import FrameSelector
    from vlm_client_module import VLMClient

    notify = (hook.url,) + ((f"mqtt://127.0.0.1:{mqtt_port}/bench",) if mqtt_port is not None else ())
    events, tracker = EventWriter(None), LangfuseTracker()
    client = VLMClient(vlm_url, None, "qwen3")
    client.generate_caption(frames[0], "warm-up")  # a run's first caption comes long before anyone enters
    vlm, notifier = build_alerts(AlertOptions(alerts=tuple(RULES), notify=notify), events, tracker, client)
    out: dict = {}

    def seen(kind: str, record: dict) -> None:
        if kind == "motion" and record["state"] == "start" and "motion" not in out:
            out["motion"], out["motion_frame"] = time.monotonic(), record["frame"]
        elif kind == "caption" and record["frame"] == out.get("motion_frame"):
            out["caption_latency"] = record["latency_ms"] / 1000.0

    events.add_listener(seen)
    rec = Recorder(mqtt_port, "bench/cam0/event").__enter__() if mqtt_port is not None else None
    before = len(hook.received)
    camera = PacedCamera(frames)
    stages = Stages(tracker=tracker, vlm=vlm, summarizer=_summaries(), faces=None, events=events)
    SourceRun(camera, FrameSelector(), stages, PipelineConfig(summary_interval=1e9), session_id="bench",
              stop_event=threading.Event()).run()
    notifier.close()
    got = hook.received[before:]
    out["shown"] = camera.shown
    out["stages"] = [r["body"]["event_type"] for r in got]
    if out["stages"] == ["motion", "described"]:
        out["first"], out["described"] = got[0]["time"], got[1]["time"]
        out["ids_equal"] = got[0]["body"]["id"] == got[1]["body"]["id"]
    if rec is not None:
        msgs = rec.wait_for(lambda m: len(m) >= 2)
        if [json.loads(m.payload)["event_type"] for m in msgs] == ["motion", "described"]:
            out["mqtt_first"], out["mqtt_described"] = msgs[0].at, msgs[1].at
        rec.__exit__(None, None, None)
    tracker.close(deadline_s=1)
    vlm.close()
    return out


def token_cost(vlm_url_plain: str, vlm_url_judged: str) -> tuple[int, int, int, int]:
    """(prompt tokens, output tokens) without and with the rules asked, from the server's usage."""
    from video_summarizer.alerts.judge import Judge, JudgedCaptionModel
    from video_summarizer.alerts.rules import all_rules
    from vlm_client_module import VLMClient

    frame = np.zeros((120, 160, 3), np.uint8)
    plain = VLMClient(vlm_url_plain, None, "qwen3")
    base = plain.generate_caption(frame, plain.build_prompt([]))
    judged = JudgedCaptionModel(VLMClient(vlm_url_judged, None, "qwen3"), Judge(all_rules(RULES, None)))
    asked = judged.generate_caption(frame, judged.build_prompt([]))
    plain.close()
    judged.close()
    return base.input_tokens, base.output_tokens, asked.input_tokens, asked.output_tokens


def check_cost_us(n: int = 2000) -> float:
    """Microseconds of the listener's rule checks for one caption (the answer parsed, 4 rules, spans to the real tracker, no keys)."""
    from langfuse_tracker import LangfuseTracker
    from video_summarizer.alerts.judge import Judge
    from video_summarizer.alerts.notify import Notifier
    from video_summarizer.alerts.rules import all_rules
    from video_summarizer.outputs import EventWriter
    from video_summarizer.results import CaptionResult

    rules = all_rules(RULES, None)
    judge = Judge(rules)
    tracker = LangfuseTracker()
    notifier = Notifier(rules, [], EventWriter(None), tracker, judge=judge)
    reply = CaptionResult(text=REPLY, success=True, model="qwen3", start_time=0.0, end_time=0.0)
    start = time.perf_counter()
    for _ in range(n):  # the answer line parsed and taken off, then the four rules checked and traced
        caption = judge.answer(reply).caption
        notifier.check_rules({"source": "cam0", "caption": caption, "faces": ["bob"], "unknown_faces": 1,
                              "trace_id": "t"})
    return (time.perf_counter() - start) / n * 1e6


def measure(reps: int, row) -> None:
    """The rows, through row(name, measured, target, ok)."""
    from tests.clips import ClipSet
    from tests.fake_openai import FakeOpenAIServer
    from tests.hook_receiver import HookReceiver
    from tests.mqtt_broker import MOSQUITTO, MosquittoBroker

    with tempfile.TemporaryDirectory() as tmp:
        clip = ClipSet(Path(tmp)).figure_walk(fps=FPS, size=SIZE, seconds=SECONDS, enter_s=ENTER_S)
        frames = _frames(clip.path)
        broker = MosquittoBroker(Path(tmp)).start() if MOSQUITTO else None
        try:
            with FakeOpenAIServer(reply_fn=replier(frames[0]), first_chunk_delay=CAPTION_DELAY_S) as srv, \
                    HookReceiver() as hook:
                runs = [one_run(frames, srv.base_url, hook, broker.port if broker else None) for _ in range(reps)]
        finally:
            if broker is not None:
                broker.stop()
    entry = next(i for i, box in enumerate(clip.figure_boxes) if box)  # the figure's first pixels
    for r in runs:
        r["enter"] = r["shown"][entry]
    if not all(r["stages"] == ["motion", "described"] and r["ids_equal"] for r in runs):
        row("24. subject entering → first notification, then its update (same id)",
            f"notifications per run: {[r['stages'] for r in runs]}", "motion, then described", False)
        return _cost_rows(row)
    med = lambda key: statistics.median(r[key] - r["enter"] for r in runs)  # noqa: E731
    first, detect, described = med("first"), med("motion"), med("described")
    latency = statistics.median(r["caption_latency"] for r in runs)
    over = statistics.median(r["described"] - r["motion"] - r["caption_latency"] for r in runs)
    late = sorted({r["motion_frame"] - entry for r in runs})
    row(f"24. subject entering → first notification (webhook): the loop at live 30 fps, 640x360, its motion "
        f"detector (motion start {'/'.join(map(str, late))} read frames after the figure's first pixels, emitted "
        f"{detect * 1000:.0f} ms after they were shown), median of {reps}",
        f"{first * 1000:.0f} ms", "≤ 500 ms", first <= 0.5)
    row("24. subject entering → described notification (same id as the first; nothing else sent); "
        f"caption latency {latency * 1000:.0f} ms", f"{described * 1000:.0f} ms ({over * 1000:.0f} ms past "
        "motion start + caption latency)", "≤ caption latency + 200 ms", described <= latency + 0.2)
    if all("mqtt_first" in r for r in runs):
        mfirst, mdescribed = med("mqtt_first"), med("mqtt_described")
        row("24. the same over MQTT (mosquitto on 127.0.0.1, QoS 1)",
            f"first {mfirst * 1000:.0f} ms; described {mdescribed * 1000:.0f} ms",
            "≤ 500 ms; ≤ caption latency + 200 ms", mfirst <= 0.5 and mdescribed <= latency + 0.2)
    _cost_rows(row)


def _cost_rows(row) -> None:
    """The cost of the rule checks per caption, through row(name, measured, target, ok)."""
    from tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(reply="A person walks in from the left across a plain room.") as plain, \
            FakeOpenAIServer(reply=REPLY) as judged:
        p_in, p_out, j_in, j_out = token_cost(plain.base_url, judged.base_url)
    row("24. cost of the rule checks per caption (1 plain-words rule of 4; the fake server counts words as "
        "tokens, a BPE tokenizer gives about 1.3 a word)",
        f"+{j_in - p_in} prompt tokens ({p_in} → {j_in}, 100 of them the image), +{j_out - p_out} output tokens; "
        f"{check_cost_us():.0f} µs of checks and spans", "no extra model call", True)


def rows(quick: bool = False) -> list[tuple[str, str, str, bool]]:
    """The benchmark table's rows (bench.benchmark --only 24)."""
    out: list[tuple[str, str, str, bool]] = []
    measure(2 if quick else 5, lambda *r: out.append(r))
    return out


def main() -> None:
    """python -m bench.bench_alerts"""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    measure(args.reps, lambda name, measured, target, ok: print(f"{name}: {measured} (target {target}) "
                                                                f"{'yes' if ok else 'NO'}", file=sys.stderr))


if __name__ == "__main__":
    main()
