"""The firing activity: one call of the internal runs route, and what its answer means.

It reuses the embedded scheduler's firing (`service.scheduler.fire_once`): the same request,
token and `Idempotency-Key`, so every attempt of one firing is one run at most. The answers
after which a later attempt may succeed (`RETRYABLE_STATUSES`: 409 while the key's run still
goes, 5xx, 429...) and an unreachable service are retried by Temporal with backoff; any other
refusal (400, 401, 403, 404, 422) is final: a non-retryable ApplicationError.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from service.config import Settings
from service.firing_link import firing_headers
from service.scheduler import RETRYABLE_STATUSES, fire_once, retry_after
from service.schemas import RunResponse
from service.temporal._firing import FIRE_ACTIVITY, Firing

__all__ = [
    "FIRING_SPAN",
    "FiringActivity",
    "HEARTBEAT_INTERVAL_SECONDS",
]

logger = logging.getLogger(__name__)

FIRING_SPAN = "governance.firing"
# Attributes of the firing span (operations pipeline only: it has no session).
SCHEDULE_ID = "sessiontrace.schedule.id"
SCHEDULED_FOR = "sessiontrace.firing.scheduled_for"
ATTEMPT = "sessiontrace.firing.attempt"
WORKFLOW_ID = "temporal.workflow.id"
RUN_ID = "sessiontrace.run.id"
HTTP_STATUS = "http.response.status_code"
# Well inside the workflow's heartbeat timeout (15 s).
HEARTBEAT_INTERVAL_SECONDS = 3.0


class FiringActivity:
    """Fires runs through the service at SERVICE_URL, with the worker's settings and tracer."""

    def __init__(self, settings: Settings, *, tracer: Tracer) -> None:
        self._settings = settings
        self._tracer = tracer

    @activity.defn(name=FIRE_ACTIVITY)
    async def fire(self, firing: Firing) -> RunResponse:
        """POST the firing to the internal runs route; its run's outcome, or an ApplicationError."""
        info = activity.info()
        attributes: dict[str, Any] = {
            SCHEDULE_ID: firing.schedule.id,
            SCHEDULED_FOR: firing.scheduled_for_utc().isoformat(),
            ATTEMPT: info.attempt,
            WORKFLOW_ID: info.workflow_id or "",
        }
        # A root span of its own: the run links to it (service.firing_link), never under it.
        with self._tracer.start_as_current_span(
            FIRING_SPAN, kind=SpanKind.CLIENT, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            heartbeats = asyncio.create_task(_heartbeat_until_cancelled())
            try:
                response = await fire_once(
                    self._settings, firing.schedule, firing.scheduled_for,
                    headers=firing_headers(span),
                )
            except httpx.HTTPError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise ApplicationError(
                    f"cannot reach the service at SERVICE_URL={self._settings.service_url} "
                    f"({type(exc).__name__}: {exc or 'no answer'}); retried with the same "
                    f"Idempotency-Key {firing.idempotency_key!r}",
                    type="ServiceUnreachable",
                ) from None
            finally:
                heartbeats.cancel()
            span.set_attribute(HTTP_STATUS, response.status_code)
            try:
                outcome = _outcome(response, firing)
            except ApplicationError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.type or "refused"))
                raise
            span.set_attribute(RUN_ID, outcome.run_id)
            logger.info(
                "schedule %s fired for %s (attempt %d): run %s, ok=%s", firing.schedule.id,
                firing.scheduled_for_utc().isoformat(), info.attempt, outcome.run_id, outcome.ok,
            )
            return outcome


async def _heartbeat_until_cancelled() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)


def _outcome(response: httpx.Response, firing: Firing) -> RunResponse:
    status = response.status_code
    if status == 200:
        try:
            return RunResponse.model_validate_json(response.content)
        except ValidationError:
            raise ApplicationError(
                f"the service answered 200 firing schedule {firing.schedule.id!r} with a body "
                f"that is not a run outcome: {response.text[:300]!r}",
                type="InvalidAnswer", non_retryable=True,
            ) from None
    detail = _detail(response)
    if status in RETRYABLE_STATUSES:
        wait = retry_after(response)
        raise ApplicationError(
            f"the service answered {status} firing schedule {firing.schedule.id!r}: {detail}; "
            f"retried with the same Idempotency-Key {firing.idempotency_key!r}",
            type=f"HTTP{status}",
            next_retry_delay=None if wait is None else dt.timedelta(seconds=wait),
        )
    raise ApplicationError(
        f"the service answered {status} firing schedule {firing.schedule.id!r}: {detail} "
        "(final: not retried)",
        type=f"HTTP{status}", non_retryable=True,
    )


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return f"{body.get('error', 'error')}: {body['message']}"
    return response.text[:300] or response.reason_phrase
