import asyncio
import datetime as dt
import json
import logging

import httpx
import pytest

from service.scheduler import Scheduler
from service.schedules import Schedule

SCHEDULE = Schedule.model_validate({
    "id": "governance:community", "cron": "*/5 * * * *", "timezone": "UTC",
    "graph": "builtin:chat", "grant": "grant-1",
    "input": {"messages": [{"role": "user", "content": "hi"}]},
})
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
            return await Scheduler([SCHEDULE], client=client, token="tok").fire(
                SCHEDULE.id, FIRST, headers={"Sessiontrace-Firing-Traceparent": "00-x"}
            )

    response = asyncio.run(run())
    assert response is not None and response.status_code == 200
    (request,) = seen
    assert request.url.path == "/api/internal/graphs/builtin:chat/runs"
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Idempotency-Key"] == "governance:community:2026-11-23T08:00:00Z"
    assert request.headers["Sessiontrace-Firing-Traceparent"] == "00-x"
    assert json.loads(request.content) == SCHEDULE.run_request(FIRST).model_dump(
        mode="json", by_alias=True, exclude_none=True
    ) == {
        "scheduleId": "governance:community",
        "executionGrantId": "grant-1",
        "scheduledFor": "2026-11-23T08:00:00Z",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
    }


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


def fire_in_virtual_time(schedules: list[Schedule], firings: int) -> list[str]:
    """The Idempotency-Keys a scheduler of `schedules` posts, until `firings` of them.

    Virtual time: each sleep moves the clock to its wake-up moment at once.
    """
    fired: list[str] = []
    now = [FIRST - dt.timedelta(seconds=90)]

    def handler(request: httpx.Request) -> httpx.Response:
        fired.append(request.headers["Idempotency-Key"])
        return httpx.Response(200, json={"ok": True})

    async def fake_sleep(seconds: float) -> None:
        now[0] += dt.timedelta(seconds=seconds)
        await asyncio.sleep(0)

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://svc"
        ) as client:
            scheduler = Scheduler(
                schedules, client=client, token="tok", clock=lambda: now[0], sleep=fake_sleep
            )
            task = asyncio.create_task(scheduler.run_forever())
            for _ in range(1000):
                if len(fired) >= firings:
                    break
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    return fired


def test_run_forever_fires_each_due_schedule_at_its_time() -> None:
    fired = fire_in_virtual_time([SCHEDULE], 3)

    assert fired[:3] == [
        "governance:community:2026-11-23T08:00:00Z",
        "governance:community:2026-11-23T08:05:00Z",
        "governance:community:2026-11-23T08:10:00Z",
    ]


def test_a_paused_schedule_is_not_fired(caplog: pytest.LogCaptureFixture) -> None:
    paused = SCHEDULE.model_copy(update={"id": "governance:paused", "paused": True})

    fired = fire_in_virtual_time([SCHEDULE, paused], 2)

    async def only_paused() -> None:
        async with httpx.AsyncClient(base_url="http://svc") as client:
            with caplog.at_level(logging.INFO, logger="service.scheduler"):
                # Returns at once: nothing to fire.
                await Scheduler([paused], client=client, token="tok").run_forever()

    asyncio.run(only_paused())
    assert fired[:2] == [
        "governance:community:2026-11-23T08:00:00Z",
        "governance:community:2026-11-23T08:05:00Z",
    ]
    assert not [key for key in fired if key.startswith("governance:paused")]
    assert any("no schedules to fire (1 paused)" in r.getMessage() for r in caplog.records)


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


def _retrying_scheduler_run(
    answers: list[httpx.Response | Exception], **options: float
) -> tuple[list[str], list[float]]:
    """Fire SCHEDULE for FIRST with retries in virtual time: each request's key, each wait."""
    keys: list[str] = []
    waits: list[float] = []
    now = [FIRST]

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        answer = answers[min(len(keys), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://svc"
        ) as client:
            scheduler = Scheduler(
                [SCHEDULE], client=client, token="tok", clock=lambda: now[0], sleep=fake_sleep,
                **options,
            )
            await scheduler.fire_with_retries(SCHEDULE.id, FIRST)

    asyncio.run(run())
    return keys, waits


def test_a_failed_firing_is_retried_with_backoff_and_the_same_key_until_it_succeeds() -> None:
    keys, waits = _retrying_scheduler_run(
        [
            httpx.Response(503, json={"error": "overloaded"}, headers={"Retry-After": "30"}),
            httpx.ConnectError("connection refused"),
            httpx.Response(502, text="bad gateway"),
            httpx.Response(200, json={"ok": True}),
        ],
        first_retry_seconds=5, max_retry_seconds=300,
    )

    assert keys == ["governance:community:2026-11-23T08:00:00Z"] * 4
    assert waits == [30, 10, 20]  # Retry-After when longer than the backoff; then doubling


def test_retries_stop_before_the_schedules_next_firing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.scheduler"):
        keys, waits = _retrying_scheduler_run(
            [httpx.Response(503, json={"error": "overloaded"})],
            first_retry_seconds=60, max_retry_seconds=600,
        )

    # Every 5 minutes: tries at +0, +60 s and +180 s; the next wait (240 s) would pass +300 s.
    assert waits == [60, 120]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert any("not retried: the next firing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"ok": False, "error": "node 'respond' failed"}),
        httpx.Response(403, json={"error": "grant_revoked"}),
        httpx.Response(422, json={"error": "idempotency_key_reused"}),
    ],
    ids=["run-failed", "refused", "key-reused"],
)
def test_a_final_answer_is_not_retried(answer: httpx.Response) -> None:
    keys, waits = _retrying_scheduler_run([answer])

    assert len(keys) == 1 and waits == []
