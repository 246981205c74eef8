"""What a caller stamps: the span set on every span, the root set with the trace metadata."""

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import SessionContext, bind_session, binding, current_session, io_attributes, set_trace_io
from sessiontrace.attributes import (
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT,
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_INPUT,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_OUTPUT,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

MakeSession = Callable[..., SessionContext]
META = "langfuse.trace.metadata."


def test_every_span_carries_session_user_name_and_tags_under_both_keys(
    make_session: MakeSession,
) -> None:
    caller = make_session(tags=("user", "builtin:chat", "offline", "user"))

    assert dict(caller.span_attributes) == {
        SESSION_ID: caller.session_id,
        LANGFUSE_SESSION_ID: caller.session_id,
        USER_ID: "alice",
        LANGFUSE_USER_ID: "alice",
        LANGFUSE_TRACE_NAME: "builtin:chat",
        LANGFUSE_TRACE_TAGS: ("user", "builtin:chat", "offline"),
    }
    assert not any(key.startswith(META) for key in caller.span_attributes)


def test_the_root_carries_the_trace_metadata_and_other_spans_do_not(
    make_session: MakeSession,
) -> None:
    session = make_session(metadata={"run_id": "run-1", "schedule_id": "governance:community"})

    assert session.root_attributes[META + "run_id"] == "run-1"
    assert session.root_attributes[META + "schedule_id"] == "governance:community"
    assert session.root_attributes[LANGFUSE_TRACE_NAME] == "builtin:chat"
    assert not [key for key in session.span_attributes if key.startswith(META)]
    # A span given the metadata alone, and stamped with the span set, carries the root set.
    assert {**session.span_attributes, **session.metadata_attributes} == session.root_attributes
    assert all(key.startswith(META) for key in session.metadata_attributes)


def test_without_a_trace_name_or_tags_their_keys_are_left_out(make_session: MakeSession) -> None:
    attributes = make_session(trace_name=None, tags=()).span_attributes

    assert LANGFUSE_TRACE_NAME not in attributes and LANGFUSE_TRACE_TAGS not in attributes
    assert attributes[LANGFUSE_SESSION_ID] == attributes[SESSION_ID]


def test_bind_session_binds_a_generic_session_for_any_app(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /chat"), bind_session(
        session_id="conversation-42", user_id="u-7", trace_name="chat", tags=["web"],
        metadata={"tenant": "acme"},
    ) as session:
        assert current_session() is session
        tracer.start_span("llm call").end()

    spans = {span.name: span.attributes or {} for span in exporter.get_finished_spans()}
    for attributes in spans.values():
        assert attributes[LANGFUSE_SESSION_ID] == attributes[SESSION_ID] == "conversation-42"
        assert attributes[LANGFUSE_USER_ID] == attributes[USER_ID] == "u-7"
        assert attributes[LANGFUSE_TRACE_NAME] == "chat"
        assert attributes[LANGFUSE_TRACE_TAGS] == ("web",)
    assert spans["GET /chat"][META + "tenant"] == "acme"
    assert META + "tenant" not in spans["llm call"]


def test_the_trace_name_never_exceeds_langfuse_limit(make_session: MakeSession) -> None:
    assert make_session(trace_name="nightly review").span_attributes[LANGFUSE_TRACE_NAME] == (
        "nightly review"
    )
    long_name = make_session(trace_name="p:" + "n" * 5000).span_attributes[LANGFUSE_TRACE_NAME]
    assert len(str(long_name)) == 1000


def test_an_empty_tag_is_refused(make_session: MakeSession) -> None:
    with pytest.raises(ValueError, match="tags must be non-empty strings"):
        make_session(tags=("user", ""))


def test_bind_caller_makes_the_open_span_the_root_with_metadata_input_and_output(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    caller = make_session()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /chat"), binding(caller):
        with tracer.start_as_current_span("invoke_agent"):
            set_trace_io(input='{"q":1}')
            set_trace_io(output='{"a":2}')

    spans = {span.name: span.attributes or {} for span in exporter.get_finished_spans()}
    root, run = spans["POST /chat"], spans["invoke_agent"]
    assert root[META + "run_id"] == "run-1"
    assert root[LANGFUSE_OBSERVATION_INPUT] == root[LANGFUSE_TRACE_INPUT] == '{"q":1}'
    assert root[LANGFUSE_OBSERVATION_OUTPUT] == root[LANGFUSE_TRACE_OUTPUT] == '{"a":2}'
    assert LANGFUSE_OBSERVATION_INPUT not in run
    assert run[LANGFUSE_TRACE_NAME] == "builtin:chat"


def test_set_trace_io_with_the_run_span_writes_both_the_root_and_the_run_span_once(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /chat"), binding(make_session()):
        with tracer.start_as_current_span("invoke_agent") as run:
            set_trace_io(input="in", output="out", span=run)
    # Without an open span at bind time, the run span is the root: written once.
    with binding(make_session()), tracer.start_as_current_span("scheduled") as alone:
        set_trace_io(input="in", span=alone)

    spans = {span.name: span.attributes or {} for span in exporter.get_finished_spans()}
    for name in ("POST /chat", "invoke_agent"):
        written = spans[name]
        assert written[LANGFUSE_OBSERVATION_INPUT] == written[LANGFUSE_TRACE_INPUT] == "in"
        assert written[LANGFUSE_OBSERVATION_OUTPUT] == written[LANGFUSE_TRACE_OUTPUT] == "out"
    assert spans["scheduled"][LANGFUSE_TRACE_INPUT] == "in"
    assert LANGFUSE_TRACE_OUTPUT not in spans["scheduled"]


def test_without_an_open_span_set_trace_io_leaves_the_run_span_to_carry_them(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")
    with binding(make_session()):
        with tracer.start_as_current_span("invoke_agent", attributes=io_attributes(input="in")):
            set_trace_io(input="in", output="out")

    (run,) = exporter.get_finished_spans()
    assert run.attributes is not None
    assert run.attributes[LANGFUSE_OBSERVATION_INPUT] == "in"
    assert LANGFUSE_OBSERVATION_OUTPUT not in run.attributes
