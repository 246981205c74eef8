"""The Postgres backend: psycopg 3 with a connection pool of DATABASE_POOL_SIZE connections.

Each transaction borrows a pooled connection and gives it back, so any thread may run one. A
lock wait is bounded by `lock_timeout` (the busy timeout, as SQLite's busy_timeout bounds
its own), and borrowing waits at most as long: a locked table, a full pool or a server that
does not answer fails like SQLite's "database is locked" (`is_busy_error`). When a pooled
connection turns out broken (the server restarted), the transaction on it fails, and the pool's
other idle connections are checked at once: after a restart one request fails, not one per
pooled connection.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from service.store._engine import POSTGRES, Connection, Row

__all__ = ["PostgresEngine", "is_busy_error"]

logger = logging.getLogger(__name__)

# SQLSTATEs that say "not now" rather than "never": a lock or statement timeout, a
# serialization failure or deadlock (the transaction was rolled back whole), a server
# shutting down or starting, too many connections. Class 08 (connection exceptions) too.
_BUSY_SQLSTATES = frozenset({
    "55P03", "57014", "40001", "40P01", "57P01", "57P02", "57P03", "53300",
})
# The server ended the connection: it shut down, fast or after a crash.
_CONNECTION_ENDED = frozenset({"57P01", "57P02"})
# Serialises migrations of one database across processes (pg_advisory_xact_lock).
_MIGRATION_LOCK = zlib.crc32(b"sessiontrace schema migration")
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


class PostgresEngine:
    """A Postgres database; transactions run on connections borrowed from one pool."""

    dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int, busy_timeout: float) -> None:
        self.busy_timeout = busy_timeout
        self.pool_size = pool_size
        self._url = url
        self._connect_options = _connect_options(url, busy_timeout=busy_timeout)
        self._lock = threading.Lock()
        self._checking = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None

    @contextlib.contextmanager
    def transaction(self, *, write: bool, busy_timeout: float | None) -> Iterator[Connection]:
        # `write` needs nothing here: rows read to be changed are locked (FOR UPDATE).
        wait = self.busy_timeout if busy_timeout is None else busy_timeout
        pool = self._get_pool()
        try:
            with pool.connection(timeout=max(wait, 0.001)) as raw:
                if busy_timeout is not None and busy_timeout != self.busy_timeout:
                    raw.execute(f"SET LOCAL lock_timeout = {_milliseconds(busy_timeout):d}")
                yield Connection(raw.execute, POSTGRES)
        except psycopg.OperationalError as exc:
            if _broke_a_connection(exc):
                self._check_idle_connections(pool)
            raise

    @contextlib.contextmanager
    def migrating(self) -> Iterator[Connection]:
        # Its own connection, not the pool's: a server that cannot be reached fails here
        # with libpq's own reason, which the pool's timeout would hide.
        with psycopg.connect(self._url, row_factory=dict_row, **self._connect_options) as raw:
            with raw.transaction():
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                raw.execute(_VERSION_TABLE)
                yield Connection(raw.execute, POSTGRES)

    def schema_version(self, connection: Connection) -> int:
        row = connection.execute("SELECT max(version) AS version FROM schema_version").fetchone()
        return 0 if row is None or row["version"] is None else int(row["version"])

    def set_schema_version(self, connection: Connection, version: int) -> None:
        connection.execute("DELETE FROM schema_version")
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def ping(self) -> int:
        with self.transaction(write=False, busy_timeout=None) as connection:
            return self.schema_version(connection)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _check_idle_connections(self, pool: ConnectionPool[psycopg.Connection[Row]]) -> None:
        # The pool finds a broken connection only when it is handed back, so after a restart
        # every idle one would fail a request of its own. `check()` takes them all out at once
        # (new requests get fresh connections meanwhile) and replaces the broken ones; one
        # check at a time is enough.
        if not self._checking.acquire(blocking=False):
            return
        try:
            pool.check()
        except Exception:
            logger.exception("checking the pool's idle connections failed")
        finally:
            self._checking.release()

    def _get_pool(self) -> ConnectionPool[psycopg.Connection[Row]]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                # Opened on first use; connections beyond the first are made on demand.
                self._pool = ConnectionPool(
                    self._url,
                    connection_class=psycopg.Connection[Row],
                    kwargs={"row_factory": dict_row, **self._connect_options},
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.busy_timeout,
                    name="sessiontrace",
                    open=True,
                )
            return self._pool


def is_busy_error(exc: BaseException) -> bool:
    """Whether `exc` is a Postgres failure worth retrying later (locked, busy, unreachable)."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # No SQLSTATE: the connection failed or broke, or the pool had none to lend in time.
    return state is None or state.startswith("08") or state in _BUSY_SQLSTATES


def _broke_a_connection(exc: psycopg.OperationalError) -> bool:
    # No SQLSTATE, class 08 or the server's shutdown notice (57P01, 57P02); not the pool's
    # own "no connection in time": no connection was used, and a full pool is not broken.
    if isinstance(exc, PoolTimeout):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _CONNECTION_ENDED


def _connect_options(url: str, *, busy_timeout: float) -> dict[str, Any]:
    # What the URL sets wins: ours come first in `options`, and connect_timeout
    # (libpq's minimum is 2 s) only when the URL has none.
    params = conninfo_to_dict(url)
    options = f"-c lock_timeout={_milliseconds(busy_timeout):d}"
    if params.get("options"):
        options = f"{options} {params['options']}"
    extra: dict[str, Any] = {"options": options, "application_name": "sessiontrace"}
    if "application_name" in params:
        del extra["application_name"]
    if "connect_timeout" not in params:
        extra["connect_timeout"] = max(2, math.ceil(busy_timeout))
    return extra


def _milliseconds(seconds: float) -> int:
    # lock_timeout = 0 would mean "wait for ever": the shortest wait is 1 ms.
    return max(1, round(seconds * 1000))
