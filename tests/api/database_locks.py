"""A fault to inject: another connection holding the database's write lock for a while."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

import psycopg

from service.config import is_postgres_url, sqlite_path

# Every table the service writes: EXCLUSIVE mode blocks writes and SELECT ... FOR UPDATE,
# not plain reads, like SQLite's exclusive lock in WAL mode.
_TABLES = "billing_accounts, users, execution_grants, idempotency_keys"


@contextmanager
def write_lock_held(database_url: str, *, seconds: float) -> Iterator[threading.Event]:
    """Hold the write lock of the database at `database_url` from now until `seconds` have passed.

    As a backup, a long migration or an operator's `sqlite3` or `psql` shell would: every
    write waits or fails meanwhile, reads go on. A thread timer releases the lock, so the code
    under test may block on it; the event is set as it is released. Leaving the block waits
    for the release.
    """
    with _locked(database_url) as release:
        released = threading.Event()

        def release_now() -> None:
            # Set first: a waiter the release wakes must already see it (Postgres wakes it
            # before this thread runs again).
            released.set()
            release()

        timer = threading.Timer(seconds, release_now)
        timer.start()
        try:
            yield released
        finally:
            timer.join()


@contextmanager
def _locked(database_url: str) -> Iterator[Callable[[], None]]:
    if is_postgres_url(database_url):
        with psycopg.connect(database_url) as connection:
            connection.execute(f"LOCK TABLE {_TABLES} IN EXCLUSIVE MODE")
            yield connection.rollback
        return
    path = sqlite_path(database_url)
    with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as lite:
        lite.execute("BEGIN EXCLUSIVE")

        def rollback() -> None:
            lite.execute("ROLLBACK")

        yield rollback
