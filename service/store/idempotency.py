"""Idempotency records of the internal runs route: persisted only; the rules are in
`service.idempotency`.

Race-free across processes and hosts, on both backends. A new key is claimed with one
`INSERT ... ON CONFLICT DO NOTHING`, so of two requests racing with one key exactly one
inserts it and starts a run; the other finds the record. An existing record is read locked
(SQLite's write transaction, `BEGIN IMMEDIATE`; Postgres's `SELECT ... FOR UPDATE`) and
taken over only by a compare-and-swap on its `claim_id`. Only the claim's holder may finish
or release the record: an attempt that lost its claim to a takeover cannot overwrite the
outcome of the attempt that replaced it.

Finishing retries while the database is busy, for up to FINISH_RETRY_SECONDS: a run that
completed must not lose its outcome to a short lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.store.database import (
    Connection,
    Database,
    from_iso,
    retrying_while_busy,
    to_iso,
    utc_now,
)
from service.store._engine import Row

__all__ = [
    "FINISH_RETRY_SECONDS",
    "Claim",
    "ClaimedRun",
    "IdempotencyRecord",
    "IdempotencyStatus",
    "claim_idempotency_key",
    "finish_idempotency_key",
    "get_idempotency_record",
    "prune_idempotency_keys",
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


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: `acquired` means this request must run and finish the key.

    `retaken` is the abandoned attempt an acquired claim took over (its run id,
    when it was claimed), as it was just before; None for a new key.
    """

    record: IdempotencyRecord
    acquired: bool
    retaken: IdempotencyRecord | None = None


# Whether an existing record may be taken over at the given time (the caller's rule).
Retake = Callable[[IdempotencyRecord, dt.datetime], bool]
_SELECT = "SELECT * FROM idempotency_keys WHERE key = ?"


def get_idempotency_record(db: Database, key: str) -> IdempotencyRecord | None:
    """The record of `key`, or None."""
    with db.connect() as connection:
        row = connection.execute(_SELECT, (key,)).fetchone()
    return None if row is None else _record(row)


def claim_idempotency_key(
    db: Database,
    key: str,
    *,
    request_hash: str,
    run: ClaimedRun,
    may_retake: Retake | None = None,
    now: dt.datetime | None = None,
) -> Claim:
    """Claim `key` for `run`: a new key, or an existing record `may_retake` lets it take over.

    Otherwise the existing record is returned unclaimed, for the caller to answer from
    (finished, still pending, or another request's key). Without `may_retake`, no record
    is ever taken over.
    """
    claim_id = secrets.token_hex(16)
    while True:
        with db.connect(write=True) as connection:
            # Read once the lock is held: claimed_at is when the run may start,
            # not when this request began waiting for the lock. On the database's clock
            # where replicas may run on several hosts: a replica whose clock runs ahead
            # must not take a pending key over before its timeout.
            moment = now or _database_time(connection)
            inserted = connection.execute(
                "INSERT INTO idempotency_keys (key, request_hash, status, claim_id, graph_id, "
                "grant_id, billing_account_id, user_id, schedule_id, run_id, session_id, "
                "created_at, claimed_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, request_hash, claim_id, *_run_columns(run), to_iso(moment), to_iso(moment)),
            ).rowcount
            if inserted:
                record = IdempotencyRecord(
                    key=key, request_hash=request_hash, status=IdempotencyStatus.PENDING,
                    claim_id=claim_id, attempts=1, run=run, response=None,
                    created_at=moment, claimed_at=moment, finished_at=None,
                )
                return Claim(record, acquired=True)
            row = connection.execute(_SELECT + connection.dialect.for_update, (key,)).fetchone()
            if row is None:
                continue  # released between the insert and the read (Postgres): try again
            existing = _record(row)
            if may_retake is None or not may_retake(existing, moment):
                return Claim(existing, acquired=False)
            # Compare-and-swap on the claim: only the attempt that read it replaces it.
            swapped = connection.execute(
                "UPDATE idempotency_keys SET claim_id = ?, attempts = attempts + 1, graph_id = ?, "
                "grant_id = ?, billing_account_id = ?, user_id = ?, schedule_id = ?, run_id = ?, "
                "session_id = ?, claimed_at = ? WHERE key = ? AND claim_id = ?",
                (claim_id, *_run_columns(run), to_iso(moment), key, existing.claim_id),
            ).rowcount
            assert swapped == 1  # the row is locked: nobody swapped it since the read
            record = dataclasses.replace(
                existing, claim_id=claim_id, attempts=existing.attempts + 1, run=run,
                claimed_at=moment,
            )
            return Claim(record, acquired=True, retaken=existing)


def _database_time(connection: Connection) -> dt.datetime:
    query = connection.dialect.clock_query
    if query is None:
        return utc_now()
    row = connection.execute(query).fetchone()
    assert row is not None
    moment: dt.datetime = row["now"]
    return moment.astimezone(dt.UTC)


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

    While the database is busy it tries again for up to `retry_for` seconds, then
    raises the last busy error (service.store.database.is_busy); the key stays pending.
    """
    document = json.dumps(dict(response), sort_keys=True)

    def finish(connection: Connection) -> bool:
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


def prune_idempotency_keys(db: Database, *, finished_before: dt.datetime) -> int:
    """Delete the finished keys finished before `finished_before`; how many. Pending keys stay."""
    with db.connect() as connection:
        return connection.execute(
            "DELETE FROM idempotency_keys WHERE status = 'finished' AND finished_at < ?",
            (to_iso(finished_before),),
        ).rowcount


def _run_columns(run: ClaimedRun) -> tuple[str | None, ...]:
    return (
        run.graph_id, run.grant_id, run.billing_account_id, run.user_id, run.schedule_id,
        run.run_id, run.session_id,
    )


def _record(row: Row) -> IdempotencyRecord:
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
