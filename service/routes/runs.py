"""The governance path: `POST /api/internal/graphs/{graphId}/runs`, for the scheduler."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service.callers import governance_caller
from service.config import Settings
from service.deps import (
    DatabaseDep,
    ExecutorDep,
    IdempotencyKeyDep,
    RegistryDep,
    RequestIdDep,
    SchedulerAuthDep,
    SettingsDep,
    json_body,
    openapi_body,
)
from service.errors import ApiError
from service.graphs import Graph, GraphExecutor, GraphRunError, current_trace_id
from service.idempotency import REPLAYED_HEADER, answer_known_key, mark_request, request_hash
from service.schemas import RunRequest, RunResponse
from service.store import (
    ClaimedRun,
    Database,
    GrantDenial,
    IdempotencyRecord,
    check_grant,
    claim_idempotency_key,
    finish_idempotency_key,
    get_grant,
    get_idempotency_record,
    release_idempotency_key,
)
from service.store.database import utc_now
from service.caller import CallerContext, bind_caller

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
    idempotency_key: IdempotencyKeyDep,
    body: RunBodyDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
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
    fingerprint = request_hash(graph.id, body)
    pending_timeout = _pending_timeout(settings)
    known = await asyncio.to_thread(get_idempotency_record, database, idempotency_key)
    if known is not None and not _abandoned_by_same_request(known, fingerprint, pending_timeout):
        return _answer_known(known, fingerprint, response)
    grant = await asyncio.to_thread(get_grant, database, body.execution_grant_id)
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
    claim = await asyncio.to_thread(
        claim_idempotency_key, database, idempotency_key, request_hash=fingerprint,
        run=_claimed_run(caller, grant_id=grant.id), pending_timeout=pending_timeout,
    )
    if not claim.acquired:
        # Another request with this key claimed it between our look-up and now.
        return _answer_known(claim.record, fingerprint, response)
    if claim.retaken is not None:
        # The trace says which earlier attempt this run repeats.
        caller = caller_of_run(
            retakes_run_id=claim.retaken.run.run_id, attempt=claim.record.attempts
        )
        logger.warning(
            "Idempotency-Key %r: run %s retakes run %s, pending since %s (attempt %d)",
            idempotency_key, caller.run_id, claim.retaken.run.run_id,
            claim.retaken.claimed_at.isoformat(), claim.record.attempts,
        )
    mark_request("started" if claim.retaken is None else "resumed")
    return await _run_and_record(
        executor, graph, body, caller, database=database, key=idempotency_key,
        claim_id=claim.record.claim_id,
    )


async def _run_and_record(
    executor: GraphExecutor,
    graph: Graph,
    body: RunRequest,
    caller: CallerContext,
    *,
    database: Database,
    key: str,
    claim_id: str,
) -> RunResponse:
    with bind_caller(caller):
        try:
            outcome = await executor.run(graph, body.run_input())
            result = RunResponse(
                ok=True, run_id=caller.run_id, trace_id=outcome.trace_id,
                session_id=caller.session_id,
            )
        except GraphRunError as exc:
            result = RunResponse(
                ok=False, run_id=caller.run_id, trace_id=exc.trace_id,
                session_id=caller.session_id, error=str(exc),
            )
        except Exception as exc:
            # Still an outcome: stored and answered like any failed run, so a
            # retry replays it instead of finding the key pending.
            logger.exception("graph %s: run %s failed", graph.id, caller.run_id)
            result = RunResponse(
                ok=False, run_id=caller.run_id, trace_id=current_trace_id(),
                session_id=caller.session_id,
                error=f"the run failed unexpectedly ({type(exc).__name__})",
            )
        except BaseException:
            # Cancelled (shutdown): no outcome exists, so free the key for a
            # retry rather than leave it pending until the timeout.
            _release(database, key, claim_id=claim_id)
            raise
    try:
        # Retries while the database is locked (FINISH_RETRY_SECONDS).
        stored = await asyncio.to_thread(
            finish_idempotency_key, database, key, claim_id=claim_id,
            response=result.model_dump(mode="json", by_alias=True, exclude_unset=True),
        )
    except Exception:
        # The run happened: a 500 would hide its outcome and invite a retry.
        # The key stays pending, so a retry answers 409 until it is older than
        # IDEMPOTENCY_PENDING_TIMEOUT_SECONDS, which the settings check keeps
        # past this run's deadline and this write's retries: no second run can
        # start while this one might still be going.
        logger.exception(
            "Idempotency-Key %r: the outcome of run %s (ok=%s) could NOT be stored; it is "
            "answered, the key stays pending, and a retry of the key runs the graph again once "
            "older than IDEMPOTENCY_PENDING_TIMEOUT_SECONDS", key, caller.run_id, result.ok,
        )
        return result
    if not stored:
        logger.warning(
            "Idempotency-Key %r was taken over while run %s went on; its outcome is answered "
            "but not stored", key, caller.run_id,
        )
    return result


def _release(database: Database, key: str, *, claim_id: str) -> None:
    try:
        release_idempotency_key(database, key, claim_id=claim_id)
    except Exception:
        # The cancellation goes on; the key stays pending until its timeout.
        logger.exception("Idempotency-Key %r: releasing the key of a cancelled run failed", key)


def _answer_known(
    record: IdempotencyRecord, fingerprint: str, response: Response
) -> RunResponse:
    answer = answer_known_key(record, fingerprint)
    response.headers[REPLAYED_HEADER] = "true"
    return answer


def _abandoned_by_same_request(
    record: IdempotencyRecord, fingerprint: str, pending_timeout: dt.timedelta | None
) -> bool:
    return record.request_hash == fingerprint and record.is_abandoned(
        now=utc_now(), pending_timeout=pending_timeout
    )


def _pending_timeout(settings: Settings) -> dt.timedelta | None:
    seconds = settings.idempotency_pending_timeout_seconds
    return dt.timedelta(seconds=seconds) if seconds > 0 else None


def _claimed_run(caller: CallerContext, *, grant_id: str) -> ClaimedRun:
    return ClaimedRun(
        graph_id=caller.graph_id, grant_id=grant_id, billing_account_id=caller.billing_account_id,
        user_id=caller.user_id, schedule_id=caller.schedule_id, run_id=caller.run_id,
        session_id=caller.session_id,
    )
