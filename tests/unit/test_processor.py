import logging
from collections.abc import Callable

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import Span, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import SessionContext, SessionSpanProcessor, binding, derive_user_session_id
from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

MakeSession = Callable[..., SessionContext]


def test_every_span_in_a_bound_block_gets_session_and_user(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    caller = make_session()
    tracer = provider.get_tracer("t")
    with binding(caller), tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("child"):
            tracer.start_span("grandchild").end()

    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["child", "grandchild", "root"]
    for span in spans:
        assert span.attributes is not None
        assert span.attributes[SESSION_ID] == caller.session_id
        assert span.attributes[USER_ID] == "alice"


def test_caller_is_read_from_the_parent_context_given_to_start_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    caller = make_session()
    tracer = provider.get_tracer("t")
    with binding(caller):
        captured = otel_context.get_current()
    # Outside the block: only the explicit parent context carries the caller.
    tracer.start_span("later", context=captured).end()

    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[SESSION_ID] == caller.session_id


def test_span_started_from_extracted_headers_falls_back_to_current_session(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    caller = make_session()
    tracer = provider.get_tracer("t")
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with binding(caller):
        tracer.start_span("from-headers", context=extract(headers)).end()

    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.attributes is not None
    assert span.attributes[SESSION_ID] == caller.session_id
    assert span.attributes[USER_ID] == caller.user_id


def test_span_without_caller_gets_no_invented_session_and_is_counted(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.WARNING, logger="sessiontrace._processor"):
        tracer.start_span("orphan-1").end()
        tracer.start_span("orphan-2").end()

    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        assert SESSION_ID not in span.attributes
        assert USER_ID not in span.attributes
    assert session_processor.spans_without_session == 2
    assert session_processor.spans_without_caller == 2  # its name before bind_session
    warnings = [r for r in caplog.records if "ended with no session bound" in r.getMessage()]
    assert len(warnings) == 1, "the missing-session warning is logged once, then only counted"


def test_baggage_cannot_choose_session_or_user(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")
    hostile = extract({"baggage": "session.id=attacker,user.id=mallory"})
    assert baggage.get_baggage("session.id", hostile) == "attacker"

    tracer.start_span("no-caller", context=hostile).end()
    caller = make_session()
    token = otel_context.attach(hostile)
    try:
        with binding(caller):
            tracer.start_span("with-caller").end()
    finally:
        otel_context.detach(token)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["no-caller"].attributes is not None
    assert SESSION_ID not in spans["no-caller"].attributes
    assert spans["with-caller"].attributes is not None
    assert spans["with-caller"].attributes[SESSION_ID] == caller.session_id
    assert spans["with-caller"].attributes[USER_ID] == "alice"


def test_processor_failure_is_swallowed_outside_strict_mode(
    make_session: MakeSession, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenSpan:
        name = "broken"

        def set_attributes(self, *_: object) -> None:
            raise RuntimeError("boom")

    caller = make_session()
    lenient = SessionSpanProcessor()
    with binding(caller), caplog.at_level(logging.ERROR, logger="sessiontrace._processor"):
        lenient.on_start(BrokenSpan())  # type: ignore[arg-type]
    assert any("SessionSpanProcessor failed" in r.getMessage() for r in caplog.records)

    strict = SessionSpanProcessor(strict=True)
    with binding(caller), pytest.raises(RuntimeError, match="boom"):
        strict.on_start(BrokenSpan())  # type: ignore[arg-type]


def test_bind_caller_stamps_the_span_that_was_already_open(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")
    caller = make_session()
    with tracer.start_as_current_span("http server"):
        with binding(caller):
            pass

    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[SESSION_ID] == caller.session_id
    assert span.attributes[USER_ID] == caller.user_id


def test_binding_another_session_inside_a_bound_block_is_refused(
    make_session: MakeSession,
) -> None:
    first = make_session()
    same_session = make_session(metadata={"run_id": "run-2"})
    other = make_session(session_id=derive_user_session_id("acme", "thread-2"))
    with binding(first):
        with binding(same_session) as rebound:
            assert rebound is same_session
        with pytest.raises(ValueError, match="already bound"):
            with binding(other):
                pass


def test_a_session_needs_a_session_id_a_user_and_string_metadata(
    make_session: MakeSession,
) -> None:
    with pytest.raises(ValueError, match="session id"):
        make_session(session_id="")
    with pytest.raises(ValueError, match="user_id"):
        make_session(user_id="")
    with pytest.raises(ValueError, match="trace_name"):
        make_session(trace_name="")
    with pytest.raises(ValueError, match="metadata"):
        make_session(metadata={"attempt": 2})


def test_a_session_is_immutable(make_session: MakeSession) -> None:
    caller = make_session(metadata={"k": "v"}, tags=["a"])
    with pytest.raises(AttributeError):
        caller.session_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        caller.metadata["k"] = "changed"  # type: ignore[index]
    assert caller.tags == ("a",)


def test_current_span_outside_any_provider_is_untouched(make_session: MakeSession) -> None:
    # No recording span: bind_caller must not fail on the non-recording default.
    assert not trace.get_current_span().is_recording()
    with binding(make_session()) as bound:
        assert bound.user_id == "alice"


def test_server_span_stamped_by_bind_caller_is_not_counted_as_missing(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    make_session: MakeSession,
) -> None:
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /api/v1/ai/chat"):
        with binding(make_session()):
            tracer.start_span("run").end()

    assert len(exporter.get_finished_spans()) == 2
    assert session_processor.spans_without_caller == 0


def test_fast_path_stamps_without_the_per_attribute_api(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    make_session: MakeSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pinned SDK must take the measured fast path (bench/processor_overhead.py);
    # if an SDK upgrade changes its internals, this fails and says so.
    def refuse(*_: object) -> None:
        raise AssertionError("the fast path fell back to Span.set_attribute")

    monkeypatch.setattr(Span, "set_attribute", refuse)
    caller = make_session()
    with binding(caller):
        provider.get_tracer("t").start_span("fast", attributes={"k": "v"}).end()

    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {"k": "v", **caller.span_attributes}


def test_a_length_limit_no_stamped_value_reaches_keeps_the_fast_path(
    exporter: InMemorySpanExporter, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the fast path fell back to the per-attribute API")

    monkeypatch.setattr(Span, "set_attributes", refuse)
    limited = TracerProvider(span_limits=SpanLimits(max_attribute_length=4096))
    limited.add_span_processor(SessionSpanProcessor(strict=True))
    limited.add_span_processor(SimpleSpanProcessor(exporter))
    caller = make_session()
    with binding(caller):
        limited.get_tracer("t").start_span("limited").end()

    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == dict(caller.span_attributes)


def test_sdk_attribute_limits_still_apply_to_the_stamped_attributes(
    exporter: InMemorySpanExporter,
    make_session: MakeSession,
) -> None:
    limited = TracerProvider(span_limits=SpanLimits(max_span_attributes=3, max_attribute_length=5))
    limited.add_span_processor(SessionSpanProcessor(strict=True))
    limited.add_span_processor(SimpleSpanProcessor(exporter))
    caller = make_session(user_id="a-very-long-user-id")
    with binding(caller):
        limited.get_tracer("t").start_span("limited", attributes={"k": "v"}).end()

    (span,) = exporter.get_finished_spans()
    # The SDK's own rules: oldest attributes dropped past the count, values truncated.
    assert dict(span.attributes or {}) == {
        LANGFUSE_SESSION_ID: caller.session_id[:5], LANGFUSE_USER_ID: "a-ver",
        LANGFUSE_TRACE_NAME: "built",
    }
    assert span.dropped_attributes == 3


def test_a_server_span_that_never_got_a_caller_is_a_request_without_a_run_not_counted(
    provider: TracerProvider, session_processor: SessionSpanProcessor
) -> None:
    tracer = provider.get_tracer("t")
    tracer.start_span("GET /healthz", kind=trace.SpanKind.SERVER).end()
    assert session_processor.spans_without_caller == 0

    tracer.start_span("work in a thread that lost the caller").end()
    assert session_processor.spans_without_caller == 1


def test_a_session_id_overwritten_by_another_library_is_counted_and_logged_once(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    make_session: MakeSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = make_session()
    tracer = provider.get_tracer("t")
    with binding(caller), caplog.at_level(logging.WARNING, logger="sessiontrace._processor"):
        tracer.start_span("ours").end()
        for _ in range(2):
            # As OpenInference does with a LangGraph thread_id, after span start.
            with tracer.start_as_current_span("openinference") as span:
                span.set_attribute(SESSION_ID, "thread-42")

    assert session_processor.session_conflicts == 2
    warnings = [r for r in caplog.records if "session.id was changed" in r.getMessage()]
    assert len(warnings) == 1
    overwritten = exporter.get_finished_spans()[-1].attributes or {}
    # Langfuse reads langfuse.session.id first: the span stays in the caller's session.
    assert overwritten[LANGFUSE_SESSION_ID] == caller.session_id
