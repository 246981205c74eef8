"""Firings as Temporal sees them: trigger one now, wait for its outcome, read the last one."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from service.schedules import utc_text
from service.schemas import RunResponse
from service.temporal._client import TemporalError
from service.temporal._schedules import describe_schedule

__all__ = ["FiringFailed", "StartedFiring", "firing_outcome", "last_firing", "trigger_firing"]

_POLL_SECONDS = 0.2
_SECOND = dt.timedelta(seconds=1)


class FiringFailed(TemporalError):
    """A firing's workflow ended without a run outcome (refused, timed out, terminated)."""


@dataclass(frozen=True)
class StartedFiring:
    """A workflow a schedule started: one firing."""

    schedule_id: str
    workflow_id: str
    run_id: str | None  # None: the workflow id's latest run
    scheduled_for: dt.datetime


async def trigger_firing(client: Client, schedule_id: str, *, timeout: float = 30.0) -> StartedFiring:
    """Trigger `schedule_id` now (its overlap policy applies) and return the firing it started.

    TemporalError when there is no such schedule, when Temporal skipped the firing because the
    previous one still runs (overlap SKIP), or when no firing started within `timeout` seconds.
    """
    before = await describe_schedule(client, schedule_id)
    if before is None:
        raise TemporalError(
            f"no schedule {schedule_id!r} in Temporal namespace {client.namespace!r}; "
            "`python -m service schedules sync` creates the schedules of SCHEDULES_FILE"
        )
    known = _started(before)
    skipped = before.info.num_actions_skipped_overlap
    if known:
        # A firing is named by its time in whole seconds (workflow id, Idempotency-Key): a
        # trigger within the second of the previous firing would be that firing again,
        # answered from its key. Wait for the next second (by this machine's clock).
        wait = (known[-1].scheduled_for + _SECOND - dt.datetime.now(dt.UTC)).total_seconds()
        if 0 < wait <= _SECOND.total_seconds():
            await asyncio.sleep(wait)
    handle = client.get_schedule_handle(schedule_id)
    await handle.trigger()
    deadline = time.monotonic() + timeout
    while True:
        now = await handle.describe()
        fresh = [firing for firing in _started(now) if firing not in known]
        if fresh:
            return fresh[-1]
        if now.info.num_actions_skipped_overlap > skipped:
            running = ", ".join(_running(now)) or "unknown"
            raise TemporalError(
                f"Temporal skipped the firing of schedule {schedule_id!r}: its previous firing "
                f"({running}) is still running, and the schedule's overlap policy is SKIP"
            )
        if time.monotonic() >= deadline:
            raise TemporalError(
                f"schedule {schedule_id!r} was triggered but Temporal started no firing within "
                f"{timeout:g} s"
            )
        await asyncio.sleep(_POLL_SECONDS)


async def firing_outcome(client: Client, firing: StartedFiring) -> RunResponse:
    """Wait for the firing's workflow; its run's outcome, or FiringFailed saying why there is none."""
    try:
        return await _handle(client, firing).result()
    except WorkflowFailureError as exc:
        raise FiringFailed(
            f"firing {firing.workflow_id} of schedule {firing.schedule_id!r} failed: "
            f"{failure_message(exc)}"
        ) from None


async def last_firing(client: Client, description: ScheduleDescription) -> dict[str, Any] | None:
    """The most recent firing of a schedule: its workflow, status and, once ended, its outcome."""
    started = _started(description)
    if not started:
        return None
    firing = started[-1]
    view: dict[str, Any] = {
        "workflowId": firing.workflow_id,
        "scheduledFor": utc_text(firing.scheduled_for),
    }
    handle = _handle(client, firing)
    try:
        status = (await handle.describe()).status
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        view["status"] = "GONE"  # past the namespace's retention
        return view
    view["status"] = status.name if status is not None else "UNKNOWN"
    if status is WorkflowExecutionStatus.COMPLETED:
        outcome = await handle.result()
        view.update(outcome.model_dump(mode="json", by_alias=True, exclude_none=True))
    elif status is not WorkflowExecutionStatus.RUNNING:
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            view["error"] = failure_message(exc)
    return view


def failure_message(error: BaseException) -> str:
    """The innermost cause of a Temporal failure: what actually went wrong."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


def _handle(client: Client, firing: StartedFiring) -> WorkflowHandle[Any, RunResponse]:
    return client.get_workflow_handle(
        firing.workflow_id, run_id=firing.run_id, result_type=RunResponse
    )


def _started(description: ScheduleDescription) -> list[StartedFiring]:
    firings = []
    for action in description.info.recent_actions:
        if isinstance(action.action, ScheduleActionExecutionStartWorkflow):
            firings.append(StartedFiring(
                schedule_id=description.id,
                workflow_id=action.action.workflow_id,
                run_id=action.action.first_execution_run_id,
                # What the workflow's TemporalScheduledStartTime holds: whole seconds.
                scheduled_for=action.scheduled_at.astimezone(dt.UTC).replace(microsecond=0),
            ))
    return firings


def _running(description: ScheduleDescription) -> list[str]:
    return [
        action.workflow_id for action in description.info.running_actions
        if isinstance(action, ScheduleActionExecutionStartWorkflow)
    ]

