"""Fixtures for API tests: an injected in-memory tracer, a fresh database, seeded accounts.

The database is a tmp SQLite file unless a test is parametrized with `backend`
(`pytest.mark.parametrize("backend", BACKENDS)`): then it runs once on SQLite and once on a
fresh database of a real Postgres server, started once per session from `initdb`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from devstack.postgres import PostgresServer, start_postgres
from service.config import Settings
from service.main import create_app
from service.store import (
    Database,
    create_billing_account,
    create_grant,
    create_user,
    revoke_grant,
)
from sessiontrace import SessionSpanProcessor, configure_tracing

from api_support import SCHEDULER_TOKEN, Seed



SERVICE_ENVIRONMENT = (
    "OTEL_SDK_DISABLED", "SCHEDULER_API_TOKEN", "DATABASE_URL", "LLM_BASE_URL", "LLM_API_KEY",
    "LLM_MODEL", "LLM_TIMEOUT_SECONDS", "DEPLOY_ENVIRONMENT", "SERVICE_NAME",
    "SCHEDULES_FILE", "SCHEDULER_ENABLED", "SERVICE_URL", "IDEMPOTENCY_PENDING_TIMEOUT_SECONDS",
    "LLM_PRICES", "RUN_TIMEOUT_SECONDS",
    "MAX_INFLIGHT_RUNS", "DATABASE_POOL_SIZE", "IDEMPOTENCY_RETENTION_HOURS",
    # The request attribute limit follows these (service.request_attributes).
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not change what the tests see.
    for name in SERVICE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tracer_provider(
    exporter: InMemorySpanExporter, session_processor: SessionSpanProcessor
) -> Iterator[TracerProvider]:
    provider = configure_tracing(
        service_name="test", exporter=exporter, batch=False, session_processor=session_processor
    )
    yield provider
    provider.shutdown()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real Postgres server for the whole session (only when a test asks for Postgres)."""
    with start_postgres() as server:
        yield server


_DATABASE_NUMBERS = itertools.count(1)


@pytest.fixture
def backend() -> str:
    """`sqlite`, unless the test is parametrized with BACKENDS."""
    return "sqlite"


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of `backend`."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'test.db'}"
    assert backend == "postgres", backend
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"test_{next(_DATABASE_NUMBERS)}")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_api_token=SecretStr(SCHEDULER_TOKEN),
        deploy_environment="test",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    with Database.from_url(settings.database_url) as db:
        db.migrate()
        yield db


@pytest.fixture
def seed(database: Database) -> Seed:
    create_billing_account(database, "acme")
    create_billing_account(database, "globex")
    alice = create_user(database, billing_account_id="acme", user_id="alice")
    bob = create_user(database, billing_account_id="globex", user_id="bob")
    both = ("builtin:chat", "builtin:governance-review")

    def grant(account: str, user: str, graphs: Sequence[str], **kwargs: object) -> str:
        return create_grant(
            database, billing_account_id=account, user_id=user, graphs=graphs, **kwargs  # type: ignore[arg-type]
        ).id

    revoked = grant("acme", "alice", both)
    revoke_grant(database, revoked)
    return Seed(
        alice_key=alice.api_key,
        bob_key=bob.api_key,
        acme_grant=grant("acme", "alice", both),
        globex_grant=grant("globex", "bob", ("builtin:governance-review",)),
        chat_only_grant=grant("acme", "alice", ("builtin:chat",)),
        expired_grant=grant(
            "acme", "alice", both, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        ),
        revoked_grant=revoked,
    )


@pytest.fixture
def app(settings: Settings, tracer_provider: TracerProvider, seed: Seed) -> FastAPI:
    return create_app(settings, tracer_provider=tracer_provider)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
