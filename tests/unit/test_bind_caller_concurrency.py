import asyncio
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import (
    CallerContext,
    ContextPropagatingExecutor,
    MissingCallerError,
    bind_caller,
    current_caller,
    derive_user_session_id,
    require_caller,
)
from sessiontrace.attributes import SESSION_ID, USER_ID

MakeCaller = Callable[..., CallerContext]


def test_caller_survives_await_tasks_to_thread_and_run_in_executor(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_caller: MakeCaller
) -> None:
    tracer = provider.get_tracer("t")
    caller = make_caller()

    def in_thread(name: str) -> CallerContext | None:
        tracer.start_span(name).end()
        return current_caller()

    async def in_task() -> CallerContext | None:
        await asyncio.sleep(0)
        tracer.start_span("task").end()
        return current_caller()

    async def run() -> list[CallerContext | None]:
        loop = asyncio.get_running_loop()
        explicit_pool = ContextPropagatingExecutor(max_workers=2)
        loop.set_default_executor(ContextPropagatingExecutor(max_workers=2))
        try:
            with bind_caller(caller):
                await asyncio.sleep(0)
                seen = [current_caller()]
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
    provider: TracerProvider, exporter: InMemorySpanExporter, make_caller: MakeCaller
) -> None:
    tracer = provider.get_tracer("t")

    async def one_run(i: int) -> None:
        caller = make_caller(
            user_id=f"user-{i}", session_id=derive_user_session_id("acme", f"thread-{i}")
        )
        with bind_caller(caller), tracer.start_as_current_span(f"run-{i}"):
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


def test_caller_is_gone_after_the_block(make_caller: MakeCaller) -> None:
    with bind_caller(make_caller()):
        assert current_caller() is not None
    assert current_caller() is None


def test_require_caller_refuses_when_nothing_is_bound(make_caller: MakeCaller) -> None:
    with pytest.raises(MissingCallerError, match="no caller is bound"):
        require_caller()
    caller = make_caller()
    with bind_caller(caller):
        assert require_caller() is caller
