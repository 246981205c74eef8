"""Idempotent governance runs: the request hash, and the answer a known key gets.

Semantics of `Idempotency-Key` on the internal runs route:
- a new key is claimed (a pending record) before the run starts and finished
  with the run's outcome, `ok: false` included;
- the same key and request again: 200 with the stored body, and no run;
- the same key while its run is still going: 409;
- the same key with another request (graph, grant, schedule, time, run id or
  input differ): 422;
- a refusal before the run (401, 400, 404, 403) stores nothing: the key stays free;
- a key left pending by a process that died mid-run may run again once it is
  older than IDEMPOTENCY_PENDING_TIMEOUT_SECONDS (0: it stays pending); that
  run's trace names the attempt it retakes (`retakes_run_id`, `attempt`);
- a run that ended answers its outcome even when storing it failed (after
  retrying while the database was locked): the key stays pending, and since
  the pending timeout exceeds RUN_TIMEOUT_SECONDS and the time storing may
  take, no retry runs it again while the first run may still be going.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from opentelemetry import trace

from service.errors import ApiError
from service.schemas import RunRequest, RunResponse
from service.store import IdempotencyRecord, IdempotencyStatus

__all__ = [
    "IDEMPOTENCY_STATUS",
    "REPLAYED_HEADER",
    "answer_known_key",
    "mark_request",
    "request_hash",
]

# On the HTTP server span: what the key made of this request (started,
# resumed, replayed, in_progress, conflict).
IDEMPOTENCY_STATUS = "sessiontrace.idempotency.status"
# On the HTTP server span of a request answered from a record: the run it answered for.
IDEMPOTENCY_RUN_ID = "sessiontrace.idempotency.run_id"
REPLAYED_HEADER = "Idempotent-Replayed"


def request_hash(graph_id: str, body: RunRequest) -> str:
    """sha256 of the canonical JSON of everything that decides what runs and for whom."""
    document: dict[str, Any] = {
        "graphId": graph_id,
        "executionGrantId": body.execution_grant_id,
        "scheduleId": body.schedule_id,
        # One instant, one hash, whatever offset the client wrote it with.
        "scheduledFor": None
        if body.scheduled_for is None
        else body.scheduled_for.astimezone(dt.UTC).isoformat(),
        "runId": body.run_id,
        "input": body.input.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def answer_known_key(record: IdempotencyRecord, fingerprint: str) -> RunResponse:
    """The stored outcome of a finished key; ApiError 422 or 409 otherwise.

    Such a request starts no run, so it binds no caller: its HTTP server span
    has no session and the Langfuse pipeline of the collector leaves it out
    (Langfuse gets one trace per run). It names the run it answered for, for
    an operations backend.
    """
    if record.request_hash != fingerprint:
        mark_request("conflict")
        raise ApiError(
            422, "idempotency_key_reused",
            f"Idempotency-Key {record.key!r} was already used for a different request "
            "(graph, grant, schedule, scheduled time, run id or input differ); use a new key",
        )
    trace.get_current_span().set_attribute(IDEMPOTENCY_RUN_ID, record.run.run_id)
    if record.status is IdempotencyStatus.PENDING or record.response is None:
        mark_request("in_progress")
        raise ApiError(
            409, "idempotency_key_in_progress",
            f"the run of Idempotency-Key {record.key!r} (run {record.run.run_id!r}, started "
            f"{record.claimed_at.isoformat()}) is still in progress; retry later for its "
            "outcome",
        )
    mark_request("replayed")
    return RunResponse.model_validate(record.response)


def mark_request(status: str) -> None:
    """Note on the HTTP server span what the idempotency key made of this request."""
    trace.get_current_span().set_attribute(IDEMPOTENCY_STATUS, status)
