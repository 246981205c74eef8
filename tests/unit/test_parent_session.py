"""Spans that start after the run's binding exited still get its session, from their parent span.

The ASGI `http send` spans start once the route has returned, outside its `bind_session` block,
under the HTTP server span that `bind_session` stamped: they take the session from it.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from sessiontrace import SessionContext, SessionSpanProcessor, binding
from sessiontrace.attributes import LANGFUSE_SESSION_ID, SESSION_ID, USER_ID

SessionFactory = Callable[..., SessionContext]


def finished(exporter: InMemorySpanExporter, name: str) -> dict[str, object]:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return dict(span.attributes or {})


def test_a_span_started_after_the_binding_exited_gets_the_session_of_its_server_span(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    make_session: SessionFactory,
) -> None:
    session = make_session(tags=("web", "chat"))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("GET /chat", kind=SpanKind.SERVER):
        with binding(session):
            tracer.start_span("work").end()
        tracer.start_span("GET /chat http send").end()

    # The same keys as a span started in the binding; the metadata stays on the root.
    assert finished(exporter, "GET /chat http send") == dict(session.span_attributes)
    assert finished(exporter, "work") == dict(session.span_attributes)
    assert session_processor.spans_without_session == 0


def test_a_span_given_its_parent_in_an_explicit_context_gets_that_parents_session(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: SessionFactory
) -> None:
    session = make_session()
    tracer = provider.get_tracer("test")
    server = tracer.start_span("server", kind=SpanKind.SERVER)
    with trace.use_span(server), binding(session):
        pass

    tracer.start_span("later", context=trace.set_span_in_context(server)).end()
    server.end()

    assert finished(exporter, "later") == dict(session.span_attributes)


def test_a_span_under_a_parent_without_a_session_gets_none_and_is_counted(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER):
        tracer.start_span("GET /healthz http send").end()

    assert SESSION_ID not in finished(exporter, "GET /healthz http send")
    assert session_processor.spans_without_session == 1


def test_a_remote_parent_gives_no_session(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    remote = NonRecordingSpan(
        SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(1))
    )
    provider.get_tracer("test").start_span(
        "server", context=trace.set_span_in_context(remote)
    ).end()

    assert SESSION_ID not in finished(exporter, "server")


def test_the_langfuse_keys_are_inherited_when_another_library_overwrote_session_id(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: SessionFactory
) -> None:
    session = make_session()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("graph") as graph:
        with binding(session):
            pass
        # What OpenInference does with a LangGraph thread_id.
        graph.set_attribute(SESSION_ID, "thread-9")
        tracer.start_span("node").end()

    node = finished(exporter, "node")
    assert node[SESSION_ID] == node[LANGFUSE_SESSION_ID] == session.session_id


def test_under_a_value_length_limit_the_inherited_values_are_cut_as_the_sdk_cuts_them(
    session_processor: SessionSpanProcessor, make_session: SessionFactory
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=12))
    provider.add_span_processor(session_processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    session = make_session(user_id="a-user-id-longer-than-twelve")
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("server"):
        with binding(session):
            tracer.start_span("in the binding").end()
        tracer.start_span("after it").end()

    after = finished(exporter, "after it")
    assert after == finished(exporter, "in the binding")
    assert after[USER_ID] == "a-user-id-lo"


def test_a_span_inheriting_from_a_masking_session_has_its_content_masked(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: SessionFactory
) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /chat", kind=SpanKind.SERVER):
        with binding(make_session(mask_content=True)):
            pass
        tracer.start_span("late llm call", attributes={
            "gen_ai.input.messages": '[{"role":"user","content":"my secret plan"}]',
        }).end()

    content = str(finished(exporter, "late llm call")["gen_ai.input.messages"])
    assert "secret" not in content and '"omitted":"masked"' in content
