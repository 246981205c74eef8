from collections.abc import Callable

from telemetry import CallerContext, trace_attributes
from telemetry.attributes import LANGFUSE_TRACE_NAME, LANGFUSE_TRACE_TAGS

MakeCaller = Callable[..., CallerContext]
META = "langfuse.trace.metadata."


def test_user_trace_is_named_after_the_graph_with_ids_as_metadata(make_caller: MakeCaller) -> None:
    attributes = trace_attributes(make_caller(tags=("user", "builtin:chat")))
    assert attributes[LANGFUSE_TRACE_NAME] == "builtin:chat"
    assert attributes[LANGFUSE_TRACE_TAGS] == ["user", "builtin:chat"]
    assert attributes[META + "run_id"] == "run-1"
    assert attributes[META + "request_id"] == "req-1"
    assert attributes[META + "graph_id"] == "builtin:chat"
    assert attributes[META + "billing_account_id"] == "acme"
    assert attributes[META + "trigger"] == "user"
    assert META + "schedule_id" not in attributes


def test_scheduled_trace_carries_schedule_and_caller_metadata(make_caller: MakeCaller) -> None:
    caller = make_caller(
        trigger="schedule", schedule_id="governance:community",
        tags=("schedule", "builtin:chat"),
        metadata={"grant_id": "g-1", "scheduled_for": "2026-11-23T08:00:00+00:00"},
    )
    attributes = trace_attributes(caller, extra_tags=("offline", "builtin:chat", "development"))
    assert attributes[META + "schedule_id"] == "governance:community"
    assert attributes[META + "grant_id"] == "g-1"
    assert attributes[META + "scheduled_for"] == "2026-11-23T08:00:00+00:00"
    assert attributes[META + "trigger"] == "schedule"
    assert attributes[LANGFUSE_TRACE_TAGS] == ["schedule", "builtin:chat", "offline", "development"]


def test_trace_name_never_exceeds_langfuse_limit(make_caller: MakeCaller) -> None:
    attributes = trace_attributes(make_caller(graph_id="p:" + "n" * 5000))
    assert len(str(attributes[LANGFUSE_TRACE_NAME])) == 1000
