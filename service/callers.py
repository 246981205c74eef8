"""Who a run acts for: the CallerContext of each path, with its session id."""

from __future__ import annotations

import datetime as dt

from service.store import ClaimedRun, Grant, User
from telemetry import (
    CallerContext,
    derive_adhoc_session_id,
    derive_schedule_session_id,
    derive_user_session_id,
)

__all__ = ["governance_caller", "recorded_caller", "user_caller"]


def user_caller(
    *, user: User, state_key: str, graph_id: str, request_id: str, run_id: str
) -> CallerContext:
    """A chat run: one session per conversation (state key) of the billing account."""
    return CallerContext(
        billing_account_id=user.billing_account_id,
        user_id=user.id,
        session_id=derive_user_session_id(user.billing_account_id, state_key),
        request_id=request_id,
        run_id=run_id,
        trigger="user",
        graph_id=graph_id,
        tags=("user", graph_id),
        metadata={"run_id": run_id, "request_id": request_id},
    )


def governance_caller(
    *,
    grant: Grant,
    graph_id: str,
    schedule_id: str | None,
    idempotency_key: str,
    scheduled_for: dt.datetime | None,
    request_id: str,
    run_id: str,
) -> CallerContext:
    """A governance run, acting for the grant's user.

    All runs of one schedule share a session; a run without a schedule gets
    the session of its idempotency key, so a retried request stays in it.
    Trace metadata holds the trigger, schedule, grant and scheduled time;
    tags hold the trigger, graph, schedule and grant, so Langfuse filters all
    runs of one schedule. The scheduled time is metadata only: one tag per
    firing would flood Langfuse's tag list.
    """
    if schedule_id is not None:
        session_id = derive_schedule_session_id(grant.billing_account_id, schedule_id)
    else:
        session_id = derive_adhoc_session_id(grant.billing_account_id, idempotency_key)
    metadata = {"run_id": run_id, "request_id": request_id, "grant_id": grant.id}
    tags = ["schedule", graph_id]
    if schedule_id is not None:
        metadata["schedule_id"] = schedule_id
        tags.append(f"schedule:{schedule_id}")
    tags.append(f"grant:{grant.id}")
    if scheduled_for is not None:
        metadata["scheduled_for"] = scheduled_for.astimezone(dt.UTC).isoformat()
    return CallerContext(
        billing_account_id=grant.billing_account_id,
        user_id=grant.user_id,
        session_id=session_id,
        request_id=request_id,
        run_id=run_id,
        trigger="schedule",
        graph_id=graph_id,
        schedule_id=schedule_id,
        tags=tuple(tags),
        metadata=metadata,
    )


def recorded_caller(run: ClaimedRun, *, request_id: str) -> CallerContext:
    """The caller of a run an idempotency record holds, for a request answered from it.

    A replayed request starts no run, but its HTTP server span belongs to the
    run's session and user rather than to none: its own trace, one session.
    """
    return CallerContext(
        billing_account_id=run.billing_account_id,
        user_id=run.user_id,
        session_id=run.session_id,
        request_id=request_id,
        run_id=run.run_id,
        trigger="schedule",
        graph_id=run.graph_id,
        schedule_id=run.schedule_id,
    )
