"""`schedules list` with Temporal: each schedule as Temporal runs it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.client import Client

from service.schedules import Schedule, utc_text
from service.temporal._firings import last_firing
from service.temporal._schedules import describe_schedule, managed_schedule_ids

__all__ = ["schedule_views"]

_NEXT_TIMES = 3


async def schedule_views(
    client: Client, entries: Sequence[Schedule], *, task_queue: str
) -> dict[str, Any]:
    """Each entry with Temporal's view of it (next firings, paused, last firing and its outcome),
    and the managed schedules no entry names any more (`sync` deletes them)."""
    views = []
    for entry in entries:
        view: dict[str, Any] = {
            "id": entry.id,
            "cron": entry.cron,
            "timezone": entry.timezone,
            "graph": entry.graph,
            "grant": entry.grant,
        }
        description = await describe_schedule(client, entry.id)
        view["inTemporal"] = description is not None
        if description is not None:
            info = description.info
            next_times = [utc_text(moment) for moment in info.next_action_times[:_NEXT_TIMES]]
            view |= {
                "paused": description.schedule.state.paused,
                "nextFireAt": next_times[0] if next_times else None,
                "nextFireTimes": next_times,
                "firings": info.num_actions,
                "skippedOverlap": info.num_actions_skipped_overlap,
                "missedCatchupWindow": info.num_actions_missed_catchup_window,
                "lastFiring": await last_firing(client, description),
            }
        views.append(view)
    wanted = {entry.id for entry in entries}
    managed = await managed_schedule_ids(client, task_queue=task_queue)
    return {"schedules": views, "notInFile": [i for i in managed if i not in wanted]}

