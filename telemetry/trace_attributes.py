"""Trace-level attributes Langfuse reads from a span: name, tags and metadata of the run."""

from __future__ import annotations

from opentelemetry.util.types import AttributeValue

from telemetry.attributes import (
    LANGFUSE_TRACE_METADATA_PREFIX,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
)
from telemetry.context import CallerContext

__all__ = ["MAX_TRACE_NAME_LENGTH", "trace_attributes"]

# Langfuse drops a trace whose name is longer, and its session with it.
MAX_TRACE_NAME_LENGTH = 1000


def trace_attributes(
    caller: CallerContext, *, extra_tags: tuple[str, ...] = ()
) -> dict[str, AttributeValue]:
    """Name, tags and metadata of the caller's trace, for the run's root span.

    The name is the graph id; metadata always holds the run, request, graph,
    billing account, trigger and (when scheduled) schedule ids, then the
    caller's own metadata. Tags keep their first-seen order, without repeats.
    """
    metadata: dict[str, str] = {
        "run_id": caller.run_id,
        "request_id": caller.request_id,
        "graph_id": caller.graph_id,
        "billing_account_id": caller.billing_account_id,
        "trigger": caller.trigger,
    }
    if caller.schedule_id is not None:
        metadata["schedule_id"] = caller.schedule_id
    metadata.update(caller.metadata)
    attributes: dict[str, AttributeValue] = {
        LANGFUSE_TRACE_NAME: caller.graph_id[:MAX_TRACE_NAME_LENGTH],
        LANGFUSE_TRACE_TAGS: list(dict.fromkeys((*caller.tags, *extra_tags))),
    }
    for key, value in metadata.items():
        attributes[f"{LANGFUSE_TRACE_METADATA_PREFIX}{key}"] = value
    return attributes
