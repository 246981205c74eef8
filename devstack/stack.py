"""Start the development sink, the real collector and the service as local processes."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.processes import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    python_module,
    start_ready,
)
from devstack.sink import DEV_PUBLIC_KEY, DEV_SECRET_KEY

__all__ = [
    "COLLECTOR_BINARY",
    "COLLECTOR_CONFIG",
    "CollectorHandle",
    "ServiceHandle",
    "SinkHandle",
    "collector_env",
    "service_env",
    "start_collector",
    "start_service",
    "start_sink",
]

COLLECTOR_BINARY = REPO_ROOT / "bin" / "otelcol"
COLLECTOR_CONFIG = REPO_ROOT / "otel-collector.yaml"


@dataclass
class SinkHandle:
    """A running development sink: its URL, database, keys, and the inspection routes."""

    process: ManagedProcess
    url: str
    db: Path
    public_key: str
    secret_key: str

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)

    def spans(self) -> list[dict[str, Any]]:
        return list(self.get("/_dev/spans"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("/_dev/requests"))

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_dev/stats"))

    def set_fault(self, status: int | None) -> None:
        """Answer every export with `status` (503, 401, ...) until set_fault(None)."""
        request = urllib.request.Request(
            self.url + "/_dev/fault",
            data=json.dumps({"status": status}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self) -> None:
        self.process.stop()


def start_sink(
    *,
    db: Path,
    log_path: Path,
    port: int | None = None,
    public_key: str = DEV_PUBLIC_KEY,
    secret_key: str = DEV_SECRET_KEY,
    timeout: float = 30.0,
    own_process_group: bool = False,
) -> SinkHandle:
    """Start `python -m devstack.sink` and wait until it answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_ready(
        "devsink",
        python_module("devstack.sink", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)),
        ready_url=url + "/_dev/health",
        log_path=log_path,
        timeout=timeout,
        env={"DEVSINK_PUBLIC_KEY": public_key, "DEVSINK_SECRET_KEY": secret_key},
        own_process_group=own_process_group,
    )
    return SinkHandle(process, url, db, public_key, secret_key)


def collector_env(
    *,
    langfuse_host: str,
    public_key: str,
    secret_key: str,
    queue_dir: Path,
    **overrides: str,
) -> dict[str, str]:
    """Variables for otel-collector.yaml on free loopback ports; `overrides` win."""
    env = {
        "LANGFUSE_HOST": langfuse_host,
        "LANGFUSE_PUBLIC_KEY": public_key,
        "LANGFUSE_SECRET_KEY": secret_key,
        "OTELCOL_BIND_HOST": "127.0.0.1",
        "OTELCOL_OTLP_GRPC_PORT": str(free_port()),
        "OTELCOL_OTLP_HTTP_PORT": str(free_port()),
        "OTELCOL_HEALTH_PORT": str(free_port()),
        "OTELCOL_METRICS_PORT": str(free_port()),
        "OTELCOL_QUEUE_DIR": str(queue_dir),
    }
    env.update(overrides)
    return env


@dataclass
class CollectorHandle:
    """A running bin/otelcol; `restart()` keeps its environment, ports and queue directory."""

    process: ManagedProcess
    env: dict[str, str]
    binary: Path
    config: Path
    own_process_group: bool = False

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['OTELCOL_OTLP_HTTP_PORT']}"

    @property
    def otlp_grpc_address(self) -> str:
        return f"127.0.0.1:{self.env['OTELCOL_OTLP_GRPC_PORT']}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.env['OTELCOL_HEALTH_PORT']}/"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['OTELCOL_METRICS_PORT']}/metrics"

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> int:
        return self.process.stop(timeout=30)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.process = _launch(
            self.binary, self.config, self.env, self.process.log_path, timeout,
            own_process_group=self.own_process_group,
        )


def start_collector(
    *,
    env: dict[str, str],
    log_path: Path,
    binary: Path = COLLECTOR_BINARY,
    config: Path = COLLECTOR_CONFIG,
    timeout: float = 30.0,
    own_process_group: bool = False,
) -> CollectorHandle:
    """Start the real collector with the real config and wait for its health check."""
    process = _launch(
        binary, config, env, log_path, timeout, own_process_group=own_process_group
    )
    return CollectorHandle(process, env, binary, config, own_process_group)


def _launch(
    binary: Path,
    config: Path,
    env: dict[str, str],
    log_path: Path,
    timeout: float,
    *,
    own_process_group: bool,
) -> ManagedProcess:
    return start_ready(
        "otelcol",
        [str(binary), "--config", str(config)],
        ready_url=f"http://127.0.0.1:{env['OTELCOL_HEALTH_PORT']}/",
        log_path=log_path,
        timeout=timeout,
        env=env,
        own_process_group=own_process_group,
    )


# Variables of the parent shell that would send the service's spans elsewhere, or nowhere.
_SERVICE_ENV_CLEARED = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
)


def service_env(
    *,
    database_url: str,
    scheduler_token: str,
    otlp_endpoint: str,
    **overrides: str,
) -> dict[str, str | None]:
    """Variables for `python -m service serve`: its database, token and collector; `overrides` win.

    The spans go to `otlp_endpoint` through the standard OTEL_EXPORTER_OTLP_ENDPOINT, as in
    docker-compose.yml; the batch processor exports every 200 ms so runs show up quickly.
    """
    env: dict[str, str | None] = dict.fromkeys(_SERVICE_ENV_CLEARED)
    env |= {
        "DATABASE_URL": database_url,
        "SCHEDULER_API_TOKEN": scheduler_token,
        "DEPLOY_ENVIRONMENT": "development",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    env |= overrides
    return env


@dataclass
class ServiceHandle:
    """A running `python -m service serve` and the HTTP client to call it."""

    process: ManagedProcess
    url: str
    env: dict[str, str | None] = field(repr=False)

    @property
    def scheduler_token(self) -> str:
        return self.env["SCHEDULER_API_TOKEN"] or ""

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"] or ""

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> int:
        # The service flushes its spans on exit (at most 5 s more for the collector; what is
        # left goes to its spool) before it ends.
        return self.process.stop(timeout=30)


def start_service(
    *,
    env: dict[str, str | None],
    log_path: Path,
    port: int | None = None,
    timeout: float = 60.0,
    own_process_group: bool = False,
) -> ServiceHandle:
    """Start the service on 127.0.0.1 and wait until /readyz answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_ready(
        "service",
        python_module("service", "serve", "--host", "127.0.0.1", "--port", str(port)),
        ready_url=url + "/readyz",
        log_path=log_path,
        timeout=timeout,
        env=env,
        own_process_group=own_process_group,
    )
    return ServiceHandle(process, url, env)
