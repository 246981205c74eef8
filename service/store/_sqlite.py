"""The SQLite backend: one file, one kept connection per thread.

Opening a connection costs far more than a query (SQLite reads the schema on the first
statement of each connection), so each thread keeps its own, made on its first store call. A
sqlite3 connection must not be used by two threads at once: one per thread needs no lock.
`close` (the lifespan's end, a CLI command's) closes the idle ones at once; one still inside a
transaction (a run storing its outcome during shutdown) is closed by its thread at the end.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.store._engine import SQLITE, Connection, Row

__all__ = ["SqliteEngine", "is_busy_error"]

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class SqliteEngine:
    """A SQLite file; transactions run on the calling thread's kept connection."""

    dialect = SQLITE

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: dict[threading.Thread, sqlite3.Connection] = {}
        # Connections inside a transaction now: close() leaves them to their thread, since
        # closing a connection another thread is using crashes the process.
        self._in_use: set[sqlite3.Connection] = set()
        # Bumped by close(): a thread's connection of an older generation is closed.
        self._generation = 0

    @contextlib.contextmanager
    def transaction(self, *, write: bool, busy_timeout: float | None) -> Iterator[Connection]:
        raw = self._check_out()
        broken = False
        try:
            if busy_timeout is not None:
                raw.execute(f"PRAGMA busy_timeout = {_milliseconds(busy_timeout):d}")
            try:
                with _begun(raw, "BEGIN IMMEDIATE" if write else "BEGIN"):
                    yield Connection(raw.execute, SQLITE)
            finally:
                if busy_timeout is not None:
                    with contextlib.suppress(sqlite3.Error):
                        raw.execute(
                            f"PRAGMA busy_timeout = {_milliseconds(self.busy_timeout):d}"
                        )
        except sqlite3.Error as exc:
            # Whatever broke the connection, the next call starts afresh.
            broken = not isinstance(exc, sqlite3.IntegrityError) and not is_busy_error(exc)
            raise
        finally:
            self._check_in(raw, broken=broken)

    @contextlib.contextmanager
    def migrating(self) -> Iterator[Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._open()) as raw:
            self._use_wal(raw)
            with _begun(raw, "BEGIN IMMEDIATE"):
                yield Connection(raw.execute, SQLITE)

    def _use_wal(self, raw: sqlite3.Connection) -> None:
        # WAL lets readers (auth, grant checks) proceed while a write commits. Switching
        # needs the file to itself, and SQLite does not wait for that (no busy handler):
        # processes starting together on a new file try again until the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                raw.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy_error(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    def schema_version(self, connection: Connection) -> int:
        row = connection.execute("PRAGMA user_version").fetchone()
        assert row is not None
        return int(row["user_version"])

    def set_schema_version(self, connection: Connection, version: int) -> None:
        connection.execute(f"PRAGMA user_version = {version:d}")

    def ping(self) -> int:
        # A fresh connection that may not create the file: a deleted or replaced file
        # fails here, where a kept connection would go on reading the unlinked one.
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        with contextlib.closing(
            sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        ) as raw:
            return int(raw.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._generation += 1
            idle = [raw for raw in self._kept.values() if raw not in self._in_use]
            self._kept = {t: raw for t, raw in self._kept.items() if raw in self._in_use}
        for raw in idle:
            raw.close()

    def _check_out(self) -> sqlite3.Connection:
        with self._lock:
            kept: tuple[int, sqlite3.Connection] | None = getattr(self._local, "kept", None)
            if kept is not None and kept[0] == self._generation:
                self._in_use.add(kept[1])
                return kept[1]
        raw = self._open()
        raw.execute("PRAGMA foreign_keys = ON")
        thread = threading.current_thread()
        with self._lock:
            # A thread that ended used its connection last: nobody else will.
            ended = [t for t in self._kept if not t.is_alive() and t is not thread]
            stale = [self._kept.pop(t) for t in ended]
            self._kept[thread] = raw
            self._local.kept = (self._generation, raw)
            self._in_use.add(raw)
        for connection in stale:
            connection.close()
        return raw

    def _check_in(self, raw: sqlite3.Connection, *, broken: bool) -> None:
        thread = threading.current_thread()
        with self._lock:
            self._in_use.discard(raw)
            kept: tuple[int, sqlite3.Connection] | None = getattr(self._local, "kept", None)
            keep = not broken and kept is not None and kept == (self._generation, raw)
            if not keep:
                if self._kept.get(thread) is raw:
                    del self._kept[thread]
                if kept is not None and kept[1] is raw:
                    self._local.kept = None
        if not keep:
            raw.close()

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended explicitly (_begun).
        # check_same_thread=False only so close() may close it from another thread,
        # which it does only when no transaction is using it.
        raw = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        raw.row_factory = _dict_row
        return raw


@contextlib.contextmanager
def _begun(raw: sqlite3.Connection, begin: str) -> Iterator[None]:
    raw.execute(begin)
    try:
        yield
        raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                raw.execute("ROLLBACK")
        raise


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def is_busy_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked" (busy or locked): worth retrying later."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and (
        (code & 0xFF) in _BUSY_CODES  # extended codes (SQLITE_BUSY_SNAPSHOT…) too
    )


def _milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))
