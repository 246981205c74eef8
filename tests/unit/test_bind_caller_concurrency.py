import asyncio
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import (
    ContextPropagatingExecutor,
    MissingSessionError,
    SessionContext,
    binding,
    current_session,
    derive_user_session_id,
    require_session,
)
from sessiontrace.attributes import SESSION_ID, USER_ID

MakeSession = Callable[..., SessionContext]


def test_caller_survives_await_tasks_to_thread_and_run_in_executor(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")
    caller = make_session()

    def in_thread(name: str) -> SessionContext | None:
        tracer.start_span(name).end()
        return current_session()

    async def in_task() -> SessionContext | None:
        await asyncio.sleep(0)
        tracer.start_span("task").end()
        return current_session()

    async def run() -> list[SessionContext | None]:
        loop = asyncio.get_running_loop()
        explicit_pool = ContextPropagatingExecutor(max_workers=2)
        loop.set_default_executor(ContextPropagatingExecutor(max_workers=2))
        try:
            with binding(caller):
                await asyncio.sleep(0)
                seen = [current_session()]
                seen.append(await asyncio.create_task(in_task()))
                seen.append(await asyncio.to_thread(in_thread, "to_thread"))
                seen.append(await loop.run_in_executor(None, in_thread, "default_executor"))
                seen.append(await loop.run_in_executor(explicit_pool, in_thread, "own_pool"))
            return seen
        finally:
            explicit_pool.shutdown()

    seen = asyncio.run(run())

    assert seen == [caller] * 5
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["default_executor", "own_pool", "task", "to_thread"]
    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        assert span.attributes[SESSION_ID] == caller.session_id
        assert span.attributes[USER_ID] == caller.user_id


def test_concurrent_tasks_keep_their_own_callers(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    tracer = provider.get_tracer("t")

    async def one_run(i: int) -> None:
        caller = make_session(
            user_id=f"user-{i}", session_id=derive_user_session_id("acme", f"thread-{i}")
        )
        with binding(caller), tracer.start_as_current_span(f"run-{i}"):
            for step in range(3):
                await asyncio.sleep(0)
                await asyncio.to_thread(lambda: tracer.start_span(f"step-{i}-{step}").end())

    async def run() -> None:
        await asyncio.gather(*(one_run(i) for i in range(50)))

    asyncio.run(run())

    spans = exporter.get_finished_spans()
    assert len(spans) == 50 * 4
    for span in spans:
        i = span.name.split("-")[1]
        assert span.attributes is not None
        assert span.attributes[USER_ID] == f"user-{i}"
        assert span.attributes[SESSION_ID] == derive_user_session_id("acme", f"thread-{i}")


def test_caller_is_gone_after_the_block(make_session: MakeSession) -> None:
    with binding(make_session()):
        assert current_session() is not None
    assert current_session() is None


def test_require_session_refuses_when_nothing_is_bound(make_session: MakeSession) -> None:
    with pytest.raises(MissingSessionError, match="no session is bound"):
        require_session()
    caller = make_session()
    with binding(caller):
        assert require_session() is caller
