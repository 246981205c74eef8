"""What a caller stamps: the span set on every span, the root set with the trace metadata."""

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import CallerContext, bind_caller, io_attributes, set_trace_io
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

MakeCaller = Callable[..., CallerContext]
META = "langfuse.trace.metadata."


def test_every_span_carries_session_user_name_and_tags_under_both_keys(
    make_caller: MakeCaller,
) -> None:
    caller = make_caller(tags=("user", "builtin:chat", "offline", "user"))

    assert dict(caller.span_attributes) == {
        SESSION_ID: caller.session_id,
        LANGFUSE_SESSION_ID: caller.session_id,
        USER_ID: "alice",
        LANGFUSE_USER_ID: "alice",
        LANGFUSE_TRACE_NAME: "builtin:chat",
        LANGFUSE_TRACE_TAGS: ("user", "builtin:chat", "offline"),
    }
    assert not any(key.startswith(META) for key in caller.span_attributes)


def test_the_root_carries_the_trace_metadata_from_the_callers_fields(
    make_caller: MakeCaller,
) -> None:
    attributes = make_caller().root_attributes

    assert attributes[META + "run_id"] == "run-1"
    assert attributes[META + "request_id"] == "req-1"
    assert attributes[META + "graph_id"] == "builtin:chat"
    assert attributes[META + "billing_account_id"] == "acme"
    assert attributes[META + "trigger"] == "user"
    assert META + "schedule_id" not in attributes
    assert attributes[LANGFUSE_TRACE_NAME] == "builtin:chat"


def test_scheduled_trace_metadata_holds_schedule_and_the_callers_own(
    make_caller: MakeCaller,
) -> None:
    caller = make_caller(
        trigger="schedule", schedule_id="governance:community",
        metadata={"grant_id": "g-1", "scheduled_for": "2026-11-23T08:00:00+00:00"},
    )

    attributes = caller.root_attributes
    assert attributes[META + "schedule_id"] == "governance:community"
    assert attributes[META + "grant_id"] == "g-1"
    assert attributes[META + "scheduled_for"] == "2026-11-23T08:00:00+00:00"
    assert attributes[META + "trigger"] == "schedule"


def test_trace_name_defaults_to_the_graph_and_never_exceeds_langfuse_limit(
    make_caller: MakeCaller,
) -> None:
    assert make_caller(trace_name="nightly review").span_attributes[LANGFUSE_TRACE_NAME] == (
        "nightly review"
    )
    long_name = make_caller(graph_id="p:" + "n" * 5000).span_attributes[LANGFUSE_TRACE_NAME]
    assert len(str(long_name)) == 1000


def test_an_empty_tag_is_refused(make_caller: MakeCaller) -> None:
    with pytest.raises(ValueError, match="tags must be non-empty strings"):
        make_caller(tags=("user", ""))


def test_bind_caller_makes_the_open_span_the_root_with_metadata_input_and_output(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_caller: MakeCaller
) -> None:
    caller = make_caller()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /chat"), bind_caller(caller):
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


def test_without_an_open_span_set_trace_io_leaves_the_run_span_to_carry_them(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_caller: MakeCaller
) -> None:
    tracer = provider.get_tracer("t")
    with bind_caller(make_caller()):
        with tracer.start_as_current_span("invoke_agent", attributes=io_attributes(input="in")):
            set_trace_io(input="in", output="out")

    (run,) = exporter.get_finished_spans()
    assert run.attributes is not None
    assert run.attributes[LANGFUSE_OBSERVATION_INPUT] == "in"
    assert LANGFUSE_OBSERVATION_OUTPUT not in run.attributes
