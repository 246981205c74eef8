"""The Temporal side of `python -m service schedules ...`: each command's JSON answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.config import Settings
from service.schedules import Schedule, utc_text
from service.temporal._client import connect
from service.temporal._firings import firing_outcome, trigger_firing
from service.temporal._schedules import sync_schedules
from service.temporal._views import schedule_views

__all__ = ["list_command", "run_command", "sync_command", "temporal_target"]


def temporal_target(settings: Settings) -> dict[str, Any]:
    """Where the schedules live: address, namespace, task queue."""
    return {
        "address": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "taskQueue": settings.temporal_task_queue,
    }


async def sync_command(settings: Settings, entries: Sequence[Schedule]) -> dict[str, Any]:
    """`schedules sync`: what was created, updated and deleted."""
    client = await connect(settings)
    result = await sync_schedules(client, entries, task_queue=settings.temporal_task_queue)
    return {
        "schedulesFile": str(settings.schedules_file),
        "temporal": temporal_target(settings),
        "created": result.created,
        "updated": result.updated,
        "deleted": result.deleted,
    }


async def list_command(settings: Settings, entries: Sequence[Schedule]) -> dict[str, Any]:
    """`schedules list`: each entry as Temporal runs it."""
    client = await connect(settings)
    views = await schedule_views(client, entries, task_queue=settings.temporal_task_queue)
    return {
        "schedulesFile": None if settings.schedules_file is None else str(settings.schedules_file),
        "temporal": temporal_target(settings),
        **views,
    }


async def run_command(settings: Settings, schedule: Schedule, *, wait: bool) -> dict[str, Any]:
    """`schedules run`: trigger the schedule; its firing and, with `wait`, the run's outcome."""
    client = await connect(settings)
    firing = await trigger_firing(client, schedule.id)
    started = {
        "scheduleId": firing.schedule_id,
        "workflowId": firing.workflow_id,
        "scheduledFor": utc_text(firing.scheduled_for),
    }
    if not wait:
        return started
    outcome = await firing_outcome(client, firing)
    return {**started, **outcome.model_dump(mode="json", by_alias=True, exclude_none=True)}
