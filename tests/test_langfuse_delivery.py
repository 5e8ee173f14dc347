"""Langfuse delivery failures: a few clear log lines, not the SDK's line per batch.

DeliveryMonitor on its own with a hand-driven clock; then LangfuseTracker with the real SDK
against the local receiver switched between answering, 500, 401 and a closed port.
"""
from __future__ import annotations

import logging
import json
import re
import socket
import uuid

import pytest

from langfuse_tracker import LangfuseTracker
from tests.fake_langfuse import FakeLangfuseServer, wait_until
from video_summarizer.tracing.delivery import (
    SCORES,
    SPANS,
    CountingSpanExporter,
    Delivery,
    DeliveryMonitor,
    counting_transport,
    http_reason,
    quiet_sdk_delivery_logs,
    score_items,
    short_reason,
)

SECRET = "sk-lf-test-delivery-0123456789"
KEY_ENV = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST",
           "LANGFUSE_TIMEOUT", "LANGFUSE_FLUSH_AT", "LANGFUSE_TRACING_ENABLED")
SDK_LOGGERS = ("langfuse", "opentelemetry")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog, level=logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "video_summarizer.tracing.delivery" and r.levelno >= level]


# -- the monitor --------------------------------------------------------------------------------
def test_an_outage_is_one_line_then_one_every_interval_then_one_when_it_ends(caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.tracing.delivery")
    clock = Clock()
    progress = iter(f"{n}/100 observations acknowledged so far" for n in range(10, 100, 10))
    monitor = DeliveryMonitor("http://lf.example", lambda: next(progress), report_every_s=600,
                              clock=clock)
    monitor.succeeded()
    assert lines(caplog) == [] and not monitor.failing
    for _ in range(500):  # a batch a second for 8 min 20 s: one line
        monitor.failed("Connection refused")
        clock.now += 1
    assert lines(caplog) == ["Langfuse: cannot send to http://lf.example (Connection refused); "
                             "going on without it, said again every 10 min while it lasts"]
    for _ in range(200):  # past 10 min since that line: the next failure says so
        monitor.failed("timed out")
        clock.now += 1
    assert lines(caplog)[1:] == ["Langfuse: sending to http://lf.example still failing after "
                                 "10 min (timed out); 10/100 observations acknowledged so far"]
    clock.now += 30
    monitor.succeeded()
    monitor.succeeded()
    assert lines(caplog)[2:] == ["Langfuse: sending to http://lf.example works again after "
                                 "12 min 10 s of failures"]
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]
    assert monitor.failures == 700 and monitor.outages == 1 and monitor.lines == 3
    assert not monitor.failing and monitor.last_reason == "timed out"


def test_a_flapping_host_prints_at_most_two_lines_an_interval(caplog):
    caplog.set_level(logging.INFO, logger="video_summarizer.tracing.delivery")
    clock = Clock()
    monitor = DeliveryMonitor("http://lf.example", report_every_s=60, clock=clock)
    for _ in range(50):  # fails and recovers every second for 100 s
        monitor.failed("HTTP 502")
        clock.now += 1
        monitor.succeeded()
        clock.now += 1
    said = lines(caplog)
    # t=0: failing, t=1: back; t=60 (next allowed): failing, t=61: back; the rest unsaid
    assert len(said) == 4, said
    assert [s.split(" (")[0].split(";")[0] for s in said] == [
        "Langfuse: cannot send to http://lf.example", "Langfuse: sending to http://lf.example works again after 1 s of failures",
        "Langfuse: cannot send to http://lf.example", "Langfuse: sending to http://lf.example works again after 1 s of failures"]
    assert monitor.outages == 50 and monitor.failures == 50


def test_reasons_are_short_and_say_what_to_do():
    otel = ("Transient error HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with "
            "url: /api/public/otel/v1/traces (Caused by NewConnectionError(\"HTTPConnection(host="
            "'127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] Connection "
            "refused\")) encountered while exporting spans batch, retrying in 0.81s.")
    assert short_reason(otel) == "Connection refused"
    assert short_reason("API error: Failed to send 15 scores to Langfuse. Scores will be dropped. "
                        "Error: [Errno 111] Connection refused") == "Connection refused"
    assert short_reason("Failed to export spans batch code: 401, reason: Unauthorized") == \
        "HTTP 401 Unauthorized: check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY"
    assert short_reason("Failed to export spans batch code: 503, reason: Service Unavailable") == \
        "HTTP 503 Service Unavailable"
    assert short_reason("Transient error HTTPConnectionPool(host='h', port=1): Read timed out. "
                        "(read timeout=2.0) encountered while exporting") == "timed out"
    assert short_reason("x" * 300) == "x" * 117 + "..."
    assert http_reason(403) == "HTTP 403: check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY"
    assert http_reason(500) == "HTTP 500"


# -- the tracker and the SDK --------------------------------------------------------------------
def frames(tracker: LangfuseTracker, n: int) -> None:
    for i in range(n):
        with tracker.create_trace("frame_processing", user_id="cam0") as trace:
            with tracker.create_span(trace.id, "face_recognition"):
                pass
            tracker.log_score(trace.id, "overall_quality", 0.5 + i / 100, score_trace=True)


def sdk_records(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.split(".")[0] in SDK_LOGGERS and r.levelno >= logging.WARNING]


def test_a_host_that_fails_then_recovers_is_two_lines_and_no_sdk_noise(caplog):
    """The periodic line is the monitor's (above); here the SDK's retries of failed batches
    are many failures in a few seconds, and all of them are the one line."""
    caplog.set_level(logging.DEBUG)
    key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    with FakeLangfuseServer(public_key=key, secret_key=SECRET) as srv:
        tracker = LangfuseTracker(public_key=key, secret_key=SECRET, base_url=srv.base_url,
                                  timeout_s=1)
        frames(tracker, 3)
        assert tracker.flush(10) and srv.wait_for(n_scores=3)
        assert lines(caplog) == []
        srv.mode = "500"
        frames(tracker, 3)
        tracker.flush(10)
        assert wait_until(lambda: len(lines(caplog)) == 1, 15)
        assert re.fullmatch(rf"Langfuse: cannot send to {re.escape(srv.base_url)} \(HTTP 500[^)]*\); "
                            r"going on without it, said again every 10 min while it lasts",
                            lines(caplog)[0]), lines(caplog)
        failures = tracker.stats()["delivery_failures"]
        srv.mode = "ok"
        frames(tracker, 3)
        tracker.flush(10)
        assert wait_until(lambda: len(lines(caplog)) == 2, 15)
        assert re.fullmatch(rf"Langfuse: sending to {re.escape(srv.base_url)} works again after "
                            r"\d+ s of failures", lines(caplog)[1]), lines(caplog)
        report = tracker.close(5)
        stats = tracker.stats()
    assert len(lines(caplog)) == 2
    assert sdk_records(caplog) == []  # what the SDK said went to DEBUG, under langfuse_delivery
    debug = [r.getMessage() for r in caplog.records if r.name == "video_summarizer.tracing.delivery"
             and r.levelno == logging.DEBUG]
    assert any("Internal server error" in m or "code: 500" in m for m in debug), debug
    assert failures >= 2  # spans and scores (and their retries) each failed
    assert stats["delivery_outages"] == 1
    assert report.observations == 18 and report.scores == 9
    assert report.observations_delivered >= 12 and report.scores_delivered >= 6  # retried 500s may land
    assert len(srv.spans) == report.observations_delivered


def test_scores_sent_to_a_closed_port_are_counted_on_the_sending_thread(caplog):
    caplog.set_level(logging.INFO)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    tracker = LangfuseTracker(public_key=f"pk-lf-{uuid.uuid4().hex[:12]}", secret_key=SECRET,
                              base_url=host, timeout_s=1)
    # Scores only (a trace id no span of which is sent): the failure is seen by the SDK's
    # score thread alone, through the record the SDK logs there.
    for i in range(5):
        tracker.log_score("ab" * 16, "overall_quality", i / 10, score_trace=True)
    tracker.flush(10)
    assert wait_until(lambda: tracker.stats()["delivery_failures"] >= 1, 15)
    assert lines(caplog) == [f"Langfuse: cannot send to {host} (Connection refused); going on "
                             "without it, said again every 10 min while it lasts"]
    report = tracker.close(3)
    assert sdk_records(caplog) == []
    assert report.scores == 5 and report.scores_delivered == 0 and report.scores_lost == 5
    assert "(Connection refused)" in report.message


def test_rejected_keys_say_which_settings_to_check(caplog):
    caplog.set_level(logging.INFO)
    with FakeLangfuseServer(mode="401") as srv:
        tracker = LangfuseTracker(public_key=f"pk-lf-{uuid.uuid4().hex[:12]}", secret_key=SECRET,
                                  base_url=srv.base_url, timeout_s=1)
        frames(tracker, 2)
        report = tracker.close(5)
    said = lines(caplog)
    assert len(said) == 1 and "check LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY); going on" in said[0], said
    assert sdk_records(caplog) == []
    assert report.completed and report.observations_delivered == 0
    assert report.message.startswith("Langfuse: finished, with sending failing (HTTP 401")


def test_the_exporter_counts_a_failed_try_with_its_reason_but_not_its_own_shutdown(caplog):
    from opentelemetry.sdk.trace.export import SpanExportResult

    caplog.set_level(logging.DEBUG)
    quiet_sdk_delivery_logs()
    exporter_log = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")

    class Inner:  # an OTLP exporter's behaviour: logs each failed try, then answers
        def __init__(self, lines, result):
            self.lines, self.result = lines, result

        def export(self, spans):
            for line in self.lines:
                exporter_log.warning(line)
            return self.result

    delivery = Delivery(DeliveryMonitor("http://lf.example"))
    unacknowledged = []
    delivery.on_unacknowledged = lambda kind, items: unacknowledged.append((kind, list(items)))
    refused = ("Transient error HTTPConnectionPool(host='h', port=1): Max retries exceeded "
               "(Caused by NewConnectionError(\"HTTPConnection(host='h', port=1): Failed to "
               "establish a new connection: [Errno 111] Connection refused\"))")
    failing = CountingSpanExporter(Inner([refused], SpanExportResult.FAILURE), delivery)
    assert failing.export(["a", "b"]) == SpanExportResult.FAILURE
    assert delivery.monitor.failures == 1 and delivery.monitor.last_reason == "Connection refused"
    assert unacknowledged == [(SPANS, ["a", "b"])]  # where an outbox would keep them
    logging.getLogger("langfuse").error("Failed to send: %s", "whatever the SDK says")  # same thread
    assert CountingSpanExporter(Inner([], SpanExportResult.SUCCESS), delivery).export(["c"]) \
        == SpanExportResult.SUCCESS
    assert not delivery.monitor.failing and delivery.acknowledged[SPANS] == 1
    logging.getLogger("langfuse").warning("Error while fetching prompt '%s': %s", "p", "timed out")
    logging.getLogger("langfuse").warning("Item %s has an odd field", 3)  # not about delivery
    delivery.closing = True  # close() under way: the exporter's shutdown is no outage
    CountingSpanExporter(Inner(["Shutdown in progress, aborting retry."],
                               SpanExportResult.FAILURE), delivery).export(["d"])
    assert delivery.monitor.failures == 1 and delivery.unacknowledged[SPANS] == 3
    delivery.close()  # closed: nothing reaches the inner exporter any more
    assert failing.export(["e"]) == SpanExportResult.FAILURE
    assert delivery.unacknowledged[SPANS] == 4 and delivery.acknowledged[SPANS] == 1
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert shown == ["Langfuse: cannot send to http://lf.example (Connection refused); going on "
                     "without it, said again every 10 min while it lasts", "Item 3 has an odd field"]


def test_both_sdks_score_paths_are_counted_by_the_transport():
    import httpx

    v5 = [{"id": "s1", "traceId": "t" * 32, "name": "a", "value": 1.0}]
    v4 = {"batch": [{"id": "e1", "type": "score-create", "body": {"id": "s2", "name": "b"}},
                    {"id": "e2", "type": "trace-create", "body": {}}], "metadata": {}}
    assert score_items("POST", "/api/public/scores", json.dumps(v5).encode()) == v5
    assert [e["body"]["id"] for e in score_items("POST", "/api/public/ingestion",
                                                  json.dumps(v4).encode())] == ["s2"]
    assert score_items("GET", "/api/public/v2/prompts/p", b"") is None
    with FakeLangfuseServer() as srv:
        delivery = Delivery(DeliveryMonitor(srv.base_url))
        with httpx.Client(transport=counting_transport(delivery)) as client:
            assert client.post(srv.base_url + "/api/public/scores", json=v5).status_code == 202
            assert client.post(srv.base_url + "/api/public/ingestion", json=v4).status_code == 207
            client.get(srv.base_url + "/api/public/projects")
            srv.mode = "500"
            client.post(srv.base_url + "/api/public/scores", json=v5)
            delivery.close()
            with pytest.raises(httpx.ConnectError):
                client.post(srv.base_url + "/api/public/scores", json=v5)
        assert [s["id"] for s in srv.scores] == ["s1", "s2"]  # the receiver decodes both paths
    assert delivery.acknowledged[SCORES] == 2 and delivery.unacknowledged[SCORES] == 2
    assert delivery.monitor.last_reason == "HTTP 500"


def test_a_score_acknowledged_twice_is_counted_once():
    """The SDK's late retry and the outbox can both deliver one score: Langfuse keeps one row per
    score id, so the count is of ids, on both score paths and for the outbox's resends."""
    import httpx

    v5 = [{"id": "s1", "traceId": "t" * 32, "name": "a", "value": 1.0},
          {"id": "s2", "traceId": "t" * 32, "name": "b", "value": 0.5}]
    v4 = {"batch": [{"id": "s3-event", "type": "score-create", "body": {"id": "s3", "name": "c"}}]}
    with FakeLangfuseServer() as srv:
        delivery = Delivery(DeliveryMonitor(srv.base_url))
        with httpx.Client(transport=counting_transport(delivery)) as client:
            for _ in range(2):
                assert client.post(srv.base_url + "/api/public/scores", json=v5).status_code == 202
                assert client.post(srv.base_url + "/api/public/ingestion", json=v4).status_code == 207
        assert sorted(srv.score_receipts.values()) == [2, 2, 2]  # each arrived twice
    assert delivery.acknowledged[SCORES] == 3
    delivery.sent(SCORES, 2, ids=["s2", "s4"])  # an outbox file: one id new
    assert delivery.acknowledged[SCORES] == 4
