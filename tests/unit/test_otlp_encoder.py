"""sessiontrace._otlp_encoder writes the very bytes the SDK's protobuf encoder would."""

import logging
import math
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from sessiontrace._exporter import DirectOTLPSpanExporter
from sessiontrace._otlp_encoder import TraceRequestEncoder


def encode_trace_request(spans: Sequence[ReadableSpan]) -> bytes:
    return TraceRequestEncoder().encode(spans)


def sdk_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    encoded: bytes = encode_spans(spans).SerializePartialToString()
    return encoded


def recorded(provider: TracerProvider, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    provider.force_flush()
    return list(exporter.get_finished_spans())


def provider_for(exporter: InMemorySpanExporter, **resource: str) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "svc", **resource}),
        span_limits=SpanLimits(max_attributes=64, max_events=2, max_links=1),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x=y")]),
)

EVERY_VALUE_TYPE: dict[str, AttributeValue] = {
    "str": "plain",
    "str.empty": "",
    "str.unicode": "naïve café – 東京 🚀",
    "str.long": "x" * 200,  # past the 127-byte one-byte length and the pair cache
    "str.huge": "y" * 70_000,  # a three-byte length
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.small": 7,
    "int.big": 2**62,
    "int.negative": -1,
    "int.min": -(2**63),
    "float": 3.25,
    "float.negative": -0.5,
    "float.inf": math.inf,
    "seq.str": ("a", "b", ""),
    "seq.bool": (True, False),
    "seq.int": (1, -2, 300),
    "seq.float": (1.5, 2.0),
    "seq.empty": (),
}


def test_every_attribute_value_type_encodes_as_the_sdk_does(
    exporter: InMemorySpanExporter,
) -> None:
    provider = provider_for(exporter)
    provider.get_tracer("t").start_span("typed", attributes=EVERY_VALUE_TYPE).end()

    spans = recorded(provider, exporter)
    assert encode_trace_request(spans) == sdk_bytes(spans)


def test_a_full_trace_encodes_as_the_sdk_does(exporter: InMemorySpanExporter) -> None:
    provider = provider_for(exporter)
    tracer = provider.get_tracer("service", "1.2.3", schema_url="https://example.com/s",
                                 attributes={"scope.attr": "s"})
    remote = trace.set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
    with tracer.start_as_current_span("server", context=remote, kind=SpanKind.SERVER) as root:
        root.add_event("started", {"step": 1})
        root.add_event("", {})
        root.add_event("dropped, past max_events")
        for kind in SpanKind:
            with tracer.start_as_current_span(f"kind {kind.name}", kind=kind) as child:
                child.set_status(Status(StatusCode.OK))
        linked = tracer.start_span(
            "linked",
            links=[Link(REMOTE_PARENT, {"link.attr": "l"}), Link(root.get_span_context())],
        )
        linked.set_status(Status(StatusCode.ERROR, "it broke"))
        linked.end()
        many = tracer.start_span("too many attributes")
        many.set_attributes({f"k{i}": i for i in range(70)})
        many.end()
    provider.get_tracer("other").start_span("another scope").end()

    spans = recorded(provider, exporter)
    assert len(spans) == 9
    assert encode_trace_request(spans) == sdk_bytes(spans)
    parsed = ExportTraceServiceRequest.FromString(encode_trace_request(spans))
    assert parsed == encode_spans(spans)


def test_equal_keys_with_equal_but_different_values_are_not_confused(
    exporter: InMemorySpanExporter,
) -> None:
    # 1 == 1.0 == True, and ("a",) == ("a",): the cache of encoded pairs must tell them apart.
    provider = provider_for(exporter)
    tracer = provider.get_tracer("t")
    for value in (1, True, 1.0, (1,), (True,), (1.0,), "1", 1, True):
        tracer.start_span("same key", attributes={"k": value}).end()

    spans = recorded(provider, exporter)
    encoder = TraceRequestEncoder()
    for _ in range(2):  # the second time, every cacheable pair comes from the cache
        assert encoder.encode(spans) == sdk_bytes(spans)


def test_spans_of_two_resources_and_equal_scopes_group_as_the_sdk_does(
    exporter: InMemorySpanExporter,
) -> None:
    first = provider_for(exporter, **{"deployment.environment.name": "a"})
    second = provider_for(exporter, **{"deployment.environment.name": "b"})
    for provider in (first, second, first):
        # A tracer per call: equal scopes in distinct objects still share one ScopeSpans.
        provider.get_tracer("t", "1").start_span("s").end()
        provider.get_tracer("u").start_span("s").end()

    spans = recorded(first, exporter) + recorded(second, exporter)
    request = ExportTraceServiceRequest.FromString(encode_trace_request(spans))
    assert [len(r.scope_spans) for r in request.resource_spans] == [2, 2]
    assert encode_trace_request(spans) == sdk_bytes(spans)


def test_an_attribute_that_cannot_be_encoded_is_logged_and_left_out(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    provider = provider_for(exporter)
    provider.get_tracer("t").start_span(
        "overflow", attributes={"before": "kept", "too.big": 2**64, "after": "kept"}
    ).end()

    spans = recorded(provider, exporter)
    with caplog.at_level(logging.ERROR, logger="sessiontrace._otlp_encoder"):
        encoded = encode_trace_request(spans)
    assert encoded == sdk_bytes(spans)
    (span,) = ExportTraceServiceRequest.FromString(encoded).resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in span.attributes] == ["before", "after"]
    assert "too.big" in caplog.text


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_trace_request([]) == sdk_bytes([]) == b""


def many_batches(exporter: InMemorySpanExporter) -> Iterator[list[ReadableSpan]]:
    provider = provider_for(exporter)
    tracer = provider.get_tracer("t")
    for batch in range(3):
        for index in range(3000):  # past the pair cache's size, so it is cleared on the way
            tracer.start_span("s", attributes={"id": f"{batch}-{index}", "n": index}).end()
        yield recorded(provider, exporter)
        exporter.clear()


def test_the_pair_cache_stays_correct_when_it_fills_up(exporter: InMemorySpanExporter) -> None:
    encoder = TraceRequestEncoder()
    for spans in many_batches(exporter):
        assert encoder.encode(spans) == sdk_bytes(spans)


def test_without_pair_reuse_the_bytes_are_the_same(exporter: InMemorySpanExporter) -> None:
    provider = provider_for(exporter)
    provider.get_tracer("t").start_span("typed", attributes=EVERY_VALUE_TYPE).end()

    spans = recorded(provider, exporter)
    assert TraceRequestEncoder(reuse_pairs=False).encode(spans) == sdk_bytes(spans)


def test_an_encoder_that_pauses_every_n_spans_pauses_that_often_and_writes_the_same_bytes(
    exporter: InMemorySpanExporter,
) -> None:
    provider = provider_for(exporter)
    tracer = provider.get_tracer("t")
    for index in range(70):
        tracer.start_span(f"span {index}", attributes={"n": index}).end()
    spans = recorded(provider, exporter)
    pauses = []

    encoded = TraceRequestEncoder(pause_every=32, pause=lambda: pauses.append(1)).encode(spans)

    # After span 32 and span 64 of 70: the GIL is handed over twice within the batch.
    assert len(pauses) == 2
    assert encoded == sdk_bytes(spans)


def test_the_exporter_gives_up_the_gil_every_32_spans_of_a_batch(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = provider_for(exporter)
    tracer = provider.get_tracer("t")
    for index in range(512):
        tracer.start_span(f"span {index}").end()
    spans = recorded(provider, exporter)
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)

    data = DirectOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces").encode_request(spans)

    # time.sleep(0) releases the GIL: a request handler waits for 32 spans' encoding at most.
    assert sleeps == [0] * 16
    assert data == sdk_bytes(spans)
    with pytest.raises(ValueError, match="pause_every must be at least 1, got 0"):
        TraceRequestEncoder(pause_every=0)
