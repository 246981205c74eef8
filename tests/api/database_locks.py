"""A fault to inject: another connection holding the database's write lock for a while."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path


@contextmanager
def write_lock_held(path: Path, *, seconds: float) -> Iterator[threading.Event]:
    """Hold the write lock of the SQLite file at `path` from now until `seconds` have passed.

    As a backup, a long migration or an operator's `sqlite3` shell would: every
    write waits or fails meanwhile, reads go on (WAL). A thread timer releases
    the lock, so the code under test may block on it; the event is set once
    released. Leaving the block waits for the release.
    """
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    released = threading.Event()
    with closing(connection):
        connection.execute("BEGIN EXCLUSIVE")

        def release() -> None:
            connection.execute("ROLLBACK")
            released.set()

        timer = threading.Timer(seconds, release)
        timer.start()
        try:
            yield released
        finally:
            timer.join()
