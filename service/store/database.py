"""The service's database: a SQLite file (the embedded default) or a Postgres server.

Connections are kept and reused: SQLite keeps one per thread, Postgres a pool of
DATABASE_POOL_SIZE. Opening a SQLite connection costs far more than a query (its first
statement reads the schema), so a store call on a kept connection takes about a twelfth of
the CPU of one on a new connection: 15 against 184 µs for `authenticate_user`, 2.4 against
2.8 ms per in-process chat request (`bench/store_calls.py`). A chat request makes one store
call (the user with its account's masking), a governance run four. Store calls block: the
service runs them in `asyncio.to_thread`, on any thread.

A lock held by another connection is waited for up to the busy timeout (SQLite's busy_timeout,
Postgres's lock_timeout) before the call fails; `is_busy` tells that failure, and Postgres's
other "not now" failures (serialization, unreachable server, no pooled connection in time),
from the others. `close` closes every kept connection (the lifespan's end, a CLI command's).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Concatenate, ParamSpec, Self, TypeVar

import psycopg

from service.config import DEFAULT_DATABASE_POOL_SIZE, is_postgres_url, redacted_url, sqlite_path
from service.store import _postgres, _sqlite
from service.store._engine import Connection, Engine
from service.store.schema import MIGRATIONS

__all__ = [
    "ANSWER_MARGIN_SECONDS",
    "BUSY_TIMEOUT_SECONDS",
    "DATABASE_ERRORS",
    "Connection",
    "Database",
    "DatabaseNotAnswering",
    "StoreError",
    "from_iso",
    "in_thread",
    "in_thread_within",
    "is_busy",
    "retrying_while_busy",
    "to_iso",
    "utc_now",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = ParamSpec("_P")

# How long one operation waits for another connection's lock (a write, a
# backup, a checkpoint) before failing: short locks wait instead of failing.
BUSY_TIMEOUT_SECONDS = 5.0
# What a failing store call raises when the database itself fails (not a refused record):
# `is_busy` tells the ones worth retrying.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.OperationalError, psycopg.OperationalError)
# A store call waits for locks and for a pooled connection up to the busy timeout. Past that
# plus this margin the server itself has stopped answering (a hung process, a partition that
# keeps the TCP connection open, which libpq only notices when TCP gives up): the request gives
# up with a busy error instead of hanging with it.
ANSWER_MARGIN_SECONDS = 5.0
_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0


class StoreError(Exception):
    """A store operation was refused (unknown or duplicate record); the message says why."""


class DatabaseNotAnswering(Exception):
    """A store call did not return in time: the database server hangs (busy, for `is_busy`)."""


async def in_thread(
    call: Callable[Concatenate[Database, _P], _T],
    database: Database,
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """`call(database, ...)` in a worker thread, given up after the busy timeout plus a margin."""
    bound = database.busy_timeout + ANSWER_MARGIN_SECONDS
    return await in_thread_within(bound, call, database, *args, **kwargs)


async def in_thread_within(
    seconds: float,
    call: Callable[Concatenate[Database, _P], _T],
    database: Database,
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """`call(database, ...)` in a worker thread; DatabaseNotAnswering after `seconds`.

    The thread itself cannot be stopped: it ends when the server answers again or its
    connection fails, and what it then commits stands (a claim left pending is taken over
    after IDEMPOTENCY_PENDING_TIMEOUT_SECONDS, as a dead process's would be).
    """
    task = asyncio.ensure_future(asyncio.to_thread(call, database, *args, **kwargs))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        name = getattr(call, "__name__", repr(call))
        raise DatabaseNotAnswering(f"the database did not answer {name} within {seconds:g} s")
    return task.result()


class Database:
    """The service's database; `Database(path)` is a SQLite file, `from_url` either kind."""

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self._bind(
            _sqlite.SqliteEngine(Path(path), busy_timeout=busy_timeout),
            url=f"sqlite:///{path}",
        )

    @classmethod
    def from_url(
        cls,
        database_url: str,
        *,
        pool_size: int = DEFAULT_DATABASE_POOL_SIZE,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> Database:
        """The database of a DATABASE_URL: `sqlite:///...`, `postgresql://...` or `postgres://...`.

        Nothing connects yet; `pool_size` bounds a Postgres pool.
        """
        if not is_postgres_url(database_url):
            return cls(sqlite_path(database_url), busy_timeout=busy_timeout)
        database = cls.__new__(cls)
        database._bind(
            _postgres.PostgresEngine(database_url, pool_size=pool_size, busy_timeout=busy_timeout),
            url=database_url,
        )
        return database

    def _bind(self, engine: Engine, *, url: str) -> None:
        self._engine = engine
        self._url = url
        self._local = threading.local()

    @property
    def backend(self) -> str:
        """`sqlite` or `postgres`."""
        return self._engine.dialect.name

    @property
    def busy_timeout(self) -> float:
        """Seconds one operation waits for another connection's lock."""
        return self._engine.busy_timeout

    def __repr__(self) -> str:
        return f"Database({redacted_url(self._url)!r})"

    @contextmanager
    def connect(
        self, *, write: bool = False, busy_timeout: float | None = None
    ) -> Iterator[Connection]:
        """A connection for one transaction: committed on success, rolled back on error.

        `write` takes the write lock first (SQLite), for a transaction that reads, then
        writes. `busy_timeout` (seconds) overrides the database's for this transaction.
        One thread runs one transaction at a time: a nested one would wait for itself.
        """
        if getattr(self._local, "active", False):
            raise RuntimeError("a store transaction is already open on this thread")
        self._local.active = True
        try:
            with self._engine.transaction(write=write, busy_timeout=busy_timeout) as connection:
                yield connection
        finally:
            self._local.active = False

    def migrate(self) -> None:
        """Create the database if needed and apply pending migrations; StoreError if unreachable.

        Processes starting together are serialised: each migration is applied once.
        """
        try:
            with self._engine.migrating() as connection:
                applied = self._engine.schema_version(connection)
                for version, statements in enumerate(MIGRATIONS[applied:], start=applied + 1):
                    for statement in statements:
                        connection.execute(statement)
                    self._engine.set_schema_version(connection, version)
        except DATABASE_ERRORS as exc:
            raise StoreError(
                f"cannot open the database DATABASE_URL={redacted_url(self._url)}: {exc}"
            ) from exc

    def ping(self) -> None:
        """Raise unless the database answers and its schema is current."""
        version = self._engine.ping()
        if version != len(MIGRATIONS):
            raise StoreError(f"schema version {version}, expected {len(MIGRATIONS)}")

    def close(self) -> None:
        """Close every kept connection (a later call opens new ones)."""
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` says the database is busy, not broken: locked, unreachable or hung.

    SQLite's "database is locked" (busy or locked, extended codes too); Postgres's lock
    timeout, serialization failure, deadlock, connection failure or pool timeout; a call
    that did not answer in time (`DatabaseNotAnswering`).
    """
    return (
        isinstance(exc, DatabaseNotAnswering)
        or _sqlite.is_busy_error(exc)
        or _postgres.is_busy_error(exc)
    )


def retrying_while_busy(
    db: Database, operation: Callable[[Connection], _T], *, within: float
) -> _T:
    """`operation` in one write transaction, tried again while the database is busy.

    Attempts wait for the lock (the database's busy timeout, cut to the time
    left) and back off between them; after `within` seconds the last busy
    error is raised. Any other error is raised at once.
    """
    deadline = time.monotonic() + within
    backoff = _FIRST_BACKOFF_SECONDS
    while True:
        left = deadline - time.monotonic()
        try:
            with db.connect(
                write=True, busy_timeout=max(0.0, min(db.busy_timeout, left))
            ) as connection:
                return operation(connection)
        except DATABASE_ERRORS as exc:
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
