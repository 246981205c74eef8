"""The thread recipe with contrib's ThreadingInstrumentor: every handoff keeps the session.

Not collected by `make test` (the name does not start with test_): the dev venv cannot hold
opentelemetry-instrumentation-threading, whose only release for OpenTelemetry 0.66 (0.66b1) pins
opentelemetry-instrumentation 0.66b1 while the service's FastAPI instrumentation is 0.66b2.
scripts/check-library.sh installs it beside the library's wheel and runs this file by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.instrumentation.threading import (  # type: ignore[import-not-found,unused-ignore]
    ThreadingInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import SessionContext, SessionSpanProcessor
from test_threads import HANDOFFS, _assert_in_the_session_and_trace, _run_handoff, _work

MakeSession = Callable[..., SessionContext]


@pytest.fixture
def threading_instrumented() -> Iterator[None]:
    instrumentor = ThreadingInstrumentor()
    instrumentor.instrument()
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.mark.parametrize("handoff", HANDOFFS)
def test_threading_instrumentor_keeps_the_session_and_trace_in_every_thread(
    handoff: str,
    threading_instrumented: None,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    make_session: MakeSession,
) -> None:
    session = make_session()
    _run_handoff(handoff, _work(provider), session, provider)

    _assert_in_the_session_and_trace(exporter, session)
    assert session_processor.spans_without_session == 0
