"""A SQLite file with one short-lived connection per operation.

Connections are cheap and never shared between threads, so blocking calls can
run in `asyncio.to_thread` without a pool or a lock. Each connection waits for
a lock held by another connection up to its busy timeout (SQLite's
busy_timeout, which Python's `timeout` sets) before failing with "database is
locked"; `is_busy` tells that failure from others.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

from service.config import sqlite_path
from service.store.schema import MIGRATIONS

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "Database",
    "StoreError",
    "from_iso",
    "is_busy",
    "retrying_while_busy",
    "to_iso",
    "utc_now",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long one operation waits for another connection's lock (a write, a
# backup, a checkpoint) before failing: short locks wait instead of failing.
BUSY_TIMEOUT_SECONDS = 5.0
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0


class StoreError(Exception):
    """A store operation was refused (unknown or duplicate record); the message says why."""


class Database:
    """The service's SQLite database file."""

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout

    @classmethod
    def from_url(cls, database_url: str) -> Database:
        """The database of a `sqlite:///...` DATABASE_URL."""
        return cls(sqlite_path(database_url))

    @contextmanager
    def connect(self, *, busy_timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: committed on success, rolled back on error.

        `busy_timeout` (seconds) overrides the database's for this connection.
        """
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout if busy_timeout is None else busy_timeout
        )
        with closing(connection):
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            with connection:
                yield connection

    def migrate(self) -> None:
        """Create the file and its directory if needed and apply pending migrations."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(
            sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
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


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked" (busy or locked): worth retrying later."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and (
        (code & 0xFF) in _BUSY_CODES  # extended codes (SQLITE_BUSY_SNAPSHOT…) too
    )


def retrying_while_busy(
    db: Database, operation: Callable[[sqlite3.Connection], _T], *, within: float
) -> _T:
    """`operation` in one transaction, tried again while the database is locked.

    Attempts wait for the lock (the database's busy timeout, cut to the time
    left) and back off between them; after `within` seconds the last "database
    is locked" error is raised. Any other error is raised at once.
    """
    deadline = time.monotonic() + within
    backoff = _FIRST_BACKOFF_SECONDS
    while True:
        left = deadline - time.monotonic()
        try:
            with db.connect(busy_timeout=max(0.0, min(db.busy_timeout, left))) as connection:
                return operation(connection)
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not is_busy(exc) or left <= 0:
                raise
            logger.warning("the database is locked (%s); trying again for up to %.1f s", exc, left)
        time.sleep(min(backoff, left))
        backoff = min(2 * backoff, _MAX_BACKOFF_SECONDS)


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def to_iso(moment: dt.datetime) -> str:
    """An aware datetime as ISO-8601 UTC text (how the store keeps times)."""
    return moment.astimezone(dt.UTC).isoformat()


def from_iso(text: str | None) -> dt.datetime | None:
    """Inverse of `to_iso`; None stays None."""
    return None if text is None else dt.datetime.fromisoformat(text)
