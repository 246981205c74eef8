"""Embedded scheduler: fires each schedule through the internal runs route over HTTP.

Going through HTTP (not a function call) means a scheduled run takes exactly
the path an external scheduler's would: token, idempotency key, grant check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from service.config import Settings
from service.schedules import Schedule, idempotency_key
from service.store import Database, check_grant, get_grant

__all__ = [
    "RETRYABLE_STATUSES",
    "Scheduler",
    "embedded_scheduler",
    "fire_once",
    "retry_after",
    "service_client",
    "utc_now",
]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 10.0
# Answers after which the same firing may succeed later: the service was busy,
# restarting or behind a failing proxy, or the key's earlier attempt still runs.
# 200 (ok: false included) is final, and the other 4xx will not change.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class Scheduler:
    """Fires schedules on their cron; skips a firing while the previous one still runs.

    A firing that failed in a way that may pass (no answer, 5xx, 429, 409) is
    retried with backoff until the schedule's next firing (`fire_with_retries`).
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        client: httpx.AsyncClient,
        token: str,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        first_retry_seconds: float = 5.0,
        max_retry_seconds: float = 300.0,
    ) -> None:
        if not 0 < first_retry_seconds <= max_retry_seconds:
            raise ValueError(
                f"need 0 < first_retry_seconds <= max_retry_seconds, got "
                f"{first_retry_seconds} and {max_retry_seconds}"
            )
        self._first_retry = first_retry_seconds
        self._max_retry = max_retry_seconds
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

    @property
    def in_flight(self) -> frozenset[str]:
        """Ids of the schedules whose firing is waiting for its run's answer."""
        return frozenset(self._running)

    async def fire(
        self,
        schedule_id: str,
        scheduled_for: dt.datetime,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response | None:
        """Fire one schedule now; None when skipped because its previous run is running.

        `headers` are sent too (the firing's trace context, `service.firing_link`).
        """
        schedule = self._schedules[schedule_id]
        if schedule_id in self._running:
            logger.warning(
                "schedule %s: firing for %s skipped, the previous run is still running",
                schedule_id, scheduled_for.isoformat(),
            )
            return None
        self._running.add(schedule_id)
        try:
            return await self._post(schedule, scheduled_for, headers or {})
        finally:
            self._running.discard(schedule_id)

    async def run_forever(self) -> None:
        """Sleep until each next firing of the schedules not paused and fire it, until cancelled."""
        active = [schedule for schedule in self._schedules.values() if not schedule.paused]
        if not active:
            logger.info("scheduler started with no schedules to fire (%d paused)",
                        len(self._schedules))
            return
        last = self._clock()
        try:
            while True:
                due = {s.id: s.next_fire_after(last) for s in active}
                moment = min(due.values())
                delay = (moment - self._clock()).total_seconds()
                if delay > 0:
                    await self._sleep(delay)
                for schedule_id, fire_at in due.items():
                    if fire_at == moment:
                        self._spawn(self.fire_with_retries(schedule_id, fire_at))
                last = moment
        finally:
            # Firings in flight are cancelled with the loop; their keys stay
            # free or pending on the server, never half-recorded here.
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fire_with_retries(self, schedule_id: str, scheduled_for: dt.datetime) -> None:
        """Fire, and retry a firing that may still succeed, until the schedule's next firing.

        Retries send the same Idempotency-Key, so the service runs the firing at
        most once. They back off exponentially from `first_retry_seconds` up to
        `max_retry_seconds` (longer when the service asks with Retry-After), and
        none starts at or after the next firing: that one takes over.
        """
        next_firing = self._schedules[schedule_id].next_fire_after(scheduled_for)
        delay = self._first_retry
        attempt = 1
        while True:
            retry = await self._attempt(schedule_id, scheduled_for)
            if retry is None:
                return
            reason, asked = retry
            wait = max(delay, asked or 0.0)
            if self._clock() + dt.timedelta(seconds=wait) >= next_firing:
                logger.error(
                    "schedule %s: firing for %s failed after %d attempt(s) (%s); not retried: "
                    "the next firing, at %s, comes first", schedule_id,
                    scheduled_for.isoformat(), attempt, reason, next_firing.isoformat(),
                )
                return
            logger.warning(
                "schedule %s: firing for %s failed (%s); retrying in %.1f s with the same "
                "Idempotency-Key", schedule_id, scheduled_for.isoformat(), reason, wait,
            )
            await self._sleep(wait)
            delay = min(delay * 2, self._max_retry)
            attempt += 1

    async def _attempt(
        self, schedule_id: str, scheduled_for: dt.datetime
    ) -> tuple[str, float | None] | None:
        """One firing; why it should be retried and any Retry-After, or None when it is over."""
        try:
            response = await self.fire(schedule_id, scheduled_for)
        except httpx.HTTPError as exc:
            return f"could not reach the service: {type(exc).__name__}: {exc}", None
        except Exception:
            logger.exception("schedule %s: firing for %s failed", schedule_id, scheduled_for)
            return None
        if response is None:
            return None
        if response.status_code in RETRYABLE_STATUSES:
            return f"{response.status_code} {response.text[:300]}", retry_after(response)
        level = logging.INFO if response.status_code == 200 else logging.ERROR
        logger.log(level, "schedule %s fired for %s: %s %s", schedule_id,
                   scheduled_for.isoformat(), response.status_code, response.text[:500])
        return None

    async def _post(
        self, schedule: Schedule, scheduled_for: dt.datetime, headers: Mapping[str, str]
    ) -> httpx.Response:
        body = schedule.run_request(scheduled_for)
        return await self._client.post(
            f"/api/internal/graphs/{quote(schedule.graph, safe=':')}/runs",
            headers={
                **headers,
                "Authorization": f"Bearer {self._token}",
                "Idempotency-Key": idempotency_key(schedule.id, scheduled_for),
            },
            json=body.model_dump(mode="json", by_alias=True, exclude_none=True),
        )


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a Retry-After header asks for, when given in seconds."""
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None  # the HTTP-date form is not used here


def service_client(settings: Settings) -> httpx.AsyncClient:
    """An HTTP client for the service at SERVICE_URL, as the scheduler reaches it."""
    pending = settings.idempotency_pending_timeout_seconds
    # A firing waits for its run as long as the run's key may stay pending.
    timeout = httpx.Timeout(pending if pending > 0 else None, connect=_CONNECT_TIMEOUT_SECONDS)
    # trust_env=False: proxy variables meant for outbound traffic must not
    # route the scheduler token to the service through a proxy.
    return httpx.AsyncClient(base_url=settings.service_url, timeout=timeout, trust_env=False)


async def fire_once(
    settings: Settings,
    schedule: Schedule,
    scheduled_for: dt.datetime,
    *,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Fire `schedule` for `scheduled_for` now, through the service at SERVICE_URL."""
    async with service_client(settings) as client:
        scheduler = Scheduler(
            [schedule], client=client, token=settings.scheduler_api_token.get_secret_value()
        )
        response = await scheduler.fire(schedule.id, scheduled_for, headers=headers)
    assert response is not None  # a fresh scheduler has no run in flight to skip for
    return response


@asynccontextmanager
async def embedded_scheduler(
    settings: Settings, schedules: Sequence[Schedule], *, database: Database
) -> AsyncIterator[Scheduler | None]:
    """With SCHEDULER_ENABLED, fire `schedules` over HTTP to SERVICE_URL until exit.

    Yields the running Scheduler, or None when the setting is off.
    """
    if not settings.scheduler_enabled:
        if schedules:
            logger.info("SCHEDULER_ENABLED is false: %d schedule(s) will not fire", len(schedules))
        yield None
        return
    await asyncio.to_thread(_warn_about_grants, database, schedules)
    async with service_client(settings) as client:
        scheduler = Scheduler(
            schedules, client=client, token=settings.scheduler_api_token.get_secret_value()
        )
        task = asyncio.create_task(scheduler.run_forever(), name="sessiontrace-scheduler")
        task.add_done_callback(_log_stop)
        logger.info(
            "scheduler started: %d schedule(s), firing through %s", len(schedules),
            settings.service_url,
        )
        try:
            yield scheduler
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            logger.info("scheduler stopped")


def _log_stop(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the scheduler stopped: no schedule fires any more", exc_info=task.exception())


def _warn_about_grants(database: Database, schedules: Sequence[Schedule]) -> None:
    # Grants change at run time, so a bad one is a warning now and a 403 at firing.
    for schedule in schedules:
        denial = check_grant(get_grant(database, schedule.grant), schedule.graph)
        if denial is not None:
            logger.warning(
                "schedule %s: its grant %r cannot run %s (%s); its firings will be refused",
                schedule.id, schedule.grant, schedule.graph, denial.value,
            )
