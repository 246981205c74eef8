"""SCHEDULES_FILE in Temporal: one Temporal Schedule per entry, kept in step by `sync`.

Each entry becomes the schedule of the same id: its cron and timezone, overlap SKIP (a firing
still running makes the next one skip, as in the embedded scheduler), its catch-up window and
paused flag, and an action starting the `GovernanceFiring` workflow with the entry as its
argument, on TEMPORAL_TASK_QUEUE. `sync` marks what it creates with a memo
(`managedBy: sessiontrace` and the task queue) and deletes only schedules so marked, for its
task queue, whose entry has left the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import (
    Client,
    Schedule as TemporalSchedule,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from service.schedules import Schedule
from service.temporal._client import TemporalError
from service.temporal._firing import FIRING_WORKFLOW, MANAGED_BY, managed_memo

__all__ = [
    "SyncResult",
    "describe_schedule",
    "is_managed",
    "managed_schedule_ids",
    "sync_schedules",
    "temporal_schedule",
]


@dataclass
class SyncResult:
    """What one `sync` did, by schedule id."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def temporal_schedule(entry: Schedule, *, task_queue: str) -> TemporalSchedule:
    """The Temporal Schedule of one SCHEDULES_FILE entry."""
    return TemporalSchedule(
        action=ScheduleActionStartWorkflow(
            FIRING_WORKFLOW, entry, id=entry.id, task_queue=task_queue,
            static_summary=f"{entry.graph} for grant {entry.grant}",
        ),
        spec=ScheduleSpec(cron_expressions=[entry.cron], time_zone_name=entry.timezone),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP, catchup_window=entry.catchup_window
        ),
        state=ScheduleState(
            paused=entry.paused,
            note="paused in SCHEDULES_FILE" if entry.paused else None,
        ),
    )


async def managed_schedule_ids(client: Client, *, task_queue: str) -> list[str]:
    """Ids of the schedules `sync` created for `task_queue` (the list is eventually consistent)."""
    ids = []
    async for listed in await client.list_schedules():
        if is_managed(await listed.memo(), task_queue):
            ids.append(listed.id)
    return sorted(ids)


async def sync_schedules(
    client: Client, entries: Sequence[Schedule], *, task_queue: str
) -> SyncResult:
    """Create or update one schedule per entry, delete the managed ones no entry names.

    Nothing changes when an entry's id is taken by a schedule `sync` does not manage
    (TemporalError naming it): every entry is checked before the first change.
    """
    existing: set[str] = set()
    for entry in entries:
        description = await describe_schedule(client, entry.id)
        if description is not None:
            if not is_managed(await description.memo(), task_queue):
                raise TemporalError(
                    f"schedule {entry.id!r} exists in Temporal namespace {client.namespace!r} "
                    f"but `schedules sync` did not create it for task queue {task_queue!r} "
                    f"(its memo lacks managedBy={MANAGED_BY!r}, taskQueue={task_queue!r}); "
                    "sync leaves it alone: delete it in Temporal or rename the entry"
                )
            existing.add(entry.id)
    result = SyncResult()
    for entry in entries:
        schedule = temporal_schedule(entry, task_queue=task_queue)
        if entry.id in existing:
            await client.get_schedule_handle(entry.id).update(_replace_with(schedule))
            result.updated.append(entry.id)
        else:
            await client.create_schedule(entry.id, schedule, memo=managed_memo(task_queue))
            result.created.append(entry.id)
    wanted = {entry.id for entry in entries}
    for schedule_id in await managed_schedule_ids(client, task_queue=task_queue):
        if schedule_id not in wanted:
            await client.get_schedule_handle(schedule_id).delete()
            result.deleted.append(schedule_id)
    return result


def _replace_with(schedule: TemporalSchedule) -> Callable[[ScheduleUpdateInput], ScheduleUpdate]:
    def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
        # Spec, action, policies and state (paused) all come from the file.
        return ScheduleUpdate(schedule=schedule)

    return update


def is_managed(memo: Mapping[str, Any], task_queue: str) -> bool:
    """Whether a schedule's memo marks it as `sync`'s for `task_queue`."""
    return all(memo.get(key) == value for key, value in managed_memo(task_queue).items())


async def describe_schedule(client: Client, schedule_id: str) -> ScheduleDescription | None:
    """The schedule's description, or None when Temporal has no schedule of that id."""
    try:
        return await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
