"""Idempotency records of the internal runs route: claimed before a run starts, finished after.

A key is claimed in one write transaction (`BEGIN IMMEDIATE`), so of two
requests racing with one key exactly one gets the claim and starts a run; the
other finds the record pending. Only the claim's holder (its `claim_id`) may
finish or release the record: an attempt that lost its claim to a takeover
cannot overwrite the outcome of the attempt that replaced it.

Finishing retries while the database is locked, for up to FINISH_RETRY_SECONDS:
a run that completed must not lose its outcome to a short lock.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.store.database import Database, from_iso, retrying_while_busy, to_iso, utc_now

__all__ = [
    "FINISH_RETRY_SECONDS",
    "Claim",
    "ClaimedRun",
    "IdempotencyRecord",
    "IdempotencyStatus",
    "claim_idempotency_key",
    "finish_idempotency_key",
    "get_idempotency_record",
    "release_idempotency_key",
]


# How long storing a run's outcome keeps trying while the database is locked.
# Part of the margin the settings allow after RUN_TIMEOUT_SECONDS
# (service.config.OUTCOME_MARGIN_SECONDS), so a key whose outcome could not be
# stored cannot be taken over while its run might still be going.
FINISH_RETRY_SECONDS = 10.0


class IdempotencyStatus(StrEnum):
    """Where the run of a key stands."""

    PENDING = "pending"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRun:
    """What a claim records about the run it is about to start."""

    graph_id: str
    grant_id: str
    billing_account_id: str
    user_id: str
    schedule_id: str | None
    run_id: str
    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """One Idempotency-Key: the request it stands for, and its run's outcome once finished."""

    key: str
    request_hash: str
    status: IdempotencyStatus
    claim_id: str
    attempts: int
    run: ClaimedRun
    response: Mapping[str, Any] | None
    created_at: dt.datetime
    claimed_at: dt.datetime
    finished_at: dt.datetime | None

    def is_abandoned(self, *, now: dt.datetime, pending_timeout: dt.timedelta | None) -> bool:
        """Pending for longer than `pending_timeout` (None: never): its process likely died."""
        return (
            self.status is IdempotencyStatus.PENDING
            and pending_timeout is not None
            and self.claimed_at + pending_timeout <= now
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: `acquired` means this request must run and finish the key.

    `retaken` is the abandoned attempt an acquired claim took over (its run id,
    when it was claimed), as it was just before; None for a new key.
    """

    record: IdempotencyRecord
    acquired: bool
    retaken: IdempotencyRecord | None = None


def get_idempotency_record(db: Database, key: str) -> IdempotencyRecord | None:
    """The record of `key`, or None."""
    with db.connect() as connection:
        row = connection.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
    return None if row is None else _record(row)


def claim_idempotency_key(
    db: Database,
    key: str,
    *,
    request_hash: str,
    run: ClaimedRun,
    pending_timeout: dt.timedelta | None,
    now: dt.datetime | None = None,
) -> Claim:
    """Claim `key` for `run`: a new key, or an abandoned pending one of the same request.

    Otherwise the existing record is returned unclaimed, for the caller to
    answer from (finished, still pending, or another request's key).
    """
    claim_id = secrets.token_hex(16)
    retaken: IdempotencyRecord | None = None
    with db.connect() as connection:
        # Taking the write lock before reading makes read-decide-write atomic
        # across processes, not only across this process's threads.
        connection.execute("BEGIN IMMEDIATE")
        # Read once the lock is held: claimed_at is when the run may start,
        # not when this request began waiting for the lock.
        moment = now or utc_now()
        row = connection.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        if row is None:
            connection.execute(
                "INSERT INTO idempotency_keys (key, request_hash, status, claim_id, graph_id, "
                "grant_id, billing_account_id, user_id, schedule_id, run_id, session_id, "
                "created_at, claimed_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, request_hash, claim_id, *_run_columns(run), to_iso(moment), to_iso(moment)),
            )
        else:
            existing = _record(row)
            if existing.request_hash != request_hash or not existing.is_abandoned(
                now=moment, pending_timeout=pending_timeout
            ):
                return Claim(existing, acquired=False)
            retaken = existing
            connection.execute(
                "UPDATE idempotency_keys SET claim_id = ?, attempts = attempts + 1, graph_id = ?, "
                "grant_id = ?, billing_account_id = ?, user_id = ?, schedule_id = ?, run_id = ?, "
                "session_id = ?, claimed_at = ? WHERE key = ? AND claim_id = ?",
                (claim_id, *_run_columns(run), to_iso(moment), key, existing.claim_id),
            )
        row = connection.execute("SELECT * FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
    return Claim(_record(row), acquired=True, retaken=retaken)


def finish_idempotency_key(
    db: Database,
    key: str,
    *,
    claim_id: str,
    response: Mapping[str, Any],
    now: dt.datetime | None = None,
    retry_for: float = FINISH_RETRY_SECONDS,
) -> bool:
    """Store the outcome of the claimed run; False when the claim was taken over meanwhile.

    While the database is locked it tries again for up to `retry_for` seconds,
    then raises the last sqlite3.OperationalError (the key stays pending).
    """
    document = json.dumps(dict(response), sort_keys=True)

    def finish(connection: sqlite3.Connection) -> bool:
        updated = connection.execute(
            "UPDATE idempotency_keys SET status = 'finished', response = ?, finished_at = ? "
            "WHERE key = ? AND claim_id = ? AND status = 'pending'",
            (document, to_iso(now or utc_now()), key, claim_id),
        ).rowcount
        return updated == 1

    return retrying_while_busy(db, finish, within=retry_for)


def release_idempotency_key(db: Database, key: str, *, claim_id: str) -> bool:
    """Forget a claimed key whose run never finished, so a retry may start it again."""
    with db.connect() as connection:
        deleted = connection.execute(
            "DELETE FROM idempotency_keys WHERE key = ? AND claim_id = ? AND status = 'pending'",
            (key, claim_id),
        ).rowcount
    return deleted == 1


def _run_columns(run: ClaimedRun) -> tuple[str | None, ...]:
    return (
        run.graph_id, run.grant_id, run.billing_account_id, run.user_id, run.schedule_id,
        run.run_id, run.session_id,
    )


def _record(row: sqlite3.Row) -> IdempotencyRecord:
    created_at, claimed_at = from_iso(row["created_at"]), from_iso(row["claimed_at"])
    assert created_at is not None and claimed_at is not None  # NOT NULL columns
    return IdempotencyRecord(
        key=row["key"],
        request_hash=row["request_hash"],
        status=IdempotencyStatus(row["status"]),
        claim_id=row["claim_id"],
        attempts=row["attempts"],
        run=ClaimedRun(
            graph_id=row["graph_id"],
            grant_id=row["grant_id"],
            billing_account_id=row["billing_account_id"],
            user_id=row["user_id"],
            schedule_id=row["schedule_id"],
            run_id=row["run_id"],
            session_id=row["session_id"],
        ),
        response=None if row["response"] is None else json.loads(row["response"]),
        created_at=created_at,
        claimed_at=claimed_at,
        finished_at=from_iso(row["finished_at"]),
    )
