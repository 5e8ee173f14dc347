"""--metrics-port: /metrics and /healthz read during a CLI run agree with the statistics it prints at
its end; a port in use is one line naming the option before any model loads; /healthz's verdicts.

The CLI runs in a subprocess against the local OpenAI-streaming server (captions slowed so the
run lasts a few seconds, the first two answered 400) and a served summary model whose answers
take 1.5 s, so the run spends its last seconds in the final summary with every frame counter
final: the scrapes of those seconds must equal the printed figures exactly."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_runner import CLI, TEST_PUBLIC_KEY, TEST_SECRET_KEY, CliRun, cli_env, numbered_reply, read_events
from tests.fake_langfuse import FakeLangfuseServer
from tests.fake_openai import FakeOpenAIServer

SUMMARY = "A frame counter climbs on a coloured screen [00:00][00:02]."
TOKEN = "watch-token-for-the-tests-0123456789"  # --metrics-token of the runs here


def free_port() -> int:
    """A port nothing listens on now (the CLI binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0, token: str | None = TOKEN) -> tuple[int, str] | None:
    """(status, body) of GET path on the run's server (with the token as a Bearer); None while nothing listens."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (ConnectionError, urllib.error.URLError, TimeoutError, socket.timeout):
        return None


class LiveRun:
    """The CLI in a subprocess (output to files: no pipe fills up), stopped by its pid if still running."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args, self.env, self.cwd = args, env, cwd
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LiveRun":
        self._out = open(self.cwd / "stdout.txt", "w+")
        self._err = open(self.cwd / "stderr.txt", "w+")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, text=True)
        return self

    def running(self) -> bool:
        """True until the process has exited."""
        return self.proc.poll() is None

    def wait(self, timeout: float = 180) -> CliRun:
        """Wait for the exit; its output."""
        self.proc.wait(timeout=timeout)
        return CliRun(self.proc.returncode, (self.cwd / "stdout.txt").read_text(),
                      (self.cwd / "stderr.txt").read_text())

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its pid
            self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()


def run_args(vlm: FakeOpenAIServer, llm: FakeOpenAIServer, source: Path, port: int, tmp: Path, *more: str) -> list[str]:
    """A run with both models served by the local fakes, faces off, every 0.5 s of video."""
    return [sys.executable, CLI, "--vlm-base-url", vlm.base_url, "--vlm-model", "qwen3",
            "--llm-base-url", llm.base_url, "--llm-model", "mistral-test", "--no-faces",
            "--source", str(source), "--interval", "0.5", "--min-change", "0", "--summary-interval", "2",
            "--max-inflight", "1", "--events", str(tmp / "events.jsonl"), "--metrics-port", str(port),
            "--metrics-token", TOKEN, *more]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def printed_stats(stderr: str, label: str) -> dict[str, int]:
    """The per-source line of the exit statistics, as numbers."""
    line = next(line for line in stderr.splitlines() if line.strip().startswith(f"{label}: frames read"))
    pairs = re.findall(r"([a-z ()]+?) (\d+)(?:,|$)", line.split(":", 1)[1])
    return {name.strip(): int(n) for name, n in pairs}


def printed_model(stderr: str, prefix: str) -> tuple[int, int, dict[str, int]]:
    """(requests, ok, failures by kind) of the exit statistics' VLM or LLM line."""
    m = re.search(rf"^{prefix} \S+: (\d+) requests, (\d+) ok, failures: (.*)$", stderr, re.M)
    fails = {} if m.group(3) == "none" else {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(3))}
    return int(m.group(1)), int(m.group(2)), fails


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory, clips):
    """One CLI run on a numbered clip (4 s, 10 fps: 8 frames selected), scraped every 0.15 s."""
    tmp = tmp_path_factory.mktemp("metrics-run")
    source = tmp / "counter.avi"
    source.write_bytes(clips.numbered(seconds=4.0).path.read_bytes())
    port = free_port()
    scrapes: list[tuple[float, dict]] = []
    healths: list[tuple[int, str]] = []
    with FakeOpenAIServer(reply_fn=numbered_reply, first_chunk_delay=0.4) as vlm, \
            FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",), first_chunk_delay=1.5) as llm, \
            FakeLangfuseServer(public_key=TEST_PUBLIC_KEY, secret_key=TEST_SECRET_KEY) as lf:
        vlm.fail_next(status=400, n=2)  # the first two frames' captions fail: failures by kind
        with LiveRun(run_args(vlm, llm, source, port, tmp), cli_env(tmp, langfuse_url=lf.base_url), tmp) as run:
            deadline = time.monotonic() + 240
            while run.running() and time.monotonic() < deadline:
                got = get(port, "/metrics")
                health = get(port, "/healthz")
                if got is not None and got[0] == 200:
                    scrapes.append((time.monotonic(), samples(got[1])))
                if health is not None:
                    healths.append(health)
                time.sleep(0.15)
            result = run.wait(timeout=30)
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(result=result, scrapes=[s for _, s in scrapes], healths=healths, tmp=tmp,
                           events=read_events(tmp / "events.jsonl"), port=port)


FRAME_METRICS = {"frames read": "summarizer_frames_read_total", "selected": "summarizer_frames_selected_total",
                 "captioned": "summarizer_frames_captioned_total", "failed": "summarizer_caption_failures_total"}


def test_metrics_read_during_the_run_agree_with_the_printed_statistics(watched_run):
    stderr, scrapes = watched_run.result.stderr, watched_run.scrapes
    final = printed_stats(stderr, "counter")
    assert final["selected"] == 8 and final["captioned"] == 6 and final["failed"] == 2, final
    assert len(scrapes) >= 10, len(scrapes)
    # Scraped while captions were still coming: the page shows a run in progress, not only its end.
    midway = [s for s in scrapes if 0 < (value(s, "summarizer_frames_captioned_total", source="counter") or 0)
              < final["captioned"]]
    assert midway, "no scrape between the first caption and the last"
    for printed, name in FRAME_METRICS.items():
        seen = [value(s, name, source="counter") for s in scrapes if value(s, name, source="counter") is not None]
        assert seen == sorted(seen), (name, seen)  # counters never go back
        assert seen[-1] == final[printed], (name, seen[-1], final)  # the final summary's 1.5 s: final
    last = scrapes[-1]
    for reason, printed in (("busy", "dropped (busy)"), ("replaced", "dropped (replaced)")):
        assert value(last, "summarizer_frames_dropped_total", source="counter", reason=reason) == final[printed]
    # Skipped by the interval: every frame read that was not selected (gating is off).
    assert value(last, "summarizer_frames_skipped_total", source="counter", reason="interval") == \
        final["frames read"] - final["selected"]


def test_model_metrics_agree_with_the_printed_model_statistics(watched_run):
    stderr, last = watched_run.result.stderr, watched_run.scrapes[-1]
    requests, ok, failures = printed_model(stderr, "VLM")
    assert (requests, ok) == (8, 6) and sum(failures.values()) == 2, (requests, ok, failures)
    assert value(last, "summarizer_model_requests_total", stage="vlm", model="qwen3") == requests
    for kind, n in failures.items():
        assert value(last, "summarizer_failures_total", stage="vlm", model="qwen3", kind=kind) == n
    captions = [e for e in watched_run.events if e["type"] == "caption"]
    assert len(captions) == ok
    # One TTFT and one latency observation per successful caption; the fake's first chunk waits 0.4 s.
    assert value(last, "summarizer_vlm_ttft_seconds_count", model="qwen3") == ok
    assert value(last, "summarizer_vlm_latency_seconds_count", model="qwen3") == ok
    assert value(last, "summarizer_vlm_ttft_seconds_bucket", model="qwen3", le="0.25") == 0
    assert value(last, "summarizer_vlm_ttft_seconds_bucket", model="qwen3", le="2.5") == ok
    ttft_sum = value(last, "summarizer_vlm_ttft_seconds_sum", model="qwen3")
    assert ttft_sum == pytest.approx(sum(c["ttft_ms"] for c in captions) / 1000.0, abs=0.01)
    # Summaries: the last scrape came during the final one (1.5 s), which is not counted yet.
    llm_requests, llm_ok, _ = printed_model(stderr, "LLM")
    summaries = [e for e in watched_run.events if e["type"] == "summary"]
    assert llm_ok == len(summaries) >= 2
    seen = value(last, "summarizer_llm_latency_seconds_count", model="mistral-test")
    assert seen in (llm_ok - 1, llm_ok), (seen, llm_ok)
    assert value(last, "summarizer_llm_ttft_seconds_bucket", model="mistral-test", le="1.0") == 0
    assert value(last, "summarizer_outage", stage="vlm") == 0  # captions work again after the two 400s
    assert value(last, "summarizer_healthy") == 1


def test_langfuse_delivery_metrics_never_pass_what_the_exit_line_says_was_acknowledged(watched_run):
    m = re.search(r"Langfuse: .*? (\d+)/(\d+) observations and (\d+)/(\d+) scores acknowledged by ",
                  watched_run.result.stderr)  # the close line: the only one stating the final counts
    assert m, watched_run.result.stderr
    spans, scores = int(m.group(1)), int(m.group(3))
    assert spans > 0 and scores > 0
    for name, final in (("summarizer_langfuse_spans_delivered_total", spans),
                        ("summarizer_langfuse_scores_delivered_total", scores)):
        # (absent until the stages are built: the tracker does not exist before)
        seen = [v for v in (value(s, name) for s in watched_run.scrapes) if v is not None]
        assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] <= final, (name, seen[-3:], final)
    # what was traced is counted as it happens: at the last scrape every frame's trace was there
    last = watched_run.scrapes[-1]
    # one trace per selected frame, then the final summary's (the last scrape may come before or after it)
    assert value(last, "summarizer_langfuse_traces_total") in (8, 9)
    assert value(last, "summarizer_langfuse_delivery_outages_total") == 0


def test_healthz_is_200_with_the_source_while_frames_arrive(watched_run):
    healths = watched_run.healths
    ok = [body for status, body in healths if status == 200]
    assert ok, healths[:5]
    assert all(body.startswith("ok\n") and "counter: " in body for body in ok), ok[:3]
    # Before the first source started (the models being checked) it said so; never another 503.
    for status, body in healths:
        assert status == 200 or body.startswith("starting: no source has started reading yet"), body


def test_the_server_is_gone_after_the_run(watched_run):
    assert get(watched_run.port, "/healthz", timeout=2) is None
    assert "Watch page: http://127.0.0.1:" in watched_run.result.stderr


def test_a_port_in_use_is_one_line_naming_the_option_before_any_model_loads(tmp_path, clips):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [sys.executable, CLI, "--vlm-base-url", "http://127.0.0.1:9/v1", "--no-faces",
                "--source", str(clips.numbered().path), "--events", str(tmp_path / "events.jsonl"),
                "--metrics-port", str(port)]
        started = time.monotonic()
        proc = subprocess.run(args, env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        took = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"Error: --metrics-port: port {port} on 127.0.0.1 is in use (another run or service?); "
                     "choose another port"], lines
    assert took < 30 and not (tmp_path / "events.jsonl").exists()  # nothing loaded, nothing written


def test_a_host_that_is_not_this_machines_names_metrics_host(tmp_path, clips):
    args = [sys.executable, CLI, "--vlm-base-url", "http://127.0.0.1:9/v1", "--no-faces",
            "--source", str(clips.numbered().path), "--metrics-port", str(free_port()),
            "--metrics-host", "192.0.2.1"]  # TEST-NET-1: on no interface here
    env = cli_env(tmp_path, SUMMARIZER_METRICS_TOKEN=TOKEN)  # beyond loopback: refused without one
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == \
        ["Error: --metrics-host: 192.0.2.1 is not an address of this machine"]


# -- /healthz's verdicts, on the real RunMetrics and SourceRun with a clock of our own ------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _source_run(label: str):
    from video_summarizer.pipeline import PipelineConfig, SourceRun

    return SourceRun(SimpleNamespace(label=label, live=True), None, None, PipelineConfig(), session_id="s",
                     stop_event=threading.Event())


def test_health_says_why_it_is_unhealthy():
    from video_summarizer.watch.metrics import RunMetrics
    from video_summarizer.outages import OutageMonitor

    clock = Clock()
    metrics = RunMetrics(interval_s=5.0, clock=clock)
    assert metrics.window_s == 180.0
    h = metrics.health()
    assert not h.ok and h.reason.startswith("starting:")
    run = _source_run("cam0")
    metrics.on_source(run)
    run.counters.frames_read = 3
    metrics.sample()
    assert metrics.health().ok  # no caption yet, but the window has not passed since it started
    metrics.on_event("caption", {"source": "cam0", "ttft_ms": 120.0, "latency_ms": 800.0})
    clock.now += 100
    run.counters.frames_read = 20
    h = metrics.health()
    assert h.ok and h.reason == "ok\ncam0: last frame 0 s ago, last caption 1 min 40 s ago"
    # captions keep failing for 3 min while frames still arrive
    monitor = OutageMonitor(__import__("logging").getLogger("t"), failing="{reason}", still="{reason}", back="")
    monitor.failed("server_error: HTTP 503: overloaded")
    metrics.stages = SimpleNamespace(vlm_outage=monitor)
    clock.now += 81
    run.counters.frames_read = 40
    h = metrics.health()
    assert not h.ok
    assert h.reason == "cam0: no caption succeeded for 3 min 1 s (last failure: server_error: HTTP 503: overloaded)"
    # the camera stops delivering too
    clock.now += 200
    assert metrics.health().reason.splitlines() == [
        "cam0: no frame read for 3 min 20 s",
        "cam0: no caption succeeded for 6 min 21 s (last failure: server_error: HTTP 503: overloaded)"]
    # its loop ends: finished, healthy again
    metrics.on_event("stats", {"type": "stats", "time": "t", "source": "cam0", "frames_read": 40, "selected": 9})
    h = metrics.health()
    assert h.ok and h.reason == "ok\ncam0: finished (1 captions)"
    assert metrics.sources() == [("cam0", {"frames_read": 40, "selected": 9}, False)]


def test_a_slow_camera_gets_three_intervals():
    from video_summarizer.watch.metrics import RunMetrics

    assert RunMetrics(interval_s=120.0).window_s == 360.0
