"""DirectOTLPSpanExporter: the SDK's OTLP/HTTP exporter, sending the same bytes more cheaply."""

import logging

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_receiver import OTLPReceiver

import sessiontrace._exporter
from sessiontrace._exporter import DirectOTLPSpanExporter


def some_spans(count: int = 3) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root", attributes={"session.id": "s", "user.id": "u"}):
        for index in range(count - 1):
            tracer.start_span("child", attributes={"index": index}).end()
    return list(exporter.get_finished_spans())


def endpoint(receiver: OTLPReceiver) -> str:
    return receiver.url + "/v1/traces"


def test_sends_the_bytes_the_sdk_exporter_sends(otlp_receiver: OTLPReceiver) -> None:
    spans = some_spans()
    direct = DirectOTLPSpanExporter(endpoint=endpoint(otlp_receiver), headers={"x-h": "1"})
    sdk = OTLPSpanExporter(endpoint=endpoint(otlp_receiver), headers={"x-h": "1"})

    assert direct.encodes_directly
    assert direct.export(spans) is SpanExportResult.SUCCESS
    assert sdk.export(spans) is SpanExportResult.SUCCESS

    (ours, theirs) = otlp_receiver.received
    assert ours == theirs
    assert ours[1] == "application/x-protobuf"


def test_a_refused_batch_is_a_failure(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.status = 400  # not retryable: one attempt
    exporter = DirectOTLPSpanExporter(endpoint=endpoint(otlp_receiver))

    assert exporter.export(some_spans()) is SpanExportResult.FAILURE
    assert len(otlp_receiver.received) == 1


def test_a_batch_over_max_request_size_is_dropped_unsent(
    otlp_receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = DirectOTLPSpanExporter(endpoint=endpoint(otlp_receiver), max_request_size=100)

    with caplog.at_level(logging.WARNING, logger="sessiontrace._exporter"):
        assert exporter.export(some_spans(10)) is SpanExportResult.FAILURE
    assert otlp_receiver.received == []
    assert "exceeds max_request_size 100" in caplog.text


def test_nothing_is_sent_after_shutdown(otlp_receiver: OTLPReceiver) -> None:
    exporter = DirectOTLPSpanExporter(endpoint=endpoint(otlp_receiver))
    exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK

    assert exporter.export(some_spans()) is SpanExportResult.FAILURE
    assert otlp_receiver.received == []


def test_an_sdk_without_the_expected_internals_falls_back_to_its_own_export(
    otlp_receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sessiontrace._exporter, "_SDK_INTERNALS", ("_client", "_renamed_in_2027"))
    spans = some_spans()

    with caplog.at_level(logging.WARNING, logger="sessiontrace._exporter"):
        exporter = DirectOTLPSpanExporter(endpoint=endpoint(otlp_receiver))
    assert not exporter.encodes_directly
    assert "_renamed_in_2027" in caplog.text
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert OTLPSpanExporter(endpoint=endpoint(otlp_receiver)).export(spans) is (
        SpanExportResult.SUCCESS
    )

    (fallback, sdk) = otlp_receiver.received
    assert fallback == sdk
