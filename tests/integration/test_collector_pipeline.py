"""The real collector, run from otel-collector.yaml, delivers under Langfuse's contract.

SDK (OTLP/HTTP) -> bin/otelcol -> development sink, each a separate process on free ports.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from devstack.processes import wait_until
from devstack.report import sessions_report
from devstack.stack import COLLECTOR_CONFIG, CollectorHandle, SinkHandle

pytestmark = pytest.mark.integration

RUN_ID = "test.run_id"
HEX_TRACE_ID = re.compile(r"[0-9a-f]{32}")
HEX_SPAN_ID = re.compile(r"[0-9a-f]{16}")
MAX_LANGFUSE_REQUEST_BYTES = 5 * 1000 * 1000
CollectorFactory = Callable[..., CollectorHandle]


def send_runs(
    collector: CollectorHandle, *, runs: int, spans_per_run: int, payload_bytes: int = 0
) -> tuple[str, set[str]]:
    """Export `runs` traces of `spans_per_run` spans each, every span with session and user.

    Returns the unique run id stamped on every span and the hex ids of the spans sent.
    """
    run_id = uuid.uuid4().hex
    provider = TracerProvider(resource=Resource.create({"service.name": "pipeline-test"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.otlp_http_url + "/v1/traces"))
    )
    tracer = provider.get_tracer("pipeline-test")
    sent: set[str] = set()
    for run in range(runs):
        session_id = f"ba:acme:s:{run_id}-{run}"
        # langfuse.session.id: the collector sends Langfuse only spans of runs, which carry it.
        identity = {
            "langfuse.session.id": session_id, "session.id": session_id,
            "user.id": "user-1", RUN_ID: run_id,
        }
        with tracer.start_as_current_span("invoke_agent builtin:chat", attributes=identity) as root:
            sent.add(format(root.get_span_context().span_id, "016x"))
            for index in range(spans_per_run - 1):
                attributes = dict(identity)
                if payload_bytes:
                    attributes["langfuse.observation.input"] = os.urandom(payload_bytes // 2).hex()
                with tracer.start_as_current_span(f"node {index}", attributes=attributes) as span:
                    sent.add(format(span.get_span_context().span_id, "016x"))
    assert provider.force_flush(30_000), "the SDK could not hand the spans to the collector"
    provider.shutdown()
    return run_id, sent


def received(sink: SinkHandle, run_id: str) -> list[dict[str, Any]]:
    return [span for span in sink.spans() if span["attributes"].get(RUN_ID) == run_id]


def test_spans_arrive_with_session_user_hex_ids_basic_auth_gzip_and_ingestion_version_4(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    run_id, sent = send_runs(collector, runs=3, spans_per_run=4)

    wait_until(lambda: len(received(sink, run_id)) >= len(sent), 30, message="12 spans at the sink")
    spans = received(sink, run_id)
    assert {span["span_id"] for span in spans} == sent and len(spans) == len(sent)
    for span in spans:
        attributes = span["attributes"]
        assert attributes["session.id"].startswith("ba:acme:s:" + run_id)
        assert attributes["user.id"] == "user-1"
        assert HEX_TRACE_ID.fullmatch(span["trace_id"]) and HEX_SPAN_ID.fullmatch(span["span_id"])
        assert span["auth_ok"] is True
        assert span["content_type"] == "application/x-protobuf"
        assert span["content_encoding"] == "gzip"
        assert span["ingestion_version"] == "4"
    roots = [span for span in spans if span["parent_span_id"] is None]
    assert len(roots) == 3 and len({span["trace_id"] for span in spans}) == 3
    # One trace never holds two sessions.
    for trace_id in {span["trace_id"] for span in spans}:
        sessions = {s["attributes"]["session.id"] for s in spans if s["trace_id"] == trace_id}
        assert len(sessions) == 1
    assert set(sink.stats()["requests"]) == {"200"}
    # The collector's own metrics count what it sent.
    with urllib.request.urlopen(collector.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    assert re.search(r'otelcol_exporter_sent_spans\S*\{[^}]*exporter="otlp_http/langfuse"', metrics)
    report = sessions_report(sink.db)
    assert [(s.traces, s.spans, s.users) for s in report.sessions] == [(1, 4, ("user-1",))] * 3
    assert report.spans_without_session == 0


def test_large_exports_are_split_into_requests_well_under_langfuse_5_mb(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    # About 9 MB of incompressible attributes in one SDK export.
    run_id, sent = send_runs(collector, runs=1, spans_per_run=300, payload_bytes=30_000)

    wait_until(lambda: len(received(sink, run_id)) >= len(sent), 60, message="all 300 spans")
    assert {span["span_id"] for span in received(sink, run_id)} == sent
    accepted = [request for request in sink.requests() if request["status"] == 200]
    assert len(accepted) >= 3, "the collector should batch by bytes, not send one huge request"
    assert max(request["body_bytes"] for request in accepted) < MAX_LANGFUSE_REQUEST_BYTES / 2


def test_no_span_is_lost_when_langfuse_is_down_and_the_collector_restarts(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    sink.set_fault(503)
    run_id, sent = send_runs(collector, runs=5, spans_per_run=6)

    # The collector holds the spans and keeps retrying against the failing endpoint.
    def rejected_503() -> int:
        return int(sink.stats()["requests"].get("503", 0))

    wait_until(lambda: rejected_503() >= 2, 30, message="the collector retrying against a 503")
    assert collector.stop() == 0, collector.process.describe()
    collector.restart()
    # After the restart the queue is read back from disk and retried: still 503, still kept.
    retries_before_restart = rejected_503()
    wait_until(
        lambda: rejected_503() > retries_before_restart + 1,
        30,
        message="the restarted collector retrying its persisted queue",
    )
    assert received(sink, run_id) == []

    sink.set_fault(None)

    wait_until(
        lambda: len(received(sink, run_id)) >= len(sent), 60, message=f"{len(sent)} spans"
    )
    spans = received(sink, run_id)
    assert {span["span_id"] for span in spans} == sent, "spans were lost"
    assert len(spans) == len(sent), "spans were delivered twice"
    # On shutdown the exporter logs "Dropping data ... interrupted due to shutdown" although the
    # persistent queue keeps the batch (delivered above); a permanent error would really lose it.
    assert "Permanent error" not in collector.log()


def test_wrong_keys_get_401_which_the_collector_logs_as_dropped_data(
    sink: SinkHandle, collector_factory: CollectorFactory
) -> None:
    collector = collector_factory(LANGFUSE_SECRET_KEY="sk-lf-wrong")

    run_id, _ = send_runs(collector, runs=1, spans_per_run=2)

    wait_until(
        lambda: "401" in collector.log() and "Dropping data" in collector.log(),
        30,
        message="the collector logging the 401",
    )
    [line] = [line for line in collector.log().splitlines() if "Dropping data" in line]
    assert "HTTP Status Code 401" in line and '"dropped_items": 2' in line
    assert [(r["status"], r["auth_ok"]) for r in sink.requests()] == [(401, False)]
    assert received(sink, run_id) == []
    assert collector.process.running(), "a rejected export must not stop the collector"


def test_the_production_config_validates_with_its_variables_set(
    collector_binary: Path, tmp_path: Path
) -> None:
    env = os.environ | {
        "LANGFUSE_HOST": "https://cloud.langfuse.com",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-validate",
        "LANGFUSE_SECRET_KEY": "sk-lf-validate",
        "OTELCOL_QUEUE_DIR": str(tmp_path / "queue"),
    }

    def validate(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [str(collector_binary), "validate", "--config", str(COLLECTOR_CONFIG), *extra]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    valid = validate()
    assert valid.returncode == 0, valid.stdout + valid.stderr
    # The same check rejects a misspelt key, so a passing validate means something.
    misspelt = validate("--config", "yaml:exporters::otlp_http/langfuse::compresion: gzip")
    assert misspelt.returncode != 0 and "compresion" in misspelt.stderr
