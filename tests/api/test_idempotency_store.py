"""The idempotency table: an atomic claim, and only the claim's holder finishes or releases it."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_support import Seed
from database_locks import write_lock_held
from service.store import (
    Claim,
    ClaimedRun,
    Database,
    IdempotencyStatus,
    claim_idempotency_key,
    finish_idempotency_key,
    get_idempotency_record,
    release_idempotency_key,
)
from sessiontrace import derive_schedule_session_id

KEY = "governance:community:2026-11-23T08:00:00Z"
HOUR = dt.timedelta(hours=1)


def claimed_run(grant_id: str, run_id: str = "run-1") -> ClaimedRun:
    return ClaimedRun(
        graph_id="builtin:governance-review", grant_id=grant_id, billing_account_id="acme",
        user_id="alice", schedule_id="governance:community", run_id=run_id,
        session_id=derive_schedule_session_id("acme", "governance:community"),
    )


def test_of_many_threads_claiming_one_key_at_once_exactly_one_acquires_it(
    database: Database, seed: Seed
) -> None:
    contenders = 8
    start = threading.Barrier(contenders)

    def claim(index: int) -> Claim:
        start.wait()
        return claim_idempotency_key(
            database, KEY, request_hash="h", run=claimed_run(seed.acme_grant, f"run-{index}"),
            pending_timeout=HOUR,
        )

    with ThreadPoolExecutor(contenders) as pool:
        claims = list(pool.map(claim, range(contenders)))

    winners = [c for c in claims if c.acquired]
    assert len(winners) == 1
    assert {c.record.claim_id for c in claims} == {winners[0].record.claim_id}
    assert all(c.record.status is IdempotencyStatus.PENDING for c in claims)


def test_an_attempt_that_lost_its_claim_to_a_takeover_cannot_store_its_outcome(
    database: Database, seed: Seed
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    dead = claim_idempotency_key(database, KEY, request_hash="h", run=claimed_run(seed.acme_grant),
                                 pending_timeout=HOUR, now=long_ago)
    takeover = claim_idempotency_key(database, KEY, request_hash="h",
                                     run=claimed_run(seed.acme_grant, "run-2"), pending_timeout=HOUR)

    assert dead.acquired and takeover.acquired
    assert takeover.record.attempts == 2
    assert not finish_idempotency_key(database, KEY, claim_id=dead.record.claim_id,
                                      response={"ok": False})
    assert not release_idempotency_key(database, KEY, claim_id=dead.record.claim_id)
    assert finish_idempotency_key(database, KEY, claim_id=takeover.record.claim_id,
                                  response={"ok": True, "runId": "run-2"})
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.response == {"ok": True, "runId": "run-2"}


def test_a_pending_key_is_not_taken_over_before_its_timeout_nor_by_another_request(
    database: Database, seed: Seed
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    claim_idempotency_key(database, KEY, request_hash="h", run=claimed_run(seed.acme_grant),
                          pending_timeout=HOUR, now=long_ago)

    too_soon = claim_idempotency_key(database, KEY, request_hash="h",
                                     run=claimed_run(seed.acme_grant), pending_timeout=3 * HOUR)
    other_request = claim_idempotency_key(database, KEY, request_hash="other",
                                          run=claimed_run(seed.acme_grant), pending_timeout=HOUR)
    never = claim_idempotency_key(database, KEY, request_hash="h",
                                  run=claimed_run(seed.acme_grant), pending_timeout=None)

    assert not too_soon.acquired and not other_request.acquired and not never.acquired


def test_a_released_key_can_be_claimed_again(database: Database, seed: Seed) -> None:
    first = claim_idempotency_key(database, KEY, request_hash="h",
                                  run=claimed_run(seed.acme_grant), pending_timeout=None)

    assert release_idempotency_key(database, KEY, claim_id=first.record.claim_id)
    assert get_idempotency_record(database, KEY) is None
    assert claim_idempotency_key(database, KEY, request_hash="h",
                                 run=claimed_run(seed.acme_grant), pending_timeout=None).acquired


def test_a_finished_key_is_never_claimed_again(database: Database, seed: Seed) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    first = claim_idempotency_key(database, KEY, request_hash="h", run=claimed_run(seed.acme_grant),
                                  pending_timeout=HOUR, now=long_ago)
    finish_idempotency_key(database, KEY, claim_id=first.record.claim_id, response={"ok": True})

    again = claim_idempotency_key(database, KEY, request_hash="h",
                                  run=claimed_run(seed.acme_grant), pending_timeout=HOUR)

    assert not again.acquired and again.record.status is IdempotencyStatus.FINISHED


def test_the_schema_refuses_a_finished_record_without_its_response(
    database: Database, seed: Seed
) -> None:
    claim_idempotency_key(database, KEY, request_hash="h", run=claimed_run(seed.acme_grant),
                          pending_timeout=None)

    with pytest.raises(sqlite3.IntegrityError, match="CHECK"), database.connect() as connection:
        connection.execute("UPDATE idempotency_keys SET status = 'finished' WHERE key = ?", (KEY,))


def test_a_takeover_names_the_abandoned_attempt_it_retakes(database: Database, seed: Seed) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    first = claim_idempotency_key(database, KEY, request_hash="h", run=claimed_run(seed.acme_grant),
                                  pending_timeout=HOUR, now=long_ago)

    takeover = claim_idempotency_key(
        database, KEY, request_hash="h", run=claimed_run(seed.acme_grant, "run-2"),
        pending_timeout=HOUR,
    )

    assert first.retaken is None
    assert takeover.acquired and takeover.retaken is not None
    # The record now holds the new attempt; only the claim still knows the one it replaced.
    assert takeover.record.run.run_id == "run-2" and takeover.record.attempts == 2
    assert takeover.retaken.run.run_id == "run-1"
    assert takeover.retaken.claimed_at == long_ago
    assert takeover.retaken.claim_id == first.record.claim_id


def test_finishing_a_key_outlasts_a_lock_held_longer_than_the_busy_timeout(
    database: Database, seed: Seed
) -> None:
    impatient = Database(database.path, busy_timeout=0.1)
    claim = claim_idempotency_key(impatient, KEY, request_hash="h",
                                  run=claimed_run(seed.acme_grant), pending_timeout=HOUR)

    with write_lock_held(database.path, seconds=0.6) as released:
        stored = finish_idempotency_key(impatient, KEY, claim_id=claim.record.claim_id,
                                        response={"ok": True}, retry_for=5)
        assert released.is_set()  # it waited the lock out rather than failing under it

    assert stored
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.FINISHED


def test_finishing_a_key_gives_up_after_its_retries_and_leaves_it_pending(
    database: Database, seed: Seed
) -> None:
    impatient = Database(database.path, busy_timeout=0.1)
    claim = claim_idempotency_key(impatient, KEY, request_hash="h",
                                  run=claimed_run(seed.acme_grant), pending_timeout=HOUR)

    with write_lock_held(database.path, seconds=2.0):
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            finish_idempotency_key(impatient, KEY, claim_id=claim.record.claim_id,
                                   response={"ok": True}, retry_for=0.5)
        gave_up_after = time.monotonic() - started

    assert 0.5 <= gave_up_after < 1.5
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.PENDING
