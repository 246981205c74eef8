"""Fixtures for telemetry unit tests: an injected provider, never the global one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otlp_receiver import OTLPReceiver, running_otlp_receiver

from sessiontrace import CallerContext, SessionSpanProcessor, derive_user_session_id


@pytest.fixture
def provider(
    exporter: InMemorySpanExporter, session_processor: SessionSpanProcessor
) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(session_processor)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


@pytest.fixture
def make_caller() -> Callable[..., CallerContext]:
    def make(**overrides: Any) -> CallerContext:
        fields: dict[str, Any] = {
            "billing_account_id": "acme",
            "user_id": "alice",
            "session_id": derive_user_session_id("acme", "thread-1"),
            "request_id": "req-1",
            "run_id": "run-1",
            "trigger": "user",
            "graph_id": "builtin:chat",
        }
        fields.update(overrides)
        return CallerContext(**fields)

    return make


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    with running_otlp_receiver() as receiver:
        yield receiver
