"""Idempotent governance runs: every rule of `Idempotency-Key`, in one place.

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
  retrying while the database was busy): the key stays pending, and since
  the pending timeout exceeds RUN_TIMEOUT_SECONDS and the time storing may
  take, no retry runs it again while the first run may still be going;
- finished keys older than IDEMPOTENCY_RETENTION_HOURS are pruned (0: kept for
  ever); pending keys never are.

The store (`service.store.idempotency`) only persists, race-free across processes; the
route (`service.routes.runs`) only calls `IdempotentRequest`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from opentelemetry import trace

from service.config import Settings
from service.errors import ApiError
from service.schemas import RunRequest, RunResponse
from service.store import (
    Claim,
    ClaimedRun,
    Database,
    IdempotencyRecord,
    IdempotencyStatus,
    claim_idempotency_key,
    finish_idempotency_key,
    get_idempotency_record,
    prune_idempotency_keys,
    release_idempotency_key,
)
from service.store.database import (
    ANSWER_MARGIN_SECONDS,
    in_thread,
    in_thread_within,
    utc_now,
)
from service.store.idempotency import FINISH_RETRY_SECONDS

__all__ = [
    "IDEMPOTENCY_RUN_ID",
    "IDEMPOTENCY_STATUS",
    "PRUNE_INTERVAL_SECONDS",
    "REPLAYED_HEADER",
    "IdempotencyPolicy",
    "IdempotentRequest",
    "prune_finished_keys",
    "pruning_periodically",
    "request_hash",
]

logger = logging.getLogger(__name__)

# On the HTTP server span: what the key made of this request (started,
# resumed, replayed, in_progress, conflict).
IDEMPOTENCY_STATUS = "sessiontrace.idempotency.status"
# On the HTTP server span of a request answered from a record: the run it answered for.
IDEMPOTENCY_RUN_ID = "sessiontrace.idempotency.run_id"
REPLAYED_HEADER = "Idempotent-Replayed"
# How often the service prunes finished keys (and once at start-up).
PRUNE_INTERVAL_SECONDS = 3600.0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyPolicy:
    """How long a pending key is trusted and a finished one kept; None: for ever."""

    pending_timeout: dt.timedelta | None
    retention: dt.timedelta | None

    @classmethod
    def from_settings(cls, settings: Settings) -> IdempotencyPolicy:
        """IDEMPOTENCY_PENDING_TIMEOUT_SECONDS and IDEMPOTENCY_RETENTION_HOURS; 0 means never."""
        return cls(
            pending_timeout=_never_if_zero(
                dt.timedelta(seconds=settings.idempotency_pending_timeout_seconds)
            ),
            retention=_never_if_zero(dt.timedelta(hours=settings.idempotency_retention_hours)),
        )

    def may_retake(self, record: IdempotencyRecord, fingerprint: str, now: dt.datetime) -> bool:
        """Whether a request may run again under `record`'s key: the same request, whose
        earlier attempt has been pending past the timeout (its process likely died)."""
        pending_timeout = self.pending_timeout
        return (
            self.could_retake(record, fingerprint)
            and pending_timeout is not None
            and record.claimed_at + pending_timeout <= now
        )

    def could_retake(self, record: IdempotencyRecord, fingerprint: str) -> bool:
        """Whether `may_retake` can ever say yes for `record`, whatever the time."""
        return (
            record.request_hash == fingerprint
            and record.status is IdempotencyStatus.PENDING
            and self.pending_timeout is not None
        )


class IdempotentRequest:
    """One request of the internal runs route under its Idempotency-Key."""

    def __init__(
        self,
        *,
        database: Database,
        policy: IdempotencyPolicy,
        key: str,
        fingerprint: str,
        response: Response,
    ) -> None:
        self._database = database
        self._policy = policy
        self._key = key
        self._fingerprint = fingerprint
        self._response = response

    async def known_answer(self) -> RunResponse | None:
        """The answer of a key already used (a replay, or ApiError 409/422); None: run."""
        record = await in_thread(get_idempotency_record, self._database, self._key)
        # Whether a pending key's time is up is the claim's to say, on the database's clock
        # (replicas' own clocks may disagree); a pending key it does not take is answered then.
        if record is None or self._policy.could_retake(record, self._fingerprint):
            return None
        return self._answer(record)

    async def run_once(
        self, run: ClaimedRun, execute: Callable[[Claim], Awaitable[RunResponse]]
    ) -> RunResponse:
        """Claim the key for `run`, `execute` it and store its outcome; or answer the key.

        `execute` turns every failure of the run into an outcome; it gets the claim,
        which names the attempt a takeover retakes. A run that is cancelled (or raises)
        has no outcome: its key is released for a retry.
        """
        policy, fingerprint = self._policy, self._fingerprint
        claim = await in_thread(
            claim_idempotency_key, self._database, self._key, request_hash=fingerprint,
            run=run, may_retake=lambda record, now: policy.may_retake(record, fingerprint, now),
        )
        if not claim.acquired:
            # Another request with this key claimed it between our look-up and now.
            return self._answer(claim.record)
        if claim.retaken is not None:
            logger.warning(
                "Idempotency-Key %r: run %s retakes run %s, pending since %s (attempt %d)",
                self._key, run.run_id, claim.retaken.run.run_id,
                claim.retaken.claimed_at.isoformat(), claim.record.attempts,
            )
        _mark_request("started" if claim.retaken is None else "resumed")
        try:
            result = await execute(claim)
        except BaseException:
            self._release(claim.record.claim_id)
            raise
        await self._store(claim.record.claim_id, result)
        return result

    async def _store(self, claim_id: str, result: RunResponse) -> None:
        try:
            # Retries while the database is busy (FINISH_RETRY_SECONDS), so waits that long
            # and one more busy timeout before taking the server for hung.
            stored = await in_thread_within(
                FINISH_RETRY_SECONDS + self._database.busy_timeout + ANSWER_MARGIN_SECONDS,
                finish_idempotency_key, self._database, self._key, claim_id=claim_id,
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
                "answered, the key stays pending, and a retry of the key runs the graph again "
                "once older than IDEMPOTENCY_PENDING_TIMEOUT_SECONDS",
                self._key, result.run_id, result.ok,
            )
            return
        if not stored:
            logger.warning(
                "Idempotency-Key %r was taken over while run %s went on; its outcome is "
                "answered but not stored", self._key, result.run_id,
            )

    def _release(self, claim_id: str) -> None:
        # Blocking, on purpose: a cancelled task cannot await, and the key must be freed.
        try:
            release_idempotency_key(self._database, self._key, claim_id=claim_id)
        except Exception:
            # The cancellation goes on; the key stays pending until its timeout.
            logger.exception(
                "Idempotency-Key %r: releasing the key of a cancelled run failed", self._key
            )

    def _answer(self, record: IdempotencyRecord) -> RunResponse:
        """The stored outcome of a finished key; ApiError 422 or 409 otherwise.

        Such a request starts no run, so it binds no caller: its HTTP server span
        has no session and the Langfuse pipeline of the collector leaves it out
        (Langfuse gets one trace per run). It names the run it answered for, for
        an operations backend.
        """
        if record.request_hash != self._fingerprint:
            _mark_request("conflict")
            raise ApiError(
                422, "idempotency_key_reused",
                f"Idempotency-Key {record.key!r} was already used for a different request "
                "(graph, grant, schedule, scheduled time, run id or input differ); use a new key",
            )
        trace.get_current_span().set_attribute(IDEMPOTENCY_RUN_ID, record.run.run_id)
        if record.status is IdempotencyStatus.PENDING or record.response is None:
            _mark_request("in_progress")
            raise ApiError(
                409, "idempotency_key_in_progress",
                f"the run of Idempotency-Key {record.key!r} (run {record.run.run_id!r}, started "
                f"{record.claimed_at.isoformat()}) is still in progress; retry later for its "
                "outcome",
            )
        _mark_request("replayed")
        self._response.headers[REPLAYED_HEADER] = "true"
        return RunResponse.model_validate(record.response)


def prune_finished_keys(
    database: Database, policy: IdempotencyPolicy, *, now: dt.datetime | None = None
) -> int:
    """Delete finished keys older than the retention (none when kept for ever); how many."""
    if policy.retention is None:
        return 0
    return prune_idempotency_keys(database, finished_before=(now or utc_now()) - policy.retention)


async def pruning_periodically(
    database: Database, policy: IdempotencyPolicy, *, interval: float = PRUNE_INTERVAL_SECONDS
) -> None:
    """Prune finished keys now and every `interval` seconds, until cancelled; never raises."""
    if policy.retention is None:
        return
    while True:
        try:
            pruned = await asyncio.to_thread(prune_finished_keys, database, policy)
        except Exception:
            # The next round tries again; keys kept a little longer harm nobody.
            logger.exception("pruning finished idempotency keys failed")
        else:
            if pruned:
                logger.info("pruned %d finished idempotency keys", pruned)
        await asyncio.sleep(interval)


def _never_if_zero(duration: dt.timedelta) -> dt.timedelta | None:
    return duration if duration > dt.timedelta(0) else None


def _mark_request(status: str) -> None:
    """Note on the HTTP server span what the idempotency key made of this request."""
    trace.get_current_span().set_attribute(IDEMPOTENCY_STATUS, status)
