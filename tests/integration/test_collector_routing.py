"""The real collector routes spans: Langfuse gets run spans only, without request details; the
optional ops pipeline (OPS_OTLP_ENDPOINT) gets every span exactly as the service sent it.

SDK (OTLP/HTTP protobuf) -> bin/otelcol from otel-collector.yaml -> development sink (Langfuse)
and, for the ops pipeline, an in-process OTLP/HTTP capture endpoint.
"""

from __future__ import annotations

import gzip
import re
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devstack.delivery import spans_of_traces, trace_complete
from devstack.otlp import SpanRecord, decode_protobuf
from devstack.processes import free_port, wait_until
from devstack.stack import CollectorHandle, SinkHandle

pytestmark = pytest.mark.integration

CollectorFactory = Callable[..., CollectorHandle]

LANGFUSE_SESSION_ID = "langfuse.session.id"
RUN_ID = "test.run_id"
# What the FastAPI/ASGI instrumentation and older semconv put on a server span: who called, from
# where, with which client, and the URL with its query string.
REQUEST_DETAILS: dict[str, str | int] = {
    "client.address": "203.0.113.7",
    "client.port": 51234,
    "network.peer.address": "203.0.113.7",
    "network.peer.port": 51234,
    "net.peer.ip": "203.0.113.7",
    "net.peer.name": "laptop.example",
    "net.peer.port": 51234,
    "net.sock.peer.addr": "203.0.113.7",
    "net.sock.peer.port": 51234,
    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) test",
    "http.user_agent": "Mozilla/5.0 (X11; Linux x86_64) test",
    "http.url": "http://127.0.0.1:8000/api/v1/ai/chat?token=secret",
    "url.full": "http://127.0.0.1:8000/api/v1/ai/chat?token=secret",
    "url.query": "token=secret",
    "http.target": "/api/v1/ai/chat?token=secret",
    "http.client_ip": "203.0.113.7",
    "http.request.header.x_forwarded_for": "203.0.113.7",
}
KEPT_REQUEST_ATTRIBUTES: dict[str, str | int] = {
    "url.path": "/api/v1/ai/chat",
    "http.route": "/api/v1/ai/chat",
    "http.request.method": "POST",
    "http.response.status_code": 200,
}
# The acceptance rule: no span at Langfuse carries a key containing one of these.
FORBIDDEN_KEY_PARTS = ("peer", "client.address", "user_agent", "http.url", "url.full")
OTLP_SPAN_KIND_SERVER = 2  # SpanRecord.kind is the OTLP enum, not the SDK's SpanKind


@dataclass(frozen=True)
class Traffic:
    """What was sent: a sessionless request span, then one run trace."""

    run_id: str
    sessionless_trace_id: str
    sessionless_span_id: str
    run_trace_id: str
    run_span_ids: frozenset[str]

    @property
    def all_span_ids(self) -> frozenset[str]:
        return self.run_span_ids | {self.sessionless_span_id}


def _hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record_traffic(run_id: str) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    """A 401 server span without a session, and a run trace whose every span has one."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "routing-test"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("routing-test")
    request = REQUEST_DETAILS | KEPT_REQUEST_ATTRIBUTES

    with tracer.start_as_current_span(
        "POST /api/v1/ai/chat",
        kind=SpanKind.SERVER,
        attributes=request | {"http.response.status_code": 401, RUN_ID: run_id},
    ):
        pass
    sessionless = list(recorder.get_finished_spans())

    session_id = f"ba:acme:s:{run_id}"
    identity: dict[str, str | int] = {
        LANGFUSE_SESSION_ID: session_id,
        "session.id": session_id,
        "user.id": "user-1",
        RUN_ID: run_id,
    }
    with tracer.start_as_current_span(
        "POST /api/v1/ai/chat", kind=SpanKind.SERVER, attributes=request | identity
    ):
        with tracer.start_as_current_span("invoke_agent builtin:chat", attributes=identity):
            with tracer.start_as_current_span(
                "chat offline-echo", kind=SpanKind.CLIENT,
                attributes=identity | {"gen_ai.operation.name": "chat", "peer.service": "llm"},
            ):
                pass
    run = list(recorder.get_finished_spans())[len(sessionless):]
    provider.shutdown()
    return sessionless, run


def send_traffic(collector: CollectorHandle) -> Traffic:
    """Export the sessionless span first, in its own request, then the run trace."""
    run_id = uuid.uuid4().hex
    sessionless, run = record_traffic(run_id)
    exporter = OTLPSpanExporter(endpoint=collector.otlp_http_url + "/v1/traces")
    try:
        # The receiver answers only after both pipelines took the request, so once this returns
        # the sessionless span has been through the Langfuse filter, ahead of the run trace.
        assert exporter.export(sessionless) is SpanExportResult.SUCCESS
        assert exporter.export(run) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
    [(sessionless_trace_id, sessionless_span_id)] = [_hex_ids(span) for span in sessionless]
    run_ids = [_hex_ids(span) for span in run]
    [run_trace_id] = {trace_id for trace_id, _ in run_ids}
    return Traffic(
        run_id, sessionless_trace_id, sessionless_span_id, run_trace_id,
        frozenset(span_id for _, span_id in run_ids),
    )


def wait_for_run_trace(sink: SinkHandle, traffic: Traffic) -> list[Mapping[str, Any]]:
    """The run trace, complete at the sink."""

    def complete() -> bool:
        [spans] = spans_of_traces(sink.spans(), [traffic.run_trace_id]).values()
        return trace_complete(spans) and len(spans) >= len(traffic.run_span_ids)

    wait_until(complete, 30, interval=0.2, message="the run trace at the sink")
    return list(spans_of_traces(sink.spans(), [traffic.run_trace_id])[traffic.run_trace_id])


def metric(collector: CollectorHandle, name: str, **labels: str) -> float:
    """Sum of the collector's Prometheus series `name` (with or without _total) matching labels."""
    with urllib.request.urlopen(collector.metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] not in (name, name + "_total"):
            continue
        series = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(series.get(key) == value for key, value in labels.items()):
            total += float(match[3])
    return total


def assert_no_request_details(attributes: Mapping[str, Any]) -> None:
    leaked = [key for key in attributes if any(part in key for part in FORBIDDEN_KEY_PARTS)]
    assert not leaked, f"request details reached Langfuse: {leaked}"
    assert not set(REQUEST_DETAILS) & set(attributes), set(REQUEST_DETAILS) & set(attributes)


@pytest.fixture(autouse=True)
def no_ops_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collectors inherit this process's environment: only a test turns the ops pipeline on."""
    monkeypatch.delenv("OPS_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OPS_QUEUE_BYTES", raising=False)


# --- the ops backend: a minimal OTLP/HTTP capture endpoint ------------------------------------


@dataclass
class OpsCapture:
    """An OTLP/HTTP traces endpoint that records what it receives, or answers `status`."""

    url: str
    status: int = 200
    spans: list[SpanRecord] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> tuple[list[SpanRecord], list[dict[str, str]]]:
        with self.lock:
            return list(self.spans), list(self.headers)


def _capture_handler(capture: OpsCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with capture.lock:
                capture.headers.append({k.lower(): v for k, v in self.headers.items()})
                status = capture.status
                if status == 200 and self.path != "/v1/traces":
                    status = 404
                elif status == 200:
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    capture.spans.extend(decode_protobuf(body))
            self.send_response(status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def ops_capture() -> Iterator[OpsCapture]:
    """The ops backend (Jaeger, Tempo, ...) as a capture endpoint on a free port."""
    port = free_port()
    capture = OpsCapture(url=f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _capture_handler(capture))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield capture
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def spans_by_id(spans: Sequence[SpanRecord]) -> dict[str, SpanRecord]:
    return {span.span_id: span for span in spans}


# --- tests ---------------------------------------------------------------------------------------


def test_langfuse_gets_the_run_trace_without_request_details_and_never_the_sessionless_span(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    traffic = send_traffic(collector)

    spans = wait_for_run_trace(sink, traffic)

    assert {span["span_id"] for span in spans} == traffic.run_span_ids
    for span in spans:
        attributes = span["attributes"]
        assert attributes[LANGFUSE_SESSION_ID] == f"ba:acme:s:{traffic.run_id}"
        assert_no_request_details(attributes)
    [server] = [span for span in spans if span["parent_span_id"] is None]
    for key, value in KEPT_REQUEST_ATTRIBUTES.items():
        assert server["attributes"][key] == value, key
    # The sessionless span reached the collector before the run trace and was dropped there:
    # the sink holds the run trace and nothing else.
    everything = sink.spans()
    assert {span["span_id"] for span in everything} == traffic.run_span_ids
    assert traffic.sessionless_trace_id not in {span["trace_id"] for span in everything}
    assert metric(collector, "otelcol_receiver_accepted_spans") == len(traffic.all_span_ids)
    assert metric(
        collector, "otelcol_processor_filter_spans_filtered", filter="filter/langfuse_runs"
    ) == 1


def test_a_span_with_an_empty_session_is_dropped_before_langfuse(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.otlp_http_url + "/v1/traces"))
    )
    tracer = provider.get_tracer("routing-test")
    # SimpleSpanProcessor: the empty-session span is exported (and filtered) before "run" starts.
    with tracer.start_as_current_span("empty", attributes={LANGFUSE_SESSION_ID: ""}):
        pass
    with tracer.start_as_current_span("run", attributes={LANGFUSE_SESSION_ID: "s"}):
        pass
    provider.shutdown()

    wait_until(
        lambda: any(span["name"] == "run" for span in sink.spans()), 30, message="the run span"
    )
    assert [span["name"] for span in sink.spans()] == ["run"]


def test_without_ops_endpoint_the_ops_pipeline_exports_nothing_and_logs_nothing(
    sink: SinkHandle, collector: CollectorHandle
) -> None:
    traffic = send_traffic(collector)
    wait_for_run_trace(sink, traffic)

    assert metric(collector, "otelcol_exporter_sent_spans", exporter="otlp_http/ops") == 0
    assert metric(collector, "otelcol_exporter_send_failed_spans", exporter="otlp_http/ops") == 0
    assert metric(
        collector, "otelcol_processor_filter_spans_filtered", filter="filter/ops_off"
    ) == len(traffic.all_span_ids)
    log = collector.log()
    assert "otlp_http/ops" not in log and "ops-otlp" not in log
    assert not [line for line in log.splitlines() if "\twarn\t" in line or "\terror\t" in line]


def test_ops_endpoint_gets_every_span_with_its_request_details(
    sink: SinkHandle, collector_factory: CollectorFactory, ops_capture: OpsCapture
) -> None:
    collector = collector_factory(OPS_OTLP_ENDPOINT=ops_capture.url)

    traffic = send_traffic(collector)

    def all_at_ops() -> bool:
        spans, _ = ops_capture.received()
        return traffic.all_span_ids <= set(spans_by_id(spans))

    wait_until(all_at_ops, 30, interval=0.2, message="every span at the ops endpoint")
    spans, headers = ops_capture.received()
    received = spans_by_id(spans)
    assert len(spans) == len(traffic.all_span_ids), "the ops endpoint got a span twice"
    assert LANGFUSE_SESSION_ID not in received[traffic.sessionless_span_id].attributes
    # Both server spans (the 401 and the run's) arrive unredacted.
    servers = [span for span in spans if span.kind == OTLP_SPAN_KIND_SERVER]
    assert {span.span_id for span in servers} >= {traffic.sessionless_span_id}
    assert len(servers) == 2
    for server in servers:
        for key, value in REQUEST_DETAILS.items():
            assert server.attributes[key] == value, key
    # Langfuse's credentials and headers are the Langfuse exporter's alone.
    assert headers and all("authorization" not in h for h in headers)
    assert all("x-langfuse-ingestion-version" not in h for h in headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in headers)

    # The same receiver still feeds Langfuse its filtered, redacted view.
    langfuse = wait_for_run_trace(sink, traffic)
    assert {span["span_id"] for span in langfuse} == traffic.run_span_ids
    for span in langfuse:
        assert_no_request_details(span["attributes"])


def test_a_failing_ops_endpoint_does_not_hold_up_langfuse(
    sink: SinkHandle, collector_factory: CollectorFactory, ops_capture: OpsCapture
) -> None:
    ops_capture.status = 503
    collector = collector_factory(OPS_OTLP_ENDPOINT=ops_capture.url)

    traffic = send_traffic(collector)  # asserts the SDK's exports succeeded

    spans = wait_for_run_trace(sink, traffic)
    assert {span["span_id"] for span in spans} == traffic.run_span_ids
    # The ops exporter is still retrying in the background: it did reach the endpoint.
    wait_until(lambda: ops_capture.received()[1], 30, message="the ops exporter's first attempt")
    assert metric(collector, "otelcol_receiver_refused_spans") == 0
    assert metric(collector, "otelcol_receiver_failed_spans") == 0
    assert collector.process.running()


def test_a_full_ops_queue_neither_fails_the_request_nor_holds_up_langfuse(
    sink: SinkHandle, collector_factory: CollectorFactory, ops_capture: OpsCapture
) -> None:
    # A queue smaller than any request: every hand-over to the ops exporter is rejected.
    collector = collector_factory(OPS_OTLP_ENDPOINT=ops_capture.url, OPS_QUEUE_BYTES="1")

    traffic = send_traffic(collector)  # asserts the SDK's exports succeeded

    spans = wait_for_run_trace(sink, traffic)
    assert {span["span_id"] for span in spans} == traffic.run_span_ids
    wait_until(
        lambda: metric(
            collector, "otelcol_exporter_enqueue_failed_spans", exporter="otlp_http/ops"
        ) == len(traffic.all_span_ids),
        30,
        message="the ops exporter rejecting every span",
    )
    assert ops_capture.received() == ([], [])
    assert metric(collector, "otelcol_receiver_refused_spans") == 0
    assert metric(collector, "otelcol_receiver_failed_spans") == 0
