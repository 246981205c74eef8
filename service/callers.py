"""Who a run acts for: the CallerContext of each path, with its session id."""

from __future__ import annotations

import datetime as dt

from service.store import Grant, User
from telemetry import (
    CallerContext,
    derive_adhoc_session_id,
    derive_schedule_session_id,
    derive_user_session_id,
)

__all__ = ["governance_caller", "user_caller"]


def user_caller(
    *,
    user: User,
    state_key: str,
    graph_id: str,
    request_id: str,
    run_id: str,
    extra_tags: tuple[str, ...] = (),
) -> CallerContext:
    """A chat run: one session per conversation (state key) of the billing account.

    Tags: the trigger `user`, the graph id, then `extra_tags` (the executor's
    LLM provider and environment). Never a user id: tags are for filtering.
    """
    return CallerContext(
        billing_account_id=user.billing_account_id,
        user_id=user.id,
        session_id=derive_user_session_id(user.billing_account_id, state_key),
        request_id=request_id,
        run_id=run_id,
        trigger="user",
        graph_id=graph_id,
        tags=("user", graph_id, *extra_tags),
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
    extra_tags: tuple[str, ...] = (),
) -> CallerContext:
    """A governance run, acting for the grant's user.

    All runs of one schedule share a session; a run without a schedule gets
    the session of its idempotency key, so a retried request stays in it.
    Tags: the trigger `schedule`, the graph id, `schedule:{id}`, then
    `extra_tags`; so Langfuse filters all runs (and the cost) of one schedule.
    The grant and the scheduled time are metadata only: tags are a short list
    to filter by, and one tag per grant or per firing would flood it.
    """
    if schedule_id is not None:
        session_id = derive_schedule_session_id(grant.billing_account_id, schedule_id)
    else:
        session_id = derive_adhoc_session_id(grant.billing_account_id, idempotency_key)
    metadata = {"grant_id": grant.id}
    tags = ["schedule", graph_id]
    if schedule_id is not None:
        tags.append(f"schedule:{schedule_id}")
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
        tags=(*tags, *extra_tags),
        metadata=metadata,
    )
