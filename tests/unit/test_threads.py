"""Threads: which ways of handing work to a thread keep the bound session, and the recipes that do.

A new thread starts with an empty context: `threading.Thread`, `threading.Timer`, a plain
`ThreadPoolExecutor` and `loop.run_in_executor(None, ...)` lose the session and the current span,
so the thread's spans land in a trace of their own, without a session. `asyncio.to_thread` copies
the context. The fixes: contrib's `ThreadingInstrumentor` (package
opentelemetry-instrumentation-threading) for all four, `sessiontrace.ContextPropagatingExecutor`
for pools and the default executor, `contextvars.copy_context().run` for a single thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import ContextPropagatingExecutor, SessionContext, SessionSpanProcessor, binding
from sessiontrace.attributes import LANGFUSE_SESSION_ID, SESSION_ID

MakeSession = Callable[..., SessionContext]
# What a thread is handed: the work, which starts and ends one span named "work".
Handoff = Callable[[Callable[[], None]], None]

# From Python 3.14 a free-threaded build starts threads in a copy of the caller's context.
THREADS_INHERIT_CONTEXT = bool(getattr(sys.flags, "thread_inherit_context", 0))


def _thread(work: Callable[[], None]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def _timer(work: Callable[[], None]) -> None:
    timer = threading.Timer(0.0, work)
    timer.start()
    timer.join()


def _own_pool(work: Callable[[], None]) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(work).result()


# The threads of the loop's default executor, in async code.
IN_EXECUTOR = "run_in_executor(None)"
SYNC_HANDOFFS: dict[str, Handoff] = {
    "threading.Thread": _thread,
    "threading.Timer": _timer,
    "ThreadPoolExecutor.submit": _own_pool,
}
HANDOFFS = (*SYNC_HANDOFFS, IN_EXECUTOR)


def _run_handoff(name: str, work: Callable[[], None], session: SessionContext,
                 provider: TracerProvider) -> None:
    """Open a span in a bound session and hand `work` to a thread the way `name` does."""
    tracer = provider.get_tracer("app")
    if name == IN_EXECUTOR:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
            with binding(session), tracer.start_as_current_span("request"):
                await loop.run_in_executor(None, work)

        asyncio.run(main())
        return
    with binding(session), tracer.start_as_current_span("request"):
        SYNC_HANDOFFS[name](work)


def _spans(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ReadableSpan]:
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["request", "work"]
    return spans["request"], spans["work"]


def _work(provider: TracerProvider) -> Callable[[], None]:
    def work() -> None:
        provider.get_tracer("app").start_span("work").end()

    return work


@pytest.mark.skipif(THREADS_INHERIT_CONTEXT, reason="this Python starts threads in a copy")
@pytest.mark.parametrize("handoff", HANDOFFS)
def test_work_handed_to_a_thread_loses_the_session_and_lands_in_a_trace_of_its_own(
    handoff: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    session_processor: SessionSpanProcessor,
    make_session: MakeSession,
) -> None:
    _run_handoff(handoff, _work(provider), make_session(), provider)

    request, work = _spans(exporter)
    assert work.attributes is not None and SESSION_ID not in work.attributes
    assert work.parent is None
    assert work.context.trace_id != request.context.trace_id
    assert session_processor.spans_without_session == 1


def _assert_in_the_session_and_trace(
    exporter: InMemorySpanExporter, session: SessionContext
) -> None:
    request, work = _spans(exporter)
    assert work.attributes is not None
    assert work.attributes[SESSION_ID] == session.session_id
    assert work.attributes[LANGFUSE_SESSION_ID] == session.session_id
    assert work.context.trace_id == request.context.trace_id
    assert work.parent is not None and work.parent.span_id == request.context.span_id


def test_a_thread_started_in_a_copied_context_keeps_the_session(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    # The recipe without a dependency, for one thread.
    session = make_session()
    work = _work(provider)
    with binding(session), provider.get_tracer("app").start_as_current_span("request"):
        thread = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        thread.start()
        thread.join()

    _assert_in_the_session_and_trace(exporter, session)


def test_context_propagating_executor_keeps_the_session_in_run_in_executor_none(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    session = make_session()
    tracer = provider.get_tracer("app")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ContextPropagatingExecutor(max_workers=1))
        with binding(session), tracer.start_as_current_span("request"):
            await loop.run_in_executor(None, _work(provider))

    asyncio.run(main())

    _assert_in_the_session_and_trace(exporter, session)


def test_context_propagating_executor_as_an_own_pool_keeps_the_session(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    session = make_session()
    with binding(session), provider.get_tracer("app").start_as_current_span("request"):
        with ContextPropagatingExecutor(max_workers=1) as pool:
            pool.submit(_work(provider)).result()

    _assert_in_the_session_and_trace(exporter, session)
