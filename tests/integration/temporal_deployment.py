"""A deployment of the Temporal schedules, as the CLI and the workers see it: the dev server, one
namespace, the SCHEDULES_FILE, the service the workers post to, and the workers started.

Shared by the integration tests that run firings through Temporal (the conftest's `deployment`
fixture builds one per test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.demo import GOVERNANCE_GRAPH
from devstack.processes import REPO_ROOT, free_port
from devstack.stack import ServiceHandle
from devstack.temporal import TemporalHandle, WorkerHandle, start_worker, worker_env
from service.schedules import Schedule, parse_schedules

__all__ = ["NAMESPACES", "TASK_QUEUE", "Deployment", "governance_entry"]

_T = TypeVar("_T")

TASK_QUEUE = "sessiontrace-governance"
NAMESPACES = tuple(f"test-{n}" for n in range(16))


@dataclass
class Deployment:
    """What the CLI and the workers are configured with: Temporal, the file, the service."""

    temporal: TemporalHandle
    namespace: str
    schedules_file: Path
    tmp_path: Path
    scheduler_token: str
    service: ServiceHandle | None = None
    workers: list[WorkerHandle] = field(default_factory=list)

    @property
    def service_url(self) -> str:
        return self.service.url if self.service is not None else f"http://127.0.0.1:{free_port()}"

    def write(self, text: str) -> list[Schedule]:
        self.schedules_file.write_text(text)
        return parse_schedules(yaml.safe_load(text))

    def cli(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLM_"))},
            "TEMPORAL_ADDRESS": self.temporal.address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "TEMPORAL_TASK_QUEUE": TASK_QUEUE,
            "SCHEDULES_FILE": str(self.schedules_file),
            "SERVICE_URL": self.service_url,
            "SCHEDULER_API_TOKEN": self.scheduler_token,
            "DEPLOY_ENVIRONMENT": "development",
            "OTEL_SDK_DISABLED": "true",
            "PYTHONPATH": str(REPO_ROOT),
            **overrides,
        }
        return subprocess.run(
            [sys.executable, "-m", "service", *args], cwd=self.tmp_path, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )

    def ok(self, *args: str, **overrides: str) -> dict[str, Any]:
        result = self.cli(*args, **overrides)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def failed(self, *args: str, **overrides: str) -> str:
        result = self.cli(*args, **overrides)
        assert result.returncode == 1, f"{args} did not fail: {result.stdout}{result.stderr}"
        message: str = json.loads(result.stderr.strip().splitlines()[-1])["error"]
        return message

    def start_worker(self, *, otlp_endpoint: str | None = None, service_url: str | None = None
                     ) -> WorkerHandle:
        env = worker_env(
            temporal_address=self.temporal.address, namespace=self.namespace,
            task_queue=TASK_QUEUE, service_url=service_url or self.service_url,
            scheduler_token=self.scheduler_token, otlp_endpoint=otlp_endpoint,
        )
        worker = start_worker(env=env, log_path=self.tmp_path / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def temporal_client(self, work: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run `work` with a client of this deployment's namespace."""

        async def connected() -> _T:
            client = await Client.connect(
                self.temporal.address, namespace=self.namespace,
                data_converter=pydantic_data_converter,
            )
            return await work(client)

        return asyncio.run(connected())


def governance_entry(
    schedule_id: str, grant: str, *, cron: str = "0 9 * * *", graph: str = GOVERNANCE_GRAPH,
    extra: str = "",
) -> str:
    return (
        f"  - id: {schedule_id}\n"
        f"    cron: '{cron}'\n"
        f"    graph: {graph}\n"
        f"    grant: {grant}\n"
        f"{extra}"
        "    input: {messages: [{role: user, content: Review this week.}]}\n"
    )
