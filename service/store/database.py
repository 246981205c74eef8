"""A SQLite file with one short-lived connection per operation.

Connections are cheap and never shared between threads, so blocking calls can
run in `asyncio.to_thread` without a pool or a lock.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from service.config import sqlite_path
from service.store.schema import MIGRATIONS

__all__ = ["Database", "StoreError", "utc_now", "to_iso", "from_iso"]

_BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """A store operation was refused (unknown or duplicate record); the message says why."""


class Database:
    """The service's SQLite database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def from_url(cls, database_url: str) -> Database:
        """The database of a `sqlite:///...` DATABASE_URL."""
        return cls(sqlite_path(database_url))

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: committed on success, rolled back on error."""
        connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000)
        with closing(connection):
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            with connection:
                yield connection

    def migrate(self) -> None:
        """Create the file and its directory if needed and apply pending migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(
            sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        ) as connection:
            # WAL lets readers (auth, grant checks) proceed while a write commits.
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("BEGIN IMMEDIATE")
            try:
                applied = connection.execute("PRAGMA user_version").fetchone()[0]
                for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
                    for statement in statements:
                        connection.execute(statement)
                    connection.execute(f"PRAGMA user_version = {version:d}")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def ping(self) -> None:
        """Raise unless the database answers and its schema is current."""
        with self.connect() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != len(MIGRATIONS):
            raise StoreError(f"schema version {version}, expected {len(MIGRATIONS)}")


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def to_iso(moment: dt.datetime) -> str:
    """An aware datetime as ISO-8601 UTC text (how the store keeps times)."""
    return moment.astimezone(dt.UTC).isoformat()


def from_iso(text: str | None) -> dt.datetime | None:
    """Inverse of `to_iso`; None stays None."""
    return None if text is None else dt.datetime.fromisoformat(text)
