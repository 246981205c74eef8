"""A run that completed never answers 500 and never runs twice, whatever the database does.

Every test runs on SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    BACKENDS,
    GatedProvider,
    Seed,
    app_client,
    run_body,
    run_spans,
    scheduler_headers,
    wait_for,
)
from database_locks import write_lock_held
from service.config import Settings
from service.errors import install_error_handlers
from service.idempotency import REPLAYED_HEADER
from service.main import create_app
from service.store import Database, IdempotencyStatus, get_idempotency_record
from service.store.database import BUSY_TIMEOUT_SECONDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

RUNS = "/api/internal/graphs/builtin:governance-review/runs"
# A failure that no retry cures (a full disk, a broken file), in each backend's dialect.
_REFUSE_OUTCOMES = {
    "sqlite": (
        "CREATE TRIGGER refuse_outcomes BEFORE UPDATE OF status ON idempotency_keys "
        "WHEN NEW.status = 'finished' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); "
        "END",
    ),
    "postgres": (
        "CREATE FUNCTION refuse_outcomes() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'database or disk is full'; END $$",
        "CREATE TRIGGER refuse_outcomes BEFORE UPDATE OF status ON idempotency_keys "
        "FOR EACH ROW WHEN (NEW.status = 'finished') EXECUTE FUNCTION refuse_outcomes()",
    ),
}
KEY = "governance:community:2026-11-23T08:00:00Z"


def community_run(grant: str) -> dict[str, object]:
    return run_body(grant, scheduleId="governance:community", scheduledFor="2026-11-23T08:00:00Z")


def test_a_lock_held_past_the_busy_timeout_while_the_outcome_is_stored_is_waited_out(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    database: Database, seed: Seed,
) -> None:
    provider = GatedProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    # Longer than one write waits for a lock: only retrying stores the outcome.
    lock_seconds = BUSY_TIMEOUT_SECONDS + 1.5

    async def scenario() -> tuple[httpx.Response, httpx.Response, bool]:
        async with app_client(app) as client:
            first = asyncio.create_task(client.post(
                RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY)
            ))
            await wait_for(lambda: provider.calls == 1, timeout=10)  # claimed, now running
            with write_lock_held(settings.database_url, seconds=lock_seconds) as released:
                provider.release.set()  # the run ends while the lock is held
                answer = await first
                waited_out = released.is_set()
            replay = await client.post(
                RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY)
            )
            return answer, replay, waited_out

    answer, replay, waited_out = asyncio.run(scenario())

    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    assert waited_out
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.response == answer.json()
    assert replay.status_code == 200 and replay.headers[REPLAYED_HEADER] == "true"
    assert replay.json() == answer.json()
    assert len(run_spans(exporter)) == 1
    assert provider.calls == 2  # one run: governance-review makes two LLM calls


def test_a_run_whose_outcome_cannot_be_stored_answers_it_and_a_retry_starts_no_second_run(
    client: TestClient, database: Database, seed: Seed, exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with database.connect() as connection:
        for statement in _REFUSE_OUTCOMES[database.backend]:
            connection.execute(statement)

    with caplog.at_level(logging.ERROR, logger="service.idempotency"):
        answer = client.post(RUNS, json=community_run(seed.acme_grant),
                             headers=scheduler_headers(KEY))
    retry = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True and answer.json()["runId"]
    assert any("could NOT be stored" in record.getMessage() for record in caplog.records)
    record = get_idempotency_record(database, KEY)
    assert record is not None and record.status is IdempotencyStatus.PENDING
    # Pending until IDEMPOTENCY_PENDING_TIMEOUT_SECONDS, which outlasts any run's deadline.
    assert retry.status_code == 409
    assert retry.json()["error"] == "idempotency_key_in_progress"
    assert len(run_spans(exporter)) == 1


def test_a_database_locked_past_the_busy_timeout_answers_503_database_busy(
    database_url: str, database: Database,
) -> None:
    impatient = Database.from_url(database_url, busy_timeout=0.05)
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/write")
    def write() -> dict[str, bool]:
        with impatient.connect() as connection:
            connection.execute("INSERT INTO billing_accounts (id, created_at) VALUES ('x', 'now')")
        return {"ok": True}

    with write_lock_held(database_url, seconds=1.0), TestClient(app) as client:
        busy = client.post("/write")
    after = TestClient(app).post("/write")
    impatient.close()

    assert busy.status_code == 503
    assert busy.json()["error"] == "database_busy" and busy.json()["message"]
    assert int(busy.headers["Retry-After"]) > 0
    assert after.status_code == 200  # nothing was kept: retrying is safe


def test_any_other_database_error_is_still_a_500_internal_error(database: Database) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/broken")
    def broken() -> None:
        with database.connect() as connection:
            connection.execute("SELECT * FROM no_such_table")

    response = TestClient(app, raise_server_exceptions=False).get("/broken")

    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    with pytest.raises(
        (sqlite3.OperationalError, psycopg.errors.UndefinedTable),
        match="no such table|does not exist",
    ):
        TestClient(app).get("/broken")
