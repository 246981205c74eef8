"""The governance path: `POST /api/internal/graphs/{graphId}/runs`, for the scheduler."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service.caller import CallerContext, bind_caller
from service.callers import governance_caller
from service.deps import (
    DatabaseDep,
    ExecutorDep,
    IdempotencyKeyDep,
    IdempotencyPolicyDep,
    RegistryDep,
    RequestIdDep,
    SchedulerAuthDep,
    json_body,
    openapi_body,
)
from service.errors import ApiError
from service.firing_link import FiringLinkDep
from service.graphs import Graph, GraphExecutor, GraphRunError, current_trace_id
from service.idempotency import IdempotentRequest, request_hash
from service.schemas import RunRequest, RunResponse
from service.store import Claim, ClaimedRun, GrantDenial, check_grant, get_grant
from service.store.database import in_thread

__all__ = ["router"]

logger = logging.getLogger(__name__)

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
    _firing: FiringLinkDep,
    idempotency_key: IdempotencyKeyDep,
    body: RunBodyDep,
    request_id: RequestIdDep,
    policy: IdempotencyPolicyDep,
    database: DatabaseDep,
    registry: RegistryDep,
    executor: ExecutorDep,
    response: Response,
) -> RunResponse:
    """Run a graph on behalf of the user an execution grant names, once per Idempotency-Key.

    A run that starts answers 200, with `ok: false` and `error` when it
    failed: the request itself was valid and its outcome is final. What a
    repeated key answers is described in `service.idempotency`.
    """
    graph = registry.get(graph_id)
    if graph is None:
        raise ApiError(404, "unknown_graph", f"graph {graph_id!r} does not exist")
    if not graph.runs_on("schedule"):
        raise ApiError(
            403, "graph_not_allowed",
            f"graph {graph.id!r} cannot run on the governance path; it runs from chat only",
        )
    keyed = IdempotentRequest(
        database=database, policy=policy,
        key=idempotency_key, fingerprint=request_hash(graph.id, body), response=response,
    )
    known = await keyed.known_answer()
    if known is not None:
        return known
    # With the account's masking: the run needs no other store call.
    grant = await in_thread(get_grant, database, body.execution_grant_id)
    denial = check_grant(grant, graph.id)
    if denial is not None or grant is None:
        denial = denial or GrantDenial.NOT_FOUND
        message = _DENIAL_MESSAGES[denial].format(grant=body.execution_grant_id, graph=graph.id)
        raise ApiError(403, denial.value, message)
    caller_of_run = functools.partial(
        governance_caller,
        grant=grant, graph_id=graph.id, schedule_id=body.schedule_id,
        idempotency_key=idempotency_key, scheduled_for=body.scheduled_for,
        request_id=request_id, run_id=body.run_id or uuid.uuid4().hex,
        extra_tags=executor.trace_tags,
    )
    caller = caller_of_run()

    async def execute(claim: Claim) -> RunResponse:
        retaken = claim.retaken
        # The trace says which earlier attempt this run repeats.
        repeat = caller if retaken is None else caller_of_run(
            retakes_run_id=retaken.run.run_id, attempt=claim.record.attempts
        )
        return await _run(executor, graph, body, repeat)

    return await keyed.run_once(_claimed_run(caller, grant_id=grant.id), execute)


async def _run(
    executor: GraphExecutor, graph: Graph, body: RunRequest, caller: CallerContext
) -> RunResponse:
    """The run's outcome: every failure of the run is one (`ok: false`), stored and answered."""
    error: str | None = None
    with bind_caller(caller):
        try:
            trace_id = (await executor.run(graph, body.run_input())).trace_id
        except GraphRunError as exc:
            trace_id, error = exc.trace_id, str(exc)
        except Exception as exc:
            # Still an outcome: stored and answered like any failed run, so a
            # retry replays it instead of finding the key pending.
            logger.exception("graph %s: run %s failed", graph.id, caller.run_id)
            trace_id = current_trace_id()
            error = f"the run failed unexpectedly ({type(exc).__name__})"
    # `error` only when it failed: an unset field stays out of the answer and the record.
    failure = {} if error is None else {"error": error}
    return RunResponse(
        ok=error is None, run_id=caller.run_id, trace_id=trace_id, session_id=caller.session_id,
        **failure,
    )


def _claimed_run(caller: CallerContext, *, grant_id: str) -> ClaimedRun:
    return ClaimedRun(
        graph_id=caller.graph_id, grant_id=grant_id, billing_account_id=caller.billing_account_id,
        user_id=caller.user_id, schedule_id=caller.schedule_id, run_id=caller.run_id,
        session_id=caller.session_id,
    )
