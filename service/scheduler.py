"""Embedded scheduler: fires each schedule through the internal runs route over HTTP.

Going through HTTP (not a function call) means a scheduled run takes exactly
the path an external scheduler's would: token, idempotency key, grant check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from service.schedules import Schedule, idempotency_key

__all__ = ["Scheduler", "utc_now"]

logger = logging.getLogger(__name__)


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class Scheduler:
    """Fires schedules on their cron; skips a firing while the previous one still runs."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        client: httpx.AsyncClient,
        token: str,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._schedules = {schedule.id: schedule for schedule in schedules}
        self._client = client
        self._token = token
        self._clock = clock
        self._sleep = sleep
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules this scheduler fires."""
        return list(self._schedules.values())

    async def fire(self, schedule_id: str, scheduled_for: dt.datetime) -> httpx.Response | None:
        """Fire one schedule now; None when skipped because its previous run is running."""
        schedule = self._schedules[schedule_id]
        if schedule_id in self._running:
            logger.warning(
                "schedule %s: firing for %s skipped, the previous run is still running",
                schedule_id, scheduled_for.isoformat(),
            )
            return None
        self._running.add(schedule_id)
        try:
            return await self._post(schedule, scheduled_for)
        finally:
            self._running.discard(schedule_id)

    async def run_forever(self) -> None:
        """Sleep until each next firing and fire it, until cancelled."""
        if not self._schedules:
            logger.info("scheduler started with no schedules")
            return
        last = self._clock()
        try:
            while True:
                due = {s.id: s.next_fire_after(last) for s in self._schedules.values()}
                moment = min(due.values())
                delay = (moment - self._clock()).total_seconds()
                if delay > 0:
                    await self._sleep(delay)
                for schedule_id, fire_at in due.items():
                    if fire_at == moment:
                        self._spawn(self._fire_logged(schedule_id, fire_at))
                last = moment
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire_logged(self, schedule_id: str, scheduled_for: dt.datetime) -> None:
        try:
            response = await self.fire(schedule_id, scheduled_for)
        except httpx.HTTPError as exc:
            logger.error("schedule %s: could not reach the service: %s", schedule_id, exc)
            return
        if response is not None:
            level = logging.INFO if response.status_code == 200 else logging.ERROR
            logger.log(level, "schedule %s fired for %s: %s %s", schedule_id,
                       scheduled_for.isoformat(), response.status_code, response.text[:500])

    async def _post(self, schedule: Schedule, scheduled_for: dt.datetime) -> httpx.Response:
        return await self._client.post(
            f"/api/internal/graphs/{quote(schedule.graph, safe=':')}/runs",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Idempotency-Key": idempotency_key(schedule.id, scheduled_for),
            },
            json={
                "executionGrantId": schedule.grant,
                "scheduleId": schedule.id,
                "scheduledFor": scheduled_for.astimezone(dt.UTC).isoformat(),
                "input": dict(schedule.input),
            },
        )
