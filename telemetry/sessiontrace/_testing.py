"""Testing an application for spans without a session: a span recorder and an assertion.

The pytest plugin (sessiontrace._pytest_plugin) hands these out as fixtures; they import
nothing of pytest, so they work under any test runner.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace._processor import SessionSpanProcessor
from sessiontrace.attributes import LANGFUSE_SESSION_ID, SESSION_ID

__all__ = ["SpanRecorder", "assert_every_span_has_a_session"]

# Where Langfuse reads a span's session, first non-empty wins
# (shared/LANGFUSE_OTLP_CONTRACT.md, "Sessions and users").
_SESSION_KEYS = (LANGFUSE_SESSION_ID, SESSION_ID, "gen_ai.conversation.id")


class SpanRecorder:
    """Keeps every span a TracerProvider ends, in memory, to assert on.

    Without `provider` it builds its own: a strict SessionSpanProcessor (its failures
    raise) then the recording; hand `recorder.provider` to the application under test.
    With one (the application's own, or the global one), it only records what that
    provider's spans carry: a provider without SessionSpanProcessor fails the assertion, as
    its spans would go missing from Langfuse's Sessions view. A recorder cannot be taken off
    a provider it was added to; `clear()` forgets what it recorded.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.session_processor: SessionSpanProcessor | None = None
        if provider is None:
            # Tests make many; none should hold an exit handler for the process's lifetime.
            provider = TracerProvider(shutdown_on_exit=False)
            self.session_processor = SessionSpanProcessor(strict=True)
            provider.add_span_processor(self.session_processor)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider = provider

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """The spans ended since the recorder was made or last cleared, in the order they ended."""
        return self.exporter.get_finished_spans()

    def clear(self) -> None:
        """Forget the spans recorded so far."""
        self.exporter.clear()

    def assert_every_span_has_a_session(self, *, session_id: str | None = None) -> None:
        """`assert_every_span_has_a_session` over the recorded spans."""
        assert_every_span_has_a_session(self.spans, session_id=session_id)


def assert_every_span_has_a_session(
    spans: Iterable[ReadableSpan], *, session_id: str | None = None
) -> None:
    """Fail naming every span Langfuse would file under no session, or under two in one trace.

    A span's session is what Langfuse reads: the first non-empty of `langfuse.session.id`,
    `session.id` and `gen_ai.conversation.id`. With `session_id`, a span in any other
    session is named too. No spans at all fails as well: the application did not use the
    recording provider.
    """
    spans = list(spans)
    if not spans:
        raise AssertionError(
            "no spans were recorded: does the application use the recording TracerProvider?"
        )
    problems: list[str] = []
    by_trace: dict[int, dict[str, list[str]]] = {}
    for span in spans:
        found = _session_of(span)
        if found is None:
            problems.append(f"{_describe(span)}: no session")
            continue
        if session_id is not None and found != session_id:
            problems.append(f"{_describe(span)}: session {found!r}, not {session_id!r}")
        trace_id = span.context.trace_id if span.context is not None else 0
        by_trace.setdefault(trace_id, {}).setdefault(found, []).append(span.name)
    for trace_id, sessions in by_trace.items():
        if len(sessions) > 1:
            listed = "; ".join(f"{sid!r}: {', '.join(map(repr, names))}"
                               for sid, names in sessions.items())
            problems.append(f"trace {trace_id:032x} holds {len(sessions)} sessions ({listed})")
    if problems:
        raise AssertionError(
            f"{len(problems)} problem(s) in {len(spans)} spans:\n  " + "\n  ".join(problems)
        )


def _session_of(span: ReadableSpan) -> str | None:
    attributes = span.attributes or {}
    for key in _SESSION_KEYS:
        value = attributes.get(key)
        if value:
            return str(value)
    return None


def _describe(span: ReadableSpan) -> str:
    span_id = f"{span.context.span_id:016x}" if span.context is not None else "?"
    return f"span {span.name!r} ({span.kind.name}, id {span_id})"
