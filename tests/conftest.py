"""Fixtures shared by every suite: an in-memory exporter and a strict session processor."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import SessionSpanProcessor


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def session_processor() -> SessionSpanProcessor:
    # Strict: a failure inside the processor surfaces in tests instead of being logged.
    return SessionSpanProcessor(strict=True)
