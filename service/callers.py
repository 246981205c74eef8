"""Who a run acts for: the CallerContext of each path, with its session id."""

from __future__ import annotations

import datetime as dt

from service.store import Grant, User
from sessiontrace import derive_adhoc_session_id, derive_schedule_session_id, derive_user_session_id
from service.caller import CallerContext

__all__ = ["governance_caller", "user_caller", "user_session_id"]


def user_session_id(*, billing_account_id: str, user_id: str, state_key: str) -> str:
    """The session of one user's conversation: the state key is the user's own.

    Another user of the same billing account sending the same state key gets
    another session, so nobody can write into a conversation they do not own.
    """
    # User ids never contain "/" (validate_user_id), so the composed key is unambiguous.
    return derive_user_session_id(billing_account_id, f"{user_id}/{state_key}")


def user_caller(
    *,
    user: User,
    state_key: str,
    graph_id: str,
    request_id: str,
    run_id: str,
    extra_tags: tuple[str, ...] = (),
    client_request_id: str | None = None,
) -> CallerContext:
    """A chat run: one session per conversation (state key) of the user.

    Tags: the trigger `user`, the graph id, then `extra_tags` (the executor's
    LLM provider and environment). Never a user id: tags are for filtering.
    The request id is the service's own; the id the client sent, if any, is
    metadata `client_request_id`.
    """
    metadata = {} if client_request_id is None else {"client_request_id": client_request_id}
    return CallerContext(
        billing_account_id=user.billing_account_id,
        user_id=user.id,
        session_id=user_session_id(
            billing_account_id=user.billing_account_id, user_id=user.id, state_key=state_key
        ),
        request_id=request_id,
        run_id=run_id,
        trigger="user",
        graph_id=graph_id,
        tags=("user", graph_id, *extra_tags),
        metadata=metadata,
        mask_content=user.mask_content,
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
    retakes_run_id: str | None = None,
    attempt: int = 1,
) -> CallerContext:
    """A governance run, acting for the grant's user.

    All runs of one schedule share a session; a run without a schedule gets
    the session of its idempotency key, so a retried request stays in it.
    Tags: the trigger `schedule`, the graph id, `schedule:{id}`, then
    `extra_tags`; so Langfuse filters all runs (and the cost) of one schedule.
    The grant and the scheduled time are metadata only: tags are a short list
    to filter by, and one tag per grant or per firing would flood it.

    A run that takes over the abandoned pending key of an earlier attempt
    names it: metadata `retakes_run_id` (that attempt's run id) and `attempt`
    (this one's number, from 2), so its trace says which run it repeats.
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
    if retakes_run_id is not None:
        metadata["retakes_run_id"] = retakes_run_id
        metadata["attempt"] = str(attempt)
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
        mask_content=grant.mask_content,
    )
