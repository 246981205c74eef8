"""The store on SQLite and on Postgres: kept connections, one store call per chat, pruning, CLI.

Every test runs on both backends, unless its name says Postgres.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider

from api_support import (
    BACKENDS,
    SCHEDULER_TOKEN,
    Seed,
    chat_body,
    failed,
    ok,
    run_body,
    scheduler_headers,
    user_headers,
    wait_until,
)
from devstack.processes import free_port
from service.config import Settings
from service.idempotency import IdempotencyPolicy, prune_finished_keys
from service.main import create_app
from service.services import Services
from service.store import (
    ClaimedRun,
    Database,
    IdempotencyStatus,
    StoreError,
    authenticate_user,
    claim_idempotency_key,
    create_user,
    finish_idempotency_key,
    get_grant,
    get_idempotency_record,
    set_account_mask_content,
)
from service.store.schema import MIGRATIONS
from sessiontrace import derive_schedule_session_id

REPO = Path(__file__).resolve().parents[2]
HOUR = dt.timedelta(hours=1)

both_backends = pytest.mark.parametrize("backend", BACKENDS)
postgres_only = pytest.mark.parametrize("backend", ["postgres"])


def claimed_run(grant_id: str, run_id: str) -> ClaimedRun:
    return ClaimedRun(
        graph_id="builtin:governance-review", grant_id=grant_id, billing_account_id="acme",
        user_id="alice", schedule_id="governance:community", run_id=run_id,
        session_id=derive_schedule_session_id("acme", "governance:community"),
    )


def finished_key(database: Database, key: str, grant: str, *, at: dt.datetime) -> None:
    claim = claim_idempotency_key(database, key, request_hash="h", run=claimed_run(grant, key),
                                  now=at)
    assert finish_idempotency_key(database, key, claim_id=claim.record.claim_id,
                                  response={"ok": True}, now=at)


@both_backends
def test_a_connection_is_kept_between_store_calls_until_the_database_is_closed(
    database_url: str, database: Database
) -> None:
    # A temporary table lives as long as its connection: it shows which one a call got.
    with Database.from_url(database_url, pool_size=1) as kept:
        with kept.connect() as connection:
            connection.execute("CREATE TEMP TABLE marker (x INTEGER)")
        with kept.connect() as connection:
            assert connection.execute("SELECT count(*) AS n FROM marker").fetchone() == {"n": 0}

        kept.close()

        with pytest.raises((Exception,), match="marker"), kept.connect() as connection:
            connection.execute("SELECT count(*) AS n FROM marker")
        with kept.connect() as connection:  # a new connection works as before
            assert connection.execute("SELECT count(*) AS n FROM users").fetchone() == {"n": 0}


@both_backends
def test_closing_the_database_while_a_thread_is_inside_a_transaction_lets_it_finish(
    database_url: str, database: Database, seed: Seed
) -> None:
    # As at shutdown: the lifespan closes the database while a run still stores its outcome.
    inside, closed = threading.Event(), threading.Event()

    def transaction() -> object:
        with database.connect() as connection:
            inside.set()
            assert closed.wait(timeout=10)
            return connection.execute("SELECT count(*) AS n FROM users").fetchone()

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(transaction)
        assert inside.wait(timeout=10)
        database.close()
        closed.set()
        assert result.result(timeout=10) == {"n": 2}
        # The thread's next call gets a new connection.
        assert pool.submit(authenticate_user, database, seed.alice_key).result() is not None


@both_backends
def test_many_threads_share_one_database_each_call_on_a_connection_of_its_own(
    database_url: str, seed: Seed
) -> None:
    threads, calls = 8, 25
    start = threading.Barrier(threads)

    def authenticate(_: int) -> list[str | None]:
        start.wait()
        users = (authenticate_user(shared, seed.alice_key) for _ in range(calls))
        return [None if user is None else user.id for user in users]

    # Fewer pooled connections than threads: the others wait for one, none shares one.
    with Database.from_url(database_url, pool_size=2) as shared:
        with ThreadPoolExecutor(threads) as pool:
            answers = [user for batch in pool.map(authenticate, range(threads)) for user in batch]

    assert answers == ["alice"] * threads * calls


@both_backends
def test_a_store_transaction_inside_another_on_one_thread_is_refused(database: Database) -> None:
    with database.connect(), pytest.raises(RuntimeError, match="already open"):
        with database.connect():
            pass
    with database.connect() as connection:  # the thread is free again
        assert connection.execute("SELECT 1 AS one").fetchone() == {"one": 1}


@both_backends
def test_the_user_and_the_grant_come_with_their_accounts_masking(
    database: Database, seed: Seed
) -> None:
    alice, grant = authenticate_user(database, seed.alice_key), get_grant(database, seed.acme_grant)
    assert alice is not None and grant is not None
    assert not alice.mask_content and not grant.mask_content

    set_account_mask_content(database, "acme", mask_content=True)

    alice, grant = authenticate_user(database, seed.alice_key), get_grant(database, seed.acme_grant)
    assert alice is not None and alice.mask_content
    assert grant is not None and grant.mask_content
    bob = authenticate_user(database, seed.bob_key)
    assert bob is not None and not bob.mask_content  # another account


def counting_store_calls(app: FastAPI) -> list[str]:
    """Every store transaction the running app opens from now on (by the calling function)."""
    services = app.state.services
    assert isinstance(services, Services)
    database = services.database
    calls: list[str] = []
    connect = database.connect

    def counted(**kwargs: Any) -> AbstractContextManager[Any]:
        calls.append(sys._getframe(1).f_code.co_name)
        return connect(**kwargs)

    database.connect = counted  # type: ignore[method-assign,assignment]
    return calls


@both_backends
def test_a_chat_request_makes_one_store_call_and_a_governance_run_four(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed
) -> None:
    # No pruning at start-up: only the requests' calls are counted.
    quiet = settings.model_copy(update={"idempotency_retention_hours": 0.0})
    app = create_app(quiet, tracer_provider=tracer_provider)
    with TestClient(app) as client:
        calls = counting_store_calls(app)
        chat = client.post("/api/v1/ai/chat", json=chat_body(),
                           headers=user_headers(seed.alice_key))
        chat_calls = list(calls)
        calls.clear()
        run = client.post("/api/internal/graphs/builtin:governance-review/runs",
                          json=run_body(seed.acme_grant), headers=scheduler_headers("one-trip"))

    assert chat.status_code == 200 and run.status_code == 200, (chat.text, run.text)
    assert chat_calls == ["authenticate_user"]  # the masking came with the user
    assert calls == [
        "get_idempotency_record", "get_grant", "claim_idempotency_key", "retrying_while_busy",
    ]


@both_backends
def test_finished_keys_past_the_retention_are_pruned_and_pending_keys_never(
    database: Database, seed: Seed
) -> None:
    now = dt.datetime.now(dt.UTC)
    finished_key(database, "old", seed.acme_grant, at=now - 200 * HOUR)
    finished_key(database, "recent", seed.acme_grant, at=now - 100 * HOUR)
    claim_idempotency_key(database, "stuck", request_hash="h",
                          run=claimed_run(seed.acme_grant, "stuck"), now=now - 1000 * HOUR)
    week = IdempotencyPolicy(pending_timeout=None, retention=168 * HOUR)

    assert prune_finished_keys(database, week, now=now) == 1
    assert prune_finished_keys(database, week, now=now) == 0

    assert get_idempotency_record(database, "old") is None
    recent = get_idempotency_record(database, "recent")
    stuck = get_idempotency_record(database, "stuck")
    assert recent is not None and recent.status is IdempotencyStatus.FINISHED
    assert stuck is not None and stuck.status is IdempotencyStatus.PENDING


@both_backends
def test_a_zero_retention_keeps_finished_keys_for_ever(
    settings: Settings, database: Database, seed: Seed
) -> None:
    finished_key(database, "ancient", seed.acme_grant,
                 at=dt.datetime.now(dt.UTC) - dt.timedelta(days=3650))
    forever = settings.model_copy(update={"idempotency_retention_hours": 0.0})

    assert prune_finished_keys(database, IdempotencyPolicy.from_settings(forever)) == 0
    assert get_idempotency_record(database, "ancient") is not None


@both_backends
def test_the_service_prunes_finished_keys_past_the_retention_once_started(
    app: FastAPI, database: Database, seed: Seed
) -> None:
    now = dt.datetime.now(dt.UTC)
    finished_key(database, "old", seed.acme_grant, at=now - 200 * HOUR)
    finished_key(database, "recent", seed.acme_grant, at=now - HOUR)

    with TestClient(app):
        assert wait_until(lambda: get_idempotency_record(database, "old") is None, timeout=30)

    assert get_idempotency_record(database, "recent") is not None


@both_backends
def test_migrations_of_processes_starting_together_are_each_applied_once(
    database_url: str,
) -> None:
    handles = [Database.from_url(database_url) for _ in range(4)]
    start = threading.Barrier(len(handles))

    def migrate(database: Database) -> None:
        start.wait()
        database.migrate()

    try:
        with ThreadPoolExecutor(len(handles)) as pool:
            list(pool.map(migrate, handles))
        for database in handles:
            database.ping()  # the schema version is the last migration's
    finally:
        for database in handles:
            database.close()
    assert len(MIGRATIONS) >= 4


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OTEL_"))}
    env.update(DATABASE_URL=settings.database_url, SCHEDULER_API_TOKEN=SCHEDULER_TOKEN,
               DEPLOY_ENVIRONMENT="test", OTEL_SDK_DISABLED="true", PYTHONPATH=str(REPO))

    def run(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *args], cwd=tmp_path, env=env | variables,
            capture_output=True, text=True, timeout=60, check=False,
        )

    return run


@both_backends
def test_every_cli_command_works_on_the_database_url_and_prunes_finished_keys(
    cli: Cli, settings: Settings, tracer_provider: TracerProvider
) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    updated = ok(cli("accounts", "update", "--billing-account", "acme", "--mask-content"))
    user = ok(cli("users", "create", "--billing-account", "acme", "--user", "alice"))
    grant = ok(cli("grants", "create", "--billing-account", "acme", "--user", "alice",
                   "--graph", "builtin:governance-review"))
    with TestClient(create_app(settings, tracer_provider=tracer_provider)) as client:
        run = client.post("/api/internal/graphs/builtin:governance-review/runs",
                          json=run_body(grant["grantId"]), headers=scheduler_headers("cli-key"))
    kept = ok(cli("idempotency", "prune"))
    pruned = ok(cli("idempotency", "prune", IDEMPOTENCY_RETENTION_HOURS="0.000001"))
    forever = ok(cli("idempotency", "prune", IDEMPOTENCY_RETENTION_HOURS="0"))
    revoked = ok(cli("grants", "revoke", grant["grantId"]))

    assert updated["maskContent"] is True and user["apiKey"].startswith("st_")
    assert run.status_code == 200 and run.json()["ok"] is True
    assert kept["pruned"] == 0 and kept["retentionHours"] == 168
    assert pruned["pruned"] == 1 and pruned["finishedBefore"]
    assert forever == {"pruned": 0, "retentionHours": 0, "finishedBefore": None}
    assert revoked["revokedAt"]
    duplicate = failed(cli("accounts", "create", "--billing-account", "acme"))
    assert duplicate == "billing account 'acme' already exists"


def test_an_unreachable_postgres_fails_start_up_naming_the_setting_not_the_password() -> None:
    url = f"postgresql://sessiontrace:s3cret-pw@127.0.0.1:{free_port()}/nowhere"

    with Database.from_url(url) as database, pytest.raises(StoreError) as refused:
        database.migrate()

    message = str(refused.value)
    assert "DATABASE_URL=postgresql://sessiontrace:***@127.0.0.1" in message
    assert "s3cret-pw" not in message and "Connection refused" in message


@pytest.fixture
def postgres_sessions(database_url: str) -> Iterator[Callable[[], int]]:
    """How many connections the service holds to the test's Postgres database now."""
    with psycopg.connect(database_url, autocommit=True) as observer:

        def count() -> int:
            row = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'sessiontrace'"
            ).fetchone()
            assert row is not None
            return int(row[0])

        yield count


@postgres_only
def test_on_postgres_the_service_keeps_its_pool_while_running_and_closes_it_on_shutdown(
    app: FastAPI, settings: Settings, database: Database, seed: Seed,
    postgres_sessions: Callable[[], int],
) -> None:
    database.close()  # the seeding's connections: only the service's are counted
    assert wait_until(lambda: postgres_sessions() == 0, timeout=10)
    with TestClient(app) as client:
        for _ in range(5):
            chat = client.post("/api/v1/ai/chat", json=chat_body(),
                               headers=user_headers(seed.alice_key))
            assert chat.status_code == 200
        while_running = postgres_sessions()

    assert 1 <= while_running <= settings.database_pool_size
    assert wait_until(lambda: postgres_sessions() == 0, timeout=10)
