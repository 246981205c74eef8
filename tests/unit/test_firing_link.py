"""The firing link: the run's span links to the worker's firing span, in another trace."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.firing_link import FIRING_LINK, FIRING_TRACEPARENT_HEADER, firing_headers, link_firing


def tracer_and_exporter() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_the_run_span_links_to_the_firing_span_and_stays_in_its_own_trace() -> None:
    provider, exporter = tracer_and_exporter()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("governance.firing", kind=SpanKind.CLIENT) as firing:
        headers = firing_headers(firing)
    with tracer.start_as_current_span("POST /api/internal/graphs/{graph_id}/runs",
                                      kind=SpanKind.SERVER):
        linked = link_firing({FIRING_TRACEPARENT_HEADER.lower(): headers[FIRING_TRACEPARENT_HEADER]})

    firing_span, run_span = exporter.get_finished_spans()
    assert run_span.parent is None
    assert run_span.context is not None and firing_span.context is not None
    assert linked is not None and linked.span_id == firing_span.context.span_id
    assert run_span.context.trace_id != firing_span.context.trace_id
    (link,) = run_span.links
    assert link.context.trace_id == firing_span.context.trace_id
    assert link.context.span_id == firing_span.context.span_id
    assert link.attributes == {FIRING_LINK: "firing"}


def test_a_missing_or_malformed_header_links_nothing() -> None:
    provider, exporter = tracer_and_exporter()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("run"):
        assert link_firing({}) is None
        assert link_firing({FIRING_TRACEPARENT_HEADER: "not a traceparent"}) is None
        invalid_ids = "00-" + "0" * 32 + "-" + "0" * 16 + "-01"
        assert link_firing({FIRING_TRACEPARENT_HEADER: invalid_ids}) is None

    (run,) = exporter.get_finished_spans()
    assert run.links == ()
