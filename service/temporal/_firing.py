"""What one firing is, shared by the workflow, its activity and the schedules that start it.

Kept free of Temporal's worker and of HTTP: the workflow sandbox imports it.
"""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, BaseModel, ConfigDict

from service.schedules import Schedule, idempotency_key

__all__ = [
    "FIRE_ACTIVITY",
    "FIRING_WORKFLOW",
    "MANAGED_BY",
    "Firing",
    "managed_memo",
]

FIRING_WORKFLOW = "GovernanceFiring"
FIRE_ACTIVITY = "fire_governance_run"
# The memo `schedules sync` puts on the schedules it creates: it updates and deletes those
# (of its task queue) only, never a schedule someone else made in the namespace.
MANAGED_BY = "sessiontrace"


def managed_memo(task_queue: str) -> dict[str, str]:
    """The memo marking a schedule as `schedules sync`'s, for `task_queue`."""
    return {"managedBy": MANAGED_BY, "taskQueue": task_queue}


class Firing(BaseModel):
    """One firing of `schedule`, for the time Temporal scheduled it."""

    model_config = ConfigDict(frozen=True)

    schedule: Schedule
    scheduled_for: AwareDatetime

    @property
    def idempotency_key(self) -> str:
        """`{scheduleId}:{scheduledFor}`: every attempt of this firing sends the same key."""
        return idempotency_key(self.schedule.id, self.scheduled_for)

    def scheduled_for_utc(self) -> dt.datetime:
        """The firing time in UTC."""
        return self.scheduled_for.astimezone(dt.UTC)
