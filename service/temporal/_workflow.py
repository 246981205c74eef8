"""The workflow each schedule starts: one firing, retried by Temporal until it has an outcome."""

from __future__ import annotations

import datetime as dt

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from service.schedules import Schedule
    from service.schemas import RunResponse
    from service.temporal._firing import FIRE_ACTIVITY, FIRING_WORKFLOW, Firing

__all__ = [
    "FIRING_RETRY_POLICY",
    "HEARTBEAT_TIMEOUT",
    "MIN_RETRY_WINDOW",
    "SCHEDULED_START_TIME",
    "GovernanceFiring",
]

# Set by Temporal on every workflow a schedule starts: the firing's time (the action's nominal
# time plus jitter, or the trigger's time), in whole seconds.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# A worker that dies mid-firing stops heartbeating; after this long Temporal gives the firing
# to another worker, which sends the same Idempotency-Key.
HEARTBEAT_TIMEOUT = dt.timedelta(seconds=15)
# Backs off like the embedded scheduler: 5 s, doubling, at most 5 minutes between attempts.
# Which answers are final is the activity's call (a non-retryable ApplicationError).
FIRING_RETRY_POLICY = RetryPolicy(
    initial_interval=dt.timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=dt.timedelta(minutes=5),
)
# A firing retries until the schedule's next one is due (that one takes over, as in the
# embedded scheduler), but never for less than this.
MIN_RETRY_WINDOW = dt.timedelta(minutes=1)


@workflow.defn(name=FIRING_WORKFLOW)
class GovernanceFiring:
    """Fire `schedule` once for the time Temporal scheduled this workflow; its result is the run's."""

    @workflow.run
    async def run(self, schedule: Schedule) -> RunResponse:
        """Call the internal runs route (activity) until it answers with the run's outcome."""
        scheduled_for = _scheduled_for()
        window = max(schedule.next_fire_after(scheduled_for) - workflow.now(), MIN_RETRY_WINDOW)
        outcome: RunResponse = await workflow.execute_activity(
            FIRE_ACTIVITY,
            Firing(schedule=schedule, scheduled_for=scheduled_for),
            result_type=RunResponse,
            schedule_to_close_timeout=window,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=FIRING_RETRY_POLICY,
            summary=f"fire {schedule.id} for {scheduled_for.isoformat()}",
        )
        return outcome


def _scheduled_for() -> dt.datetime:
    info = workflow.info()
    scheduled = info.typed_search_attributes.get(SCHEDULED_START_TIME)
    # A workflow started by hand, not by a schedule: its own start time names the firing.
    moment = scheduled if scheduled is not None else info.start_time
    return moment.astimezone(dt.UTC).replace(microsecond=0)
