"""Start the Temporal dev server (bin/temporal) and firing workers as local processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.processes import (
    REPO_ROOT,
    ManagedProcess,
    WaitTimeout,
    free_port,
    python_module,
    start_process,
    start_ready,
    wait_until,
)

__all__ = [
    "TEMPORAL_BINARY",
    "TemporalHandle",
    "WorkerHandle",
    "build_temporal",
    "start_temporal",
    "start_worker",
    "worker_env",
]

TEMPORAL_BINARY = REPO_ROOT / "bin" / "temporal"


def build_temporal() -> Path:
    """bin/temporal, built by scripts/build-temporal.sh when missing or not the pinned version."""
    subprocess.run(["bash", "scripts/build-temporal.sh"], cwd=REPO_ROOT, check=True)
    if not TEMPORAL_BINARY.is_file():
        raise FileNotFoundError("scripts/build-temporal.sh did not produce bin/temporal")
    return TEMPORAL_BINARY


@dataclass
class TemporalHandle:
    """A running `temporal server start-dev`: its frontend address and HTTP API."""

    process: ManagedProcess
    address: str
    http_url: str
    namespaces: tuple[str, ...]

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> int:
        return self.process.stop(timeout=30)


def start_temporal(
    *,
    db_file: Path,
    log_path: Path,
    namespaces: Sequence[str] = (),
    binary: Path = TEMPORAL_BINARY,
    timeout: float = 60.0,
) -> TemporalHandle:
    """Start the dev server on free loopback ports, its state in `db_file`; wait until it serves.

    `namespaces` are created at start (`default` always is). Ready when the HTTP API describes
    the last of them, which the server answers once its frontend has started.
    """
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        str(binary), "server", "start-dev", "--headless",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--http-port", str(http_port),
        "--metrics-port", str(metrics_port),
        "--db-filename", str(db_file),
        "--log-level", "warn",
    ]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    http_url = f"http://127.0.0.1:{http_port}"
    last = namespaces[-1] if namespaces else "default"
    process = start_ready(
        "temporal", argv, ready_url=f"{http_url}/api/v1/namespaces/{last}",
        log_path=log_path, timeout=timeout,
    )
    return TemporalHandle(process, f"127.0.0.1:{port}", http_url, ("default", *namespaces))


def worker_env(
    *,
    temporal_address: str,
    namespace: str,
    task_queue: str,
    service_url: str,
    scheduler_token: str,
    otlp_endpoint: str | None = None,
    **overrides: str,
) -> dict[str, str | None]:
    """Variables for `python -m service worker`; `overrides` win.

    Without `otlp_endpoint` the worker's spans are off (OTEL_SDK_DISABLED).
    """
    env: dict[str, str | None] = {
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_NAMESPACE": namespace,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "SERVICE_URL": service_url,
        "SCHEDULER_API_TOKEN": scheduler_token,
        "SCHEDULER_ENABLED": "false",
        "DEPLOY_ENVIRONMENT": "development",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
        "OTEL_TRACES_EXPORTER": None,
    }
    if otlp_endpoint is None:
        env["OTEL_SDK_DISABLED"] = "true"
    else:
        env |= {
            "OTEL_SDK_DISABLED": None,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    env |= overrides
    return env


@dataclass
class WorkerHandle:
    """A running `python -m service worker`."""

    process: ManagedProcess
    env: dict[str, str | None] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> int:
        return self.process.stop(timeout=30)

    def kill(self) -> int:
        """SIGKILL: the worker dies mid-firing, with no chance to hand anything back."""
        self.process.popen.kill()
        return self.process.popen.wait(timeout=30)


def start_worker(
    *, env: dict[str, str | None], log_path: Path, timeout: float = 60.0
) -> WorkerHandle:
    """Start `python -m service worker`; wait for its `{"worker": ...}` line (it polls then)."""
    process = start_process(
        "worker", python_module("service", "worker"), log_path=log_path, env=env
    )

    def polling() -> bool:
        if not process.running():
            raise WaitTimeout(f"the worker exited before it polled\n{process.describe()}")
        return any(_is_announcement(line) for line in process.log().splitlines())

    try:
        wait_until(polling, timeout, message=lambda: f"the worker to poll\n{process.describe()}")
    except BaseException:
        process.stop()
        raise
    return WorkerHandle(process, env)


def _is_announcement(line: str) -> bool:
    if not line.startswith('{"worker"'):
        return False
    try:
        return isinstance(json.loads(line).get("worker"), dict)
    except ValueError:
        return False
