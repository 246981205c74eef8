"""The pytest plugin (entry point `pytest11`): fixtures that record spans, to test an app.

pytest loads it; `import sessiontrace` never imports it, or pytest.

    def test_chat_spans_all_have_a_session(sessiontrace_spans):
        app = create_app(tracer_provider=sessiontrace_spans.provider)
        ...  # drive the app
        sessiontrace_spans.assert_every_span_has_a_session()
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from sessiontrace._testing import SpanRecorder

__all__ = ["sessiontrace_global_spans", "sessiontrace_spans"]


@pytest.fixture
def sessiontrace_spans() -> Iterator[SpanRecorder]:
    """A recording TracerProvider of the test's own (SessionSpanProcessor first, strict).

    Hand `sessiontrace_spans.provider` to the application (`instrument_app(app,
    tracer_provider=...)`, your `create_app`), then assert on `sessiontrace_spans.spans`
    or call `sessiontrace_spans.assert_every_span_has_a_session()`.
    """
    recorder = SpanRecorder()
    yield recorder
    recorder.provider.shutdown()


@pytest.fixture(scope="session")
def _sessiontrace_global_recorder() -> SpanRecorder:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        # The application's own global provider: record what its spans really carry.
        return SpanRecorder(current)
    if not isinstance(current, trace.ProxyTracerProvider):
        raise pytest.UsageError(
            f"sessiontrace_global_spans: the global TracerProvider is a "
            f"{type(current).__qualname__}, not the OpenTelemetry SDK's; it cannot be recorded"
        )
    recorder = SpanRecorder()
    trace.set_tracer_provider(recorder.provider)
    return recorder


@pytest.fixture
def sessiontrace_global_spans(_sessiontrace_global_recorder: SpanRecorder) -> SpanRecorder:
    """The spans of OpenTelemetry's global TracerProvider ended during the test.

    For applications that use the global provider (zero-code setup, `trace.get_tracer`,
    instrumentations given no provider). If an SDK provider is global already, the spans it
    ends are recorded as they are, stamped by its own processors or not; if none is, one
    like `sessiontrace_spans`'s becomes the global provider for the rest of the test
    session (OpenTelemetry allows one per process).
    """
    _sessiontrace_global_recorder.clear()
    return _sessiontrace_global_recorder
