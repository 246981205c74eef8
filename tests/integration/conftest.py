"""Real processes for integration tests: the collector binary, the development sink, the collector,
the service, its replicas on Postgres, the Temporal dev server.

Each test gets its own sink (fresh SQLite file), its own collector (fresh queue directory) and its
own service (fresh database), on free loopback ports, the collector started from the real
`otel-collector.yaml`. A module that overrides `service_database_url` with `postgres_database_url`
gets a fresh database on its module's Postgres server instead. Temporal: one dev server for the
session, a namespace of its own per test. On failure the process logs are printed by
`describe_on_failure`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from devstack.demo import DemoAccount, provision_demo
from devstack.postgres import PostgresServer, start_postgres
from devstack.processes import REPO_ROOT
from devstack.temporal import TemporalHandle, build_temporal, start_temporal
from llm_stub import LLMStub, serve_llm_stub
from temporal_deployment import NAMESPACES, Deployment
from devstack.stack import (
    COLLECTOR_BINARY,
    CollectorHandle,
    ServiceHandle,
    SinkHandle,
    collector_env,
    service_env,
    start_collector,
    start_service,
    start_sink,
)

# Test-speed retry backoff; production defaults (5s, 60s) are in otel-collector.yaml.
FAST_RETRY = {
    "OTELCOL_RETRY_INITIAL_INTERVAL": "100ms",
    "OTELCOL_RETRY_MAX_INTERVAL": "500ms",
    "OTELCOL_BATCH_FLUSH_TIMEOUT": "200ms",
}
# Over 76 characters once base64-encoded with the public key: catches line-wrapped encodings.
SECRET_KEY = "sk-lf-integration-" + "0123456789abcdef" * 4

SCHEDULER_TOKEN = "integration-scheduler-token-0123456789"

CollectorFactory = Callable[..., CollectorHandle]
ServiceFactory = Callable[..., ServiceHandle]
ReplicasFactory = Callable[..., list[ServiceHandle]]

_databases = iter(range(1, 1_000))
_unused_namespaces = iter(NAMESPACES)


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """bin/otelcol, built by scripts/build-collector.sh when missing or out of date."""
    subprocess.run(["bash", "scripts/build-collector.sh"], cwd=REPO_ROOT, check=True)
    assert COLLECTOR_BINARY.is_file(), "scripts/build-collector.sh did not produce bin/otelcol"
    return COLLECTOR_BINARY


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkHandle]:
    """The development sink on a free port, recording to a fresh SQLite file."""
    handle = start_sink(
        db=tmp_path / "sink.sqlite3",
        log_path=tmp_path / "sink.log",
        public_key="pk-lf-integration",
        secret_key=SECRET_KEY,
    )
    yield handle
    handle.stop()


@pytest.fixture
def collector_factory(
    collector_binary: Path, sink: SinkHandle, tmp_path: Path
) -> Iterator[CollectorFactory]:
    """Starts collectors exporting to `sink`; keyword arguments override config variables."""
    started: list[CollectorHandle] = []

    def start(**overrides: str) -> CollectorHandle:
        env = collector_env(
            langfuse_host=sink.url,
            public_key=sink.public_key,
            secret_key=sink.secret_key,
            queue_dir=tmp_path / "queue",
            **(FAST_RETRY | overrides),
        )
        handle = start_collector(
            env=env, log_path=tmp_path / f"otelcol-{len(started)}.log", binary=collector_binary
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def collector(collector_factory: CollectorFactory) -> CollectorHandle:
    """The real collector with the real config, exporting to `sink` with the right keys."""
    return collector_factory()


@pytest.fixture
def service_database_url(tmp_path: Path) -> str:
    """The service's SQLite database, fresh for each test."""
    return f"sqlite:///{tmp_path / 'service.db'}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway Postgres server for the module's tests (devstack.postgres)."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_database_url(postgres: PostgresServer) -> str:
    """A fresh database on the module's Postgres server."""
    return postgres.create_database(f"service_{next(_databases)}")


@pytest.fixture
def demo_account(service_database_url: str) -> DemoAccount:
    """A billing account, user and governance grant, created with the service's CLI."""
    return provision_demo(service_database_url)


@pytest.fixture
def service_factory(service_database_url: str, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Starts `python -m service serve` exporting to `otlp_endpoint`; keywords override env."""
    started: list[ServiceHandle] = []

    def start(*, otlp_endpoint: str, **overrides: str) -> ServiceHandle:
        env = service_env(
            database_url=service_database_url,
            scheduler_token=SCHEDULER_TOKEN,
            otlp_endpoint=otlp_endpoint,
            # The offline LLM provider, whatever the developer's shell or .env configures,
            # unless the test names one.
            **({"LLM_BASE_URL": ""} | overrides),
        )
        handle = start_service(env=env, log_path=tmp_path / f"service-{len(started)}.log")
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def service(service_factory: ServiceFactory, collector: CollectorHandle) -> ServiceHandle:
    """The real service exporting over OTLP/HTTP to the real collector."""
    return service_factory(otlp_endpoint=collector.otlp_http_url)


@pytest.fixture
def replicas(
    service_factory: ServiceFactory, collector: CollectorHandle, llm_stub: LLMStub,
    tmp_path: Path,
) -> ReplicasFactory:
    """Starts replicas of the service on the Postgres database, exporting to the collector."""

    def start(count: int, **overrides: str) -> list[ServiceHandle]:
        return [
            service_factory(
                otlp_endpoint=collector.otlp_http_url, LLM_BASE_URL=llm_stub.url,
                LLM_MODEL="stub-model",
                # One spool directory per process (a second one is refused).
                SESSIONTRACE_SPOOL_DIR=str(tmp_path / f"spool-{index}"), **overrides,
            )
            for index in range(count)
        ]

    return start


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalHandle]:
    """bin/temporal server start-dev on free ports, its state in a temporary SQLite file."""
    binary = build_temporal()
    directory = tmp_path_factory.mktemp("temporal")
    handle = start_temporal(
        db_file=directory / "temporal.db", log_path=directory / "temporal.log",
        namespaces=NAMESPACES, binary=binary,
    )
    yield handle
    handle.stop()


@pytest.fixture
def namespace(temporal_server: TemporalHandle) -> str:
    """A namespace no other test uses."""
    name = next(_unused_namespaces, None)
    assert name is not None, f"more Temporal tests than NAMESPACES ({len(NAMESPACES)}): add some"
    return name


@pytest.fixture
def deployment(
    temporal_server: TemporalHandle, namespace: str, tmp_path: Path
) -> Iterator[Deployment]:
    """The schedules' deployment in this test's namespace; its workers are stopped after."""
    handle = Deployment(
        temporal_server, namespace, tmp_path / "schedules.yaml", tmp_path, SCHEDULER_TOKEN
    )
    yield handle
    for worker in handle.workers:
        worker.stop()


@pytest.fixture(autouse=True)
def describe_on_failure(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[None]:
    """Print every process log of a failed test."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for log in sorted(tmp_path.rglob("*.log")):
            text = log.read_text(errors="replace")[-20_000:]
            print(f"\n--- {log.relative_to(tmp_path)} ---\n{text}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def llm_stub() -> Iterator[LLMStub]:
    """An OpenAI-compatible LLM endpoint whose answers wait for `llm_stub.release`."""
    with serve_llm_stub() as stub:
        yield stub
