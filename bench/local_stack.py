"""The real collector, the development sink and a null OTLP endpoint as benchmark processes.

Built on devstack's process helpers, so the benchmarks start exactly what the integration tests
start (bin/otelcol with otel-collector.yaml, `python -m devstack.sink`). Everything listens on
127.0.0.1 and every child is stopped by the workspace that started it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devstack.processes import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    start_process,
    wait_for_http,
)
from devstack.stack import (
    COLLECTOR_BINARY,
    COLLECTOR_CONFIG,
    CollectorHandle,
    ServiceHandle,
    SinkHandle,
    collector_env,
    service_env,
    start_service,
    start_sink,
)

__all__ = [
    "NullEndpoint",
    "Workspace",
    "TELEMETRYGEN_BINARY",
    "build_collector",
    "build_telemetrygen",
    "collector_version",
    "sink_span_counts",
    "workspace",
]

BENCH_DIR = Path(__file__).resolve().parent
TELEMETRYGEN_BINARY = REPO_ROOT / "bin" / "telemetrygen"
# Variables of the parent shell that would reconfigure an SDK the benchmark configures itself.
OTEL_CLEARED = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
)


class Stoppable(Protocol):
    def stop(self) -> object: ...


def build_collector() -> Path:
    """bin/otelcol, built by scripts/build-collector.sh when missing or out of date."""
    subprocess.run(
        ["bash", "scripts/build-collector.sh"], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL
    )
    return COLLECTOR_BINARY


def build_telemetrygen() -> Path:
    """bin/telemetrygen, built by scripts/build-telemetrygen.sh when missing or another version."""
    subprocess.run(
        ["bash", "scripts/build-telemetrygen.sh"], cwd=REPO_ROOT, check=True,
        stdout=subprocess.DEVNULL,
    )
    return TELEMETRYGEN_BINARY


def collector_version() -> str:
    out = subprocess.run([str(COLLECTOR_BINARY), "--version"], capture_output=True, text=True)
    return out.stdout.strip().removeprefix("otelcol version ") or "unknown"


@dataclass
class NullEndpoint:
    """`bench/null_endpoint.py`: answers every POST 200 unread, counts requests and bytes."""

    process: ManagedProcess
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as response:
            return dict(json.load(response))

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Workspace:
    """A temporary directory holding every process's log and data; stops them all on exit."""

    root: Path
    _stack: ExitStack = field(default_factory=ExitStack)
    _count: int = 0

    def path(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:03d}-{name}"

    def adopt(self, handle: Stoppable) -> None:
        self._stack.callback(handle.stop)

    def sink(self) -> SinkHandle:
        handle = start_sink(db=self.path("sink.sqlite3"), log_path=self.path("sink.log"))
        self.adopt(handle)
        return handle

    def null_endpoint(self) -> NullEndpoint:
        port = free_port()
        process = start_process(
            "null-endpoint",
            [sys.executable, str(BENCH_DIR / "null_endpoint.py"), "--port", str(port)],
            log_path=self.path("null-endpoint.log"),
        )
        endpoint = NullEndpoint(process, f"http://127.0.0.1:{port}")
        self.adopt(endpoint)
        wait_for_http(endpoint.url + "/_stats", process)
        return endpoint

    def collector(
        self,
        *,
        destination: str,
        public_key: str,
        secret_key: str,
        overlays: Sequence[str] = (),
        **overrides: str,
    ) -> CollectorHandle:
        """bin/otelcol with otel-collector.yaml plus `overlays` (`yaml:` --config URIs)."""
        env = collector_env(
            langfuse_host=destination,
            public_key=public_key,
            secret_key=secret_key,
            queue_dir=self.path("queue"),
            **overrides,
        )
        argv = [str(COLLECTOR_BINARY), "--config", str(COLLECTOR_CONFIG)]
        for overlay in overlays:
            argv += ["--config", overlay]
        process = start_process("otelcol", argv, log_path=self.path("otelcol.log"), env=env)
        handle = CollectorHandle(process, env, COLLECTOR_BINARY, COLLECTOR_CONFIG)
        self.adopt(handle)
        wait_for_http(handle.health_url, process)
        return handle

    def service(
        self, *, name: str, database_url: str, otlp_endpoint: str, **overrides: str
    ) -> ServiceHandle:
        """`python -m service serve` on `database_url`, with the offline LLM provider and the
        SDK's default batch settings (devstack's 200 ms export delay is for demos)."""
        env = service_env(
            database_url=database_url,
            scheduler_token="bench-scheduler-token-0123456789",
            otlp_endpoint=otlp_endpoint,
            LLM_BASE_URL="",
            **overrides,
        )
        env["OTEL_BSP_SCHEDULE_DELAY"] = None
        handle = start_service(env=env, log_path=self.path(f"{name}.log"))
        self.adopt(handle)
        return handle

    def logs(self, tail: int = 15) -> str:
        """The last lines of every log, for a failure message."""
        parts = []
        for log in sorted(self.root.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append("\n".join([f"--- {log.name}", *lines]))
        return "\n".join(parts)

    def close(self) -> None:
        self._stack.close()


@contextmanager
def workspace(name: str) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as root:
        space = Workspace(Path(root))
        try:
            yield space
        except BaseException:
            print(space.logs(), file=sys.stderr)
            raise
        finally:
            space.close()


def sink_span_counts(db: Path, session_key: str = "session.id") -> dict[str, int]:
    """Spans the sink stored: all, distinct, with a non-empty session, traces, requests."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        spans, distinct, sessions, traces = connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT trace_id || span_id),"
            " COUNT(DISTINCT json_extract(attributes, ?)), COUNT(DISTINCT trace_id) FROM spans",
            (f'$."{session_key}"',),
        ).fetchone()
        (stamped,) = connection.execute(
            "SELECT COUNT(*) FROM spans WHERE COALESCE(json_extract(attributes, ?), '') != ''",
            (f'$."{session_key}"',),
        ).fetchone()
        (rejected,) = connection.execute(
            "SELECT COUNT(*) FROM requests WHERE status != 200"
        ).fetchone()
    finally:
        connection.close()
    return {
        "spans": spans,
        "distinct_spans": distinct,
        "stamped": stamped,
        "sessions": sessions,
        "traces": traces,
        "rejected_requests": rejected,
    }
