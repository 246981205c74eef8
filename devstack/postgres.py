"""A throwaway Postgres server for tests: `initdb` into a temporary directory, `postgres` on a
free loopback port, removed when stopped.

Uses the binaries of Debian's `postgresql` package (`initdb`, `postgres`, `pg_ctl` on PATH, in
/usr/local/bin or /usr/lib/postgresql/*/bin). Both refuse to run as root: as root they run as the
`postgres` user, which owns the temporary directory. The server trusts local connections (no
password) and skips fsync: its data lives only as long as the test session.

    with start_postgres() as server:
        url = server.create_database("service")   # postgresql://postgres@127.0.0.1:PORT/service
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psycopg
from psycopg import sql

from devstack.processes import free_port, wait_until

__all__ = ["PostgresError", "PostgresServer", "find_postgres_binaries", "start_postgres"]

_SEARCH_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/*/bin")
_SERVICE_USER = "postgres"
_SUPERUSER = "postgres"
# Speed over durability: the data dies with the test session.
_SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(RuntimeError):
    """The server could not be found, initialised or started; the message says why."""


@dataclass(frozen=True)
class PostgresBinaries:
    """Where `initdb` and `postgres` are."""

    initdb: Path
    postgres: Path


def find_postgres_binaries() -> PostgresBinaries:
    """`initdb` and `postgres`; PostgresError naming the Debian package when absent."""
    for directory in [os.environ.get("PATH", "")] + [
        str(path) for pattern in _SEARCH_DIRS for path in sorted(Path("/").glob(pattern[1:]))
    ]:
        initdb = shutil.which("initdb", path=directory)
        postgres = shutil.which("postgres", path=directory)
        if initdb and postgres:
            return PostgresBinaries(Path(initdb), Path(postgres))
    raise PostgresError(
        "initdb and postgres were not found (searched PATH, /usr/local/bin and "
        "/usr/lib/postgresql/*/bin): install Debian's `postgresql` package "
        "(apt-get install -y postgresql)"
    )


@dataclass
class PostgresServer:
    """A running `postgres` on 127.0.0.1:`port`, its data and socket in `directory`."""

    directory: Path
    port: int
    binaries: PostgresBinaries
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        if self._process is None:
            raise PostgresError("the server is not running")
        return self._process.pid

    def url(self, database: str = "postgres") -> str:
        """The URL of one database, as DATABASE_URL takes it."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name`; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again) on its port; wait until it accepts connections."""
        if self._process is not None and self._process.poll() is None:
            return
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                str(self.binaries.postgres), "-D", str(self.directory / "data"),
                "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                "-k", str(self.directory),
                *(part for setting in _SERVER_SETTINGS for part in ("-c", setting)),
            ],
            cwd=self.directory, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, user=_service_user(), group=_service_user(),
        )
        wait_until(self._accepts_connections, timeout, message=self._describe)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open transactions are rolled back); SIGKILL past `timeout`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP the postmaster and its backends: a hung server that keeps its connections."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        postmaster = self.pid
        for pid in (postmaster, *_children(postmaster)):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # a backend that ended meanwhile

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _accepts_connections(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise PostgresError(f"postgres exited before accepting connections\n{self._describe()}")
        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _describe(self) -> str:
        try:
            log = self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            log = ""
        return f"postgres on 127.0.0.1:{self.port}, log {self.log_path}:\n{log}"


def start_postgres(*, port: int | None = None, timeout: float = 30.0) -> PostgresServer:
    """initdb a fresh cluster in a new temporary directory and start it; stop it with `remove`."""
    binaries = find_postgres_binaries()
    directory = Path(tempfile.mkdtemp(prefix="sessiontrace-postgres-"))
    server = PostgresServer(directory=directory, port=port or free_port(), binaries=binaries)
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SERVICE_USER)
            os.chown(directory, account.pw_uid, account.pw_gid)
        initialised = subprocess.run(
            [
                str(binaries.initdb), "-D", str(directory / "data"), "-U", _SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions",
            ],
            cwd=directory, capture_output=True, text=True, check=False,
            user=_service_user(), group=_service_user(),
        )
        if initialised.returncode != 0:
            raise PostgresError(
                f"initdb failed ({initialised.returncode}):\n{initialised.stdout}"
                f"{initialised.stderr}"
            )
        server.start(timeout)
    except BaseException:
        server.remove()
        raise
    return server


def _service_user() -> str | None:
    # initdb and postgres refuse root; as root, run them as the package's `postgres` user.
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and there is no {_SERVICE_USER!r} user to run postgres as: "
            "install Debian's `postgresql` package (apt-get install -y postgresql), which "
            "creates it"
        ) from None
    return _SERVICE_USER


def _children(parent: int) -> list[int]:
    """The ids of `parent`'s child processes, from /proc (a backend per connection)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children
