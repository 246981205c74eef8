"""The idempotency table: an atomic claim, and only the claim's holder finishes or releases it.

Every test runs on SQLite and on Postgres. Contenders each open their own `Database` (their own
connections or pool), as separate processes or hosts would.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from api_support import BACKENDS, Seed
from database_locks import write_lock_held
from service.idempotency import IdempotencyPolicy
from service.store import (
    Claim,
    ClaimedRun,
    Database,
    IdempotencyRecord,
    IdempotencyStatus,
    claim_idempotency_key,
    finish_idempotency_key,
    get_idempotency_record,
    release_idempotency_key,
)
from service.store.database import is_busy
from sessiontrace import derive_schedule_session_id

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

KEY = "governance:community:2026-11-23T08:00:00Z"
HOUR = dt.timedelta(hours=1)


def claim(
    database: Database, run: ClaimedRun, *, pending_timeout: dt.timedelta | None,
    request_hash: str = "h", now: dt.datetime | None = None,
) -> Claim:
    """A claim under the service's rule: the same request, pending past `pending_timeout`."""
    policy = IdempotencyPolicy(pending_timeout=pending_timeout, retention=None)

    def may_retake(record: IdempotencyRecord, moment: dt.datetime) -> bool:
        return policy.may_retake(record, request_hash, moment)

    return claim_idempotency_key(
        database, KEY, request_hash=request_hash, run=run, may_retake=may_retake, now=now
    )


@pytest.fixture
def other_databases(database_url: str) -> Iterator[list[Database]]:
    """Eight more handles on the test's database, each with its own connections."""
    handles = [Database.from_url(database_url) for _ in range(8)]
    yield handles
    for handle in handles:
        handle.close()


def claimed_run(grant_id: str, run_id: str = "run-1") -> ClaimedRun:
    return ClaimedRun(
        graph_id="builtin:governance-review", grant_id=grant_id, billing_account_id="acme",
        user_id="alice", schedule_id="governance:community", run_id=run_id,
        session_id=derive_schedule_session_id("acme", "governance:community"),
    )


def claim_all_at_once(databases: list[Database], seed: Seed) -> list[Claim]:
    """Each handle claims KEY for a run of its own, all released at the same instant."""
    start = threading.Barrier(len(databases))

    def contend(index: int) -> Claim:
        start.wait()
        return claim(databases[index], claimed_run(seed.acme_grant, f"run-{index}"),
                     pending_timeout=HOUR)

    with ThreadPoolExecutor(len(databases)) as pool:
        return list(pool.map(contend, range(len(databases))))


def test_of_many_processes_claiming_one_key_at_once_exactly_one_acquires_it(
    database: Database, other_databases: list[Database], seed: Seed
) -> None:
    claims = claim_all_at_once(other_databases, seed)

    winners = [c for c in claims if c.acquired]
    assert len(winners) == 1
    assert {c.record.claim_id for c in claims} == {winners[0].record.claim_id}
    assert all(c.record.status is IdempotencyStatus.PENDING for c in claims)
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.claim_id == winners[0].record.claim_id


def test_of_many_processes_taking_over_one_abandoned_key_at_once_exactly_one_acquires_it(
    database: Database, other_databases: list[Database], seed: Seed
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    dead = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)
    claims = claim_all_at_once(other_databases, seed)

    winners = [c for c in claims if c.acquired]
    assert len(winners) == 1
    assert winners[0].retaken is not None
    assert winners[0].retaken.claim_id == dead.record.claim_id
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.attempts == 2
    assert record.claim_id == winners[0].record.claim_id
    assert record.run.run_id == winners[0].record.run.run_id


def test_an_attempt_that_lost_its_claim_to_a_takeover_cannot_store_its_outcome(
    database: Database, seed: Seed
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    dead = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)
    takeover = claim(database, claimed_run(seed.acme_grant, "run-2"), pending_timeout=HOUR)

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
    claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)

    too_soon = claim(database, claimed_run(seed.acme_grant), pending_timeout=3 * HOUR)
    other_request = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR,
                          request_hash="other")
    never = claim(database, claimed_run(seed.acme_grant), pending_timeout=None)
    no_rule = claim_idempotency_key(database, KEY, request_hash="h",
                                    run=claimed_run(seed.acme_grant))

    assert not too_soon.acquired and not other_request.acquired and not never.acquired
    assert not no_rule.acquired


def test_a_released_key_can_be_claimed_again(database: Database, seed: Seed) -> None:
    first = claim(database, claimed_run(seed.acme_grant), pending_timeout=None)

    assert release_idempotency_key(database, KEY, claim_id=first.record.claim_id)
    assert get_idempotency_record(database, KEY) is None
    assert claim(database, claimed_run(seed.acme_grant), pending_timeout=None).acquired


def test_a_finished_key_is_never_claimed_again(database: Database, seed: Seed) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    first = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)
    finish_idempotency_key(database, KEY, claim_id=first.record.claim_id, response={"ok": True})

    again = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR)

    assert not again.acquired and again.record.status is IdempotencyStatus.FINISHED


def test_a_claim_returns_the_record_as_stored(database: Database, seed: Seed) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    first = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)
    takeover = claim(database, claimed_run(seed.acme_grant, "run-2"), pending_timeout=HOUR)

    assert get_idempotency_record(database, KEY) == takeover.record
    assert first.record.created_at == takeover.record.created_at == long_ago


def test_the_schema_refuses_a_finished_record_without_its_response(
    database: Database, seed: Seed
) -> None:
    claim(database, claimed_run(seed.acme_grant), pending_timeout=None)

    with pytest.raises(
        (sqlite3.IntegrityError, psycopg.errors.CheckViolation), match="(?i)check"
    ), database.connect() as connection:
        connection.execute("UPDATE idempotency_keys SET status = 'finished' WHERE key = ?", (KEY,))


def test_a_takeover_names_the_abandoned_attempt_it_retakes(database: Database, seed: Seed) -> None:
    long_ago = dt.datetime.now(dt.UTC) - 2 * HOUR
    first = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR, now=long_ago)

    takeover = claim(database, claimed_run(seed.acme_grant, "run-2"), pending_timeout=HOUR)

    assert first.retaken is None
    assert takeover.acquired and takeover.retaken is not None
    # The record now holds the new attempt; only the claim still knows the one it replaced.
    assert takeover.record.run.run_id == "run-2" and takeover.record.attempts == 2
    assert takeover.retaken.run.run_id == "run-1"
    assert takeover.retaken.claimed_at == long_ago
    assert takeover.retaken.claim_id == first.record.claim_id


def test_finishing_a_key_outlasts_a_lock_held_longer_than_the_busy_timeout(
    database_url: str, database: Database, seed: Seed
) -> None:
    with Database.from_url(database_url, busy_timeout=0.1) as impatient:
        claimed = claim(impatient, claimed_run(seed.acme_grant), pending_timeout=HOUR)

        with write_lock_held(database_url, seconds=0.6) as released:
            stored = finish_idempotency_key(impatient, KEY, claim_id=claimed.record.claim_id,
                                            response={"ok": True}, retry_for=5)
            assert released.is_set()  # it waited the lock out rather than failing under it

    assert stored
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.FINISHED


def test_finishing_a_key_gives_up_after_its_retries_and_leaves_it_pending(
    database_url: str, database: Database, seed: Seed
) -> None:
    with Database.from_url(database_url, busy_timeout=0.1) as impatient:
        claimed = claim(impatient, claimed_run(seed.acme_grant), pending_timeout=HOUR)

        with write_lock_held(database_url, seconds=3.0) as released:
            started = time.monotonic()
            with pytest.raises((sqlite3.OperationalError, psycopg.OperationalError)) as failure:
                finish_idempotency_key(impatient, KEY, claim_id=claimed.record.claim_id,
                                       response={"ok": True}, retry_for=0.5)
            gave_up_after = time.monotonic() - started
            assert not released.is_set()  # it gave up under the lock, not after it

    assert is_busy(failure.value)
    assert gave_up_after >= 0.5  # it retried for the time it was given
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.PENDING


def test_on_postgres_a_replica_whose_clock_runs_ahead_takes_over_no_key_before_its_time(
    database: Database, other_databases: list[Database], seed: Seed, backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = claim(database, claimed_run(seed.acme_grant), pending_timeout=HOUR)
    # Another replica, on a host whose clock is two hours ahead, sees the key pending.
    ahead = dt.datetime.now(dt.UTC) + 2 * HOUR
    monkeypatch.setattr("service.store.idempotency.utc_now", lambda: ahead)

    retry = claim(other_databases[0], claimed_run(seed.acme_grant, "run-2"), pending_timeout=HOUR)

    assert running.acquired
    if backend == "postgres":
        # Decided on the database server's clock: the key was claimed moments ago.
        assert not retry.acquired and retry.record.claim_id == running.record.claim_id
        stored = get_idempotency_record(database, KEY)
        assert stored is not None and stored.attempts == 1
    else:
        # SQLite's processes share one host and one file: the process's clock is the clock.
        assert retry.acquired and retry.record.attempts == 2
