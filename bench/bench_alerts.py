"""Alerts: how soon a subject entering the scene is notified, and what the rule checks cost a caption.

A generated clip (tests.clips.figure_crossing at 30 fps: a figure walks in at 1.0 s) is played
at live pace (each frame presented at its time). Until the motion detector lands (issue 22),
the trigger is a plain frame difference against the first frame (blurred grey, a pixel changed
by more than 20 levels, 0.2 % of the frame) that emits the same ``motion`` start event the
detector will; on it the frame is captioned by the test suite's VLM stand-in (300 ms to its
first token) through the judged caption model, as a live run takes a motion-start frame. The
notifier sends to a local webhook receiver (and to mosquitto, when installed); the times are
taken where they arrive.

    python -m bench.bench_alerts [--reps 5]     # or: python -m bench.benchmark --only 24
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

FPS = 30.0
ENTER_S = 1.0
CAPTION_DELAY_S = 0.3
DIFF_LEVEL, DIFF_SHARE = 20, 0.002
RULES = ["person:a person walking into the room", "van:/van/", "boss:face=alice", "stranger:unknown-face"]
REPLY = "A person walks in from the left across a plain room.\nALERTS: 1=yes 0.90"


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


class DiffTrigger:
    """Motion start by frame difference against the first frame (the stand-in for the motion detector)."""

    def __init__(self) -> None:
        self.background: np.ndarray | None = None
        self.moving = False

    def update(self, image: np.ndarray) -> bool:
        """True on the frame where motion starts."""
        grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.int16)
        if self.background is None:
            self.background = grey
            return False
        share = float((np.abs(grey - self.background) > DIFF_LEVEL).mean())
        started = share > DIFF_SHARE and not self.moving
        self.moving = share > DIFF_SHARE
        return started


def one_run(frames: list[np.ndarray], vlm_url: str, hook, mqtt_port: int | None) -> dict:
    """Play the clip live once; the wall times of entry, first and described notification."""
    from tests.mqtt_broker import Recorder
    from video_summarizer.alerts.delivery import Sender
    from video_summarizer.alerts.judge import Judge, JudgedCaptionModel
    from video_summarizer.alerts.mqtt import MqttTarget, parse_broker_url
    from video_summarizer.alerts.notify import Notifier
    from video_summarizer.alerts.rules import all_rules
    from video_summarizer.alerts.webhook import WebhookTarget
    from video_summarizer.outputs import EventWriter
    from vlm_client_module import VLMClient

    rules = all_rules(RULES, None)
    judge = Judge(rules)
    vlm = JudgedCaptionModel(VLMClient(vlm_url, None, "qwen3"), judge)
    vlm.inner.generate_caption(frames[0], "warm-up")  # a run's first caption comes long before anyone enters
    events = EventWriter(None)
    notifier = Notifier(rules, [], events, _NoTracker(), judge=judge)
    notifier.senders.append(Sender(WebhookTarget(hook.url, "bench"), notifier.outcome).start())
    rec = None
    if mqtt_port is not None:
        notifier.senders.append(Sender(MqttTarget(parse_broker_url(f"mqtt://127.0.0.1:{mqtt_port}/bench"),
                                                  rules, motion=True), notifier.outcome).start())
        rec = Recorder(mqtt_port, "bench/cam0/event").__enter__()
    events.add_listener(notifier.listen)
    before = len(hook.received)
    trigger, out, workers = DiffTrigger(), {}, []
    enter_index = next(i for i in range(len(frames)) if i / FPS > ENTER_S)
    t0 = time.monotonic()
    for i, image in enumerate(frames):
        time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))  # presented at its time, as a camera would
        if i == enter_index:
            out["enter"] = time.monotonic()
        if trigger.update(image) and "motion" not in out:
            out["motion"] = time.monotonic()
            events.emit("motion", source="cam0", state="start", video_time=round(i / FPS, 3), frame=i)
            w = threading.Thread(target=_caption, args=(vlm, image, i, events, out))
            w.start()
            workers.append(w)
    for w in workers:
        w.join()
    got = hook.wait_for(before + 2, timeout_s=10)[before:]
    out["first"], out["described"] = got[0]["time"], got[1]["time"]
    out["ids_equal"] = got[0]["body"]["id"] == got[1]["body"]["id"]
    if rec is not None:
        msgs = rec.wait_for(lambda m: len(m) >= 2)
        out["mqtt_first"], out["mqtt_described"] = msgs[0].at, msgs[1].at
        rec.__exit__(None, None, None)
    notifier.close()
    vlm.close()
    return out


def _caption(vlm, image, index: int, events, out: dict) -> None:
    result = vlm.generate_caption(image, vlm.build_prompt([]))
    out["caption_latency"] = result.latency_ms / 1000.0
    out["usage"] = (result.input_tokens, result.output_tokens)
    events.emit("caption", source="cam0", frame=index, video_time=round(index / FPS, 3), faces=[],
                unknown_faces=0, caption=result.caption, trace_id="bench")


class _NoTracker:
    def record_span(self, trace_id, span):
        from video_summarizer.tracing.records import Recorded

        return Recorded(None, None)

    def log_score(self, *a, **k) -> None:
        pass


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
        clip = ClipSet(Path(tmp)).figure_crossing(fps=FPS, seconds=4.0, enter_s=ENTER_S, exit_s=3.5)
        frames = _frames(clip.path)
        broker = MosquittoBroker(Path(tmp)).start() if MOSQUITTO else None
        try:
            with FakeOpenAIServer(reply=REPLY, first_chunk_delay=CAPTION_DELAY_S) as srv, HookReceiver() as hook:
                runs = [one_run(frames, srv.base_url, hook, broker.port if broker else None) for _ in range(reps)]
        finally:
            if broker is not None:
                broker.stop()
    first = statistics.median(r["first"] - r["enter"] for r in runs)
    detect = statistics.median(r["motion"] - r["enter"] for r in runs)
    described = statistics.median(r["described"] - r["enter"] for r in runs)
    latency = statistics.median(r["caption_latency"] for r in runs)
    over = statistics.median(r["described"] - r["motion"] - r["caption_latency"] for r in runs)
    row(f"24. subject entering → first notification (webhook), live 30 fps, frame-difference trigger "
        f"(detected {detect * 1000:.0f} ms after entry), median of {reps}",
        f"{first * 1000:.0f} ms", "≤ 500 ms", first <= 0.5)
    row(f"24. subject entering → described notification, same id ({all(r['ids_equal'] for r in runs)}); "
        f"caption latency {latency * 1000:.0f} ms", f"{described * 1000:.0f} ms; {over * 1000:.0f} ms past "
        "motion + caption latency", "≤ caption latency + 200 ms after motion", over <= 0.2)
    if all("mqtt_first" in r for r in runs):
        mfirst = statistics.median(r["mqtt_first"] - r["enter"] for r in runs)
        mover = statistics.median(r["mqtt_described"] - r["motion"] - r["caption_latency"] for r in runs)
        row("24. the same over MQTT (mosquitto on 127.0.0.1, QoS 1)",
            f"first {mfirst * 1000:.0f} ms; described {mover * 1000:.0f} ms past motion + caption latency",
            "≤ 500 ms; ≤ 200 ms", mfirst <= 0.5 and mover <= 0.2)
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
