"""Helpers for the trace-quality tests: span lookups, SSE parsing, providers that stall or fail."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

from service.llm import ChatMessage, ChunkSink, Completion, LLMError, OfflineProvider

RUN_OUTCOME = "sessiontrace.run.outcome"
LEVEL = "langfuse.observation.level"
ERROR_TYPE = "error.type"


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes (never None)."""
    return span.attributes or {}


def only(spans: Sequence[ReadableSpan], prefix: str) -> ReadableSpan:
    """The one span whose name starts with `prefix`."""
    found = [span for span in spans if span.name.startswith(prefix)]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    """Every span whose name starts with `prefix`."""
    return [span for span in spans if span.name.startswith(prefix)]


def traces(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    """Finished spans grouped by trace id."""
    grouped: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        assert span.context is not None
        grouped.setdefault(format_trace_id(span.context.trace_id), []).append(span)
    return grouped


def outcomes(spans: Sequence[ReadableSpan]) -> list[Any]:
    """Every run outcome recorded in `spans`: one per run, or the run is mis-recorded."""
    return [attributes(span)[RUN_OUTCOME] for span in spans if RUN_OUTCOME in attributes(span)]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


class StallingProvider(OfflineProvider):
    """Streams its first word, then waits until cancelled; `started` is set once it has."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, on_chunk: ChunkSink
    ) -> Completion:
        await on_chunk("Hello ")
        return await self.complete(messages, model=model)


class FailingProvider(OfflineProvider):
    """Every call fails as an unreachable upstream does."""

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        raise LLMError("LLM answered 503 for model 'offline-echo'")


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
