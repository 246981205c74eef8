"""DATABASE_URL (SQLite or Postgres), DATABASE_POOL_SIZE and IDEMPOTENCY_RETENTION_HOURS."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.store import Database


def settings(**values: object) -> Settings:
    return Settings(**values, _env_file=None)  # type: ignore[arg-type,call-arg]


@pytest.mark.parametrize("url", [
    "postgresql://sessiontrace:pw@db.internal:5432/sessiontrace",
    "postgres://sessiontrace@127.0.0.1/sessiontrace",
    "postgresql://sessiontrace@db/sessiontrace?sslmode=require&connect_timeout=3",
])
def test_a_postgres_database_url_is_accepted_and_makes_a_postgres_store(url: str) -> None:
    loaded = settings(database_url=url)

    with Database.from_url(loaded.database_url) as database:  # nothing connects yet
        assert database.backend == "postgres"
        assert "pw@" not in repr(database)


def test_a_sqlite_database_url_stays_the_embedded_default() -> None:
    with Database.from_url(settings().database_url) as database:
        assert database.backend == "sqlite"


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://root:hunter2@db/app", "must look like sqlite:///"),
    ("postgresql://root:hunter2@db:notaport/app", "has port 'notaport', not a number"),
    ("postgresql://root:hunter2@[::1/app", "is not a valid Postgres URL"),
])
def test_a_bad_database_url_is_refused_naming_the_setting_never_the_password(
    url: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(database_url=url)

    message = str(refused.value)
    assert "DATABASE_URL" in message and expected in message
    assert "hunter2" not in message


def test_the_pool_size_and_the_retention_have_documented_defaults_and_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = settings()
    assert defaults.database_pool_size == 10
    assert defaults.idempotency_retention_hours == 168

    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("IDEMPOTENCY_RETENTION_HOURS", "0")
    loaded = settings()
    assert loaded.database_pool_size == 3 and loaded.idempotency_retention_hours == 0

    for name, value in (("DATABASE_POOL_SIZE", "0"), ("IDEMPOTENCY_RETENTION_HOURS", "-1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError, match=name.lower()):
            settings()
        monkeypatch.delenv(name)


def test_a_sqlite_database_file_missing_after_start_up_makes_ping_fail(tmp_path: Path) -> None:
    with Database(tmp_path / "service.db") as database:
        database.migrate()
        database.ping()
        (tmp_path / "service.db").unlink()

        with pytest.raises(Exception, match="unable to open"):
            database.ping()
