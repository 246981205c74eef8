"""Fixtures for the library's unit tests: an injected provider, never the global one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otlp_receiver import OTLPReceiver, running_otlp_receiver

from sessiontrace import SessionContext, SessionSpanProcessor, derive_user_session_id


@pytest.fixture
def provider(
    exporter: InMemorySpanExporter, session_processor: SessionSpanProcessor
) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(session_processor)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


@pytest.fixture
def make_session() -> Callable[..., SessionContext]:
    def make(**overrides: Any) -> SessionContext:
        fields: dict[str, Any] = {
            "session_id": derive_user_session_id("acme", "thread-1"),
            "user_id": "alice",
            "trace_name": "builtin:chat",
            "metadata": {"run_id": "run-1"},
        }
        fields.update(overrides)
        return SessionContext(**fields)

    return make


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    with running_otlp_receiver() as receiver:
        yield receiver
