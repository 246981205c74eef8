"""Real processes for integration tests: the collector binary, the development sink, the collector.

Each test gets its own sink (fresh SQLite file) and its own collector (fresh queue directory), on
free loopback ports, started from the real `otel-collector.yaml`. On failure the process logs are
printed by `describe_on_failure`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from devstack.processes import REPO_ROOT
from devstack.stack import (
    COLLECTOR_BINARY,
    CollectorHandle,
    SinkHandle,
    collector_env,
    start_collector,
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

CollectorFactory = Callable[..., CollectorHandle]


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


@pytest.fixture(autouse=True)
def describe_on_failure(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[None]:
    """Print every process log of a failed test."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-20_000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
