"""What the store's modules write against: one SQL text per query, whatever the backend.

Queries use `?` placeholders (SQLite's); the Postgres dialect turns them into `%s` (psycopg's),
once per query text. A backend (`service.store._sqlite`, `service.store._postgres`) hands out
connections inside transactions and knows how to lock and version its schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["POSTGRES", "SQLITE", "Connection", "Cursor", "Dialect", "Engine", "Row"]

Row = dict[str, Any]


class Cursor(Protocol):
    """The result of one statement (sqlite3's and psycopg's cursors both are one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row | None: ...

    def fetchall(self) -> list[Row]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend spells what the shared SQL texts need."""

    name: str
    # Appended to a SELECT that reads a row about to be changed: Postgres locks the row;
    # SQLite needs nothing, its write transaction (BEGIN IMMEDIATE) already excludes writers.
    for_update: str
    percent_placeholders: bool
    # A query answering the server's current time as `now` (aware), for decisions that
    # replicas on several hosts must take on one clock; None: the process's own clock is
    # that clock (SQLite: every process on one host, sharing one file).
    clock_query: str | None = None

    def statement(
        self, text: str, params: Sequence[Any]
    ) -> tuple[str, Sequence[Any] | None]:
        """`text` and `params` as this dialect's driver takes them."""
        if not self.percent_placeholders:
            return text, params
        # Without parameters psycopg reads no placeholders (DDL may hold a `?` in a comment).
        return (_percent_placeholders(text), params) if params else (text, None)


SQLITE = Dialect(name="sqlite", for_update="", percent_placeholders=False)
POSTGRES = Dialect(
    name="postgres", for_update=" FOR UPDATE", percent_placeholders=True,
    # clock_timestamp(), not now(): the time after the locks were taken, not at BEGIN.
    clock_query="SELECT clock_timestamp() AS now",
)


@functools.lru_cache(maxsize=512)
def _percent_placeholders(text: str) -> str:
    # The store's parameterised SQL holds no `?` or `%` in literals: every `?` is one.
    return text.replace("%", "%%").replace("?", "%s")


class Connection:
    """A connection inside one transaction; `execute` takes the shared `?` SQL."""

    __slots__ = ("_execute", "dialect")

    def __init__(
        self, execute: Callable[[str, Any], Cursor], dialect: Dialect
    ) -> None:
        self._execute = execute
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement; rows come back as dicts keyed by column name."""
        return self._execute(*self.dialect.statement(sql, params))


class Engine(Protocol):
    """One backend: its connections, its transactions and its schema version."""

    dialect: Dialect
    busy_timeout: float

    def transaction(
        self, *, write: bool, busy_timeout: float | None
    ) -> AbstractContextManager[Connection]:
        """A connection in a transaction: committed on success, rolled back on error.

        `write`: lock for writing from the start (SQLite's BEGIN IMMEDIATE), for a
        transaction that reads, then writes what it read.
        """
        ...

    def migrating(self) -> AbstractContextManager[Connection]:
        """A transaction that excludes every other migration, in any process."""
        ...

    def schema_version(self, connection: Connection) -> int:
        """How many migrations the database has applied."""
        ...

    def set_schema_version(self, connection: Connection, version: int) -> None:
        """Record that `version` migrations are applied."""
        ...

    def ping(self) -> int:
        """The schema version, read without any kept connection (they may be stale)."""
        ...

    def close(self) -> None:
        """Close every kept connection; a later call opens new ones."""
        ...
