import asyncio
import datetime as dt
import json
import logging

import httpx
import pytest

from service.scheduler import Scheduler
from service.schedules import Schedule

SCHEDULE = Schedule(
    id="governance:community", cron="*/5 * * * *", timezone="UTC", graph="builtin:chat",
    grant="grant-1", input={"messages": [{"role": "user", "content": "hi"}]},
)
FIRST = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)


def test_firing_posts_to_the_internal_route_with_token_key_and_schedule() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async def run() -> httpx.Response | None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://svc"
        ) as client:
            return await Scheduler([SCHEDULE], client=client, token="tok").fire(SCHEDULE.id, FIRST)

    response = asyncio.run(run())
    assert response is not None and response.status_code == 200
    (request,) = seen
    assert request.url.path == "/api/internal/graphs/builtin:chat/runs"
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Idempotency-Key"] == "governance:community:2026-11-23T08:00:00Z"
    body = json.loads(request.content)
    assert body["scheduleId"] == "governance:community"
    assert body["executionGrantId"] == "grant-1"
    assert body["input"] == {"messages": [{"role": "user", "content": "hi"}]}


def test_firing_is_skipped_while_the_previous_run_is_still_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def run() -> list[httpx.Response | None]:
        release = asyncio.Event()

        async def slow(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            await release.wait()
            return httpx.Response(200, json={"ok": True})

        async with httpx.AsyncClient(
            transport=httpx.MockTransport(slow), base_url="http://svc"
        ) as client:
            scheduler = Scheduler([SCHEDULE], client=client, token="tok")
            first = asyncio.create_task(scheduler.fire(SCHEDULE.id, FIRST))
            while calls == 0:
                await asyncio.sleep(0)
            second = await scheduler.fire(SCHEDULE.id, FIRST + dt.timedelta(minutes=5))
            release.set()
            third_after_first = [await first, second]
            third_after_first.append(
                await scheduler.fire(SCHEDULE.id, FIRST + dt.timedelta(minutes=10))
            )
            return third_after_first

    with caplog.at_level(logging.WARNING, logger="service.scheduler"):
        first, second, third = asyncio.run(run())
    assert first is not None and first.status_code == 200
    assert second is None
    assert third is not None and third.status_code == 200
    assert calls == 2
    assert any("skipped, the previous run is still running" in r.getMessage() for r in caplog.records)


def test_run_forever_fires_each_due_schedule_at_its_time() -> None:
    fired: list[str] = []
    now = [FIRST - dt.timedelta(seconds=90)]

    def handler(request: httpx.Request) -> httpx.Response:
        fired.append(request.headers["Idempotency-Key"])
        return httpx.Response(200, json={"ok": True})

    async def fake_sleep(seconds: float) -> None:
        # Virtual time: the clock jumps to the wake-up moment at once.
        now[0] += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0)

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://svc"
        ) as client:
            scheduler = Scheduler(
                [SCHEDULE], client=client, token="tok", clock=lambda: now[0], sleep=fake_sleep
            )
            task = asyncio.create_task(scheduler.run_forever())
            for _ in range(1000):
                if len(fired) >= 3:
                    break
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert fired[:3] == [
        "governance:community:2026-11-23T08:00:00Z",
        "governance:community:2026-11-23T08:05:00Z",
        "governance:community:2026-11-23T08:10:00Z",
    ]


def test_cancelling_the_scheduler_cancels_the_firing_in_flight() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def run() -> bool:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(hanging), base_url="http://svc"
        ) as client:
            scheduler = Scheduler(
                [SCHEDULE], client=client, token="tok",
                clock=lambda: FIRST - dt.timedelta(seconds=1), sleep=lambda _: asyncio.sleep(0),
            )
            task = asyncio.create_task(scheduler.run_forever())
            await asyncio.wait_for(started.wait(), timeout=5)
            assert scheduler.in_flight == {SCHEDULE.id}
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return cancelled.is_set() and not scheduler.in_flight

    assert asyncio.run(run())
