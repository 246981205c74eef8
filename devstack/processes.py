"""Start local processes (sink, collector, service) with their logs captured, wait, stop."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "ManagedProcess",
    "WaitTimeout",
    "free_port",
    "http_ok",
    "python_module",
    "start_process",
    "start_ready",
    "wait_for_http",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


@dataclass
class ManagedProcess:
    """A child process whose stdout and stderr go to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
        return self.popen.returncode

    def describe(self, tail: int = 80) -> str:
        """A header and the last `tail` log lines, for failure messages."""
        state = "running" if self.running() else f"exited with {self.popen.returncode}"
        lines = self.log().splitlines()[-tail:]
        header = f"--- {self.name} (pid {self.pid}, {state}), log {self.log_path}:"
        return "\n".join([header, *lines])


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str | None] | None = None,
    cwd: Path = REPO_ROOT,
    own_process_group: bool = False,
) -> ManagedProcess:
    """Start `argv` with stdout and stderr appended to `log_path`.

    `env` entries are added to (and override) this process's environment; a None value removes
    the variable. The log is appended to, not truncated, so a restarted process keeps the
    history of the previous run. With `own_process_group`, a Ctrl-C in the terminal reaches only
    the parent, which then stops its children in the order it chooses.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    child_env = {**os.environ}
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=child_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        process_group=0 if own_process_group else None,
    )
    return ManagedProcess(name, popen, log_path, log_file)


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    *,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> object:
    """Poll `predicate` until it returns something truthy; raise WaitTimeout at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {text}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_for_http(url: str, process: ManagedProcess, timeout: float = 30.0) -> None:
    """Wait until `url` answers 2xx; fail fast with the log if `process` exits first."""

    def ready() -> bool:
        if not process.running():
            raise WaitTimeout(f"{process.name} exited before {url} was ready\n{process.describe()}")
        return http_ok(url)

    wait_until(ready, timeout, message=lambda: f"{url}\n{process.describe()}")


def start_ready(
    name: str,
    argv: Sequence[str],
    *,
    ready_url: str,
    log_path: Path,
    timeout: float = 30.0,
    env: Mapping[str, str | None] | None = None,
    own_process_group: bool = False,
) -> ManagedProcess:
    """`start_process`, then `wait_for_http(ready_url)`; a process that never gets ready is stopped."""
    process = start_process(
        name, argv, log_path=log_path, env=env, own_process_group=own_process_group
    )
    try:
        wait_for_http(ready_url, process, timeout)
    except BaseException:
        process.stop()
        raise
    return process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now, below the kernel's ephemeral range, never handed out twice.

    A port the OS picks (bind to 0) comes from the ephemeral range, where every outgoing
    connection also takes its source port: between this call and the server's own bind, a
    client connection could take it ("address already in use", seen in CI). Below that range
    only servers bind.
    """
    low = _ephemeral_range_start()
    for _ in range(500):
        port = random.randrange(max(1024, low - 16_000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port below {low} on {host}")


_HANDED_OUT: set[int] = set()


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
