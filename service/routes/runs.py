"""The governance path: `POST /api/internal/graphs/{graphId}/runs`, for the scheduler."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from service.callers import governance_caller
from service.deps import (
    DatabaseDep,
    ExecutorDep,
    IdempotencyKeyDep,
    RegistryDep,
    RequestIdDep,
    SchedulerAuthDep,
    json_body,
    openapi_body,
)
from service.errors import ApiError
from service.graphs import GraphRunError
from service.schemas import RunRequest, RunResponse
from service.store import GrantDenial, check_grant, get_grant
from telemetry import bind_caller

__all__ = ["router"]

router = APIRouter(tags=["internal"])

RunBodyDep = Annotated[RunRequest, Depends(json_body(RunRequest))]

_DENIAL_MESSAGES = {
    GrantDenial.NOT_FOUND: "execution grant {grant!r} does not exist",
    GrantDenial.EXPIRED: "execution grant {grant!r} has expired",
    GrantDenial.REVOKED: "execution grant {grant!r} has been revoked",
    GrantDenial.GRAPH_NOT_COVERED: "execution grant {grant!r} does not cover graph {graph!r}",
}


@router.post(
    "/api/internal/graphs/{graph_id}/runs",
    response_model=RunResponse,
    response_model_exclude_unset=True,
    openapi_extra=openapi_body(RunRequest),
)
async def run_graph(
    graph_id: str,
    _: SchedulerAuthDep,
    idempotency_key: IdempotencyKeyDep,
    body: RunBodyDep,
    request_id: RequestIdDep,
    database: DatabaseDep,
    registry: RegistryDep,
    executor: ExecutorDep,
) -> RunResponse:
    """Run a graph on behalf of the user an execution grant names.

    A run that starts answers 200, with `ok: false` and `error` when it
    failed: the request itself was valid and its outcome is final.
    """
    graph = registry.get(graph_id)
    if graph is None:
        raise ApiError(404, "unknown_graph", f"graph {graph_id!r} does not exist")
    grant = await asyncio.to_thread(get_grant, database, body.execution_grant_id)
    denial = check_grant(grant, graph.id)
    if denial is not None or grant is None:
        denial = denial or GrantDenial.NOT_FOUND
        message = _DENIAL_MESSAGES[denial].format(grant=body.execution_grant_id, graph=graph.id)
        raise ApiError(403, denial.value, message)
    # The idempotency record of the governance issue belongs here: look the key
    # up before the run starts, store the outcome after it.
    caller = governance_caller(
        grant=grant, graph_id=graph.id, schedule_id=body.schedule_id,
        idempotency_key=idempotency_key, scheduled_for=body.scheduled_for,
        request_id=request_id, run_id=body.run_id or uuid.uuid4().hex,
    )
    with bind_caller(caller):
        try:
            outcome = await executor.run(graph, body.run_input())
        except GraphRunError as exc:
            return RunResponse(
                ok=False, run_id=caller.run_id, trace_id=exc.trace_id,
                session_id=caller.session_id, error=str(exc),
            )
    return RunResponse(
        ok=True, run_id=caller.run_id, trace_id=outcome.trace_id, session_id=caller.session_id
    )
