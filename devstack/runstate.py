"""What `make run` keeps under var/, and the processes it started, stopped in order."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.demo import GOVERNANCE_GRAPH, DemoAccount
from devstack.processes import ManagedProcess
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle

__all__ = ["RunState", "StackError", "write_credentials"]

_LOGS = ("devsink", "otelcol", "service")


class StackError(RuntimeError):
    """The stack cannot start or a process died; the message says which and why."""


@dataclass
class RunState:
    """Paths under the var directory and the handles of the running processes."""

    var_dir: Path
    sink: SinkHandle | None = None
    collector: CollectorHandle | None = None
    service: ServiceHandle | None = None

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def demo_db(self) -> Path:
        return self.var_dir / "demo" / "service.db"

    @property
    def sink_db(self) -> Path:
        return self.var_dir / "devsink.sqlite3"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.demo_db}"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def queue_dir(self, destination: str) -> Path:
        # One queue per destination: spans queued for the sink never go to a real Langfuse.
        return self.var_dir / "otelcol" / f"queue-{destination}"

    def prepare(self) -> None:
        """Create the directories; start this run's logs and databases empty."""
        for directory in (self.log_dir, self.demo_db.parent, self.var_dir / "otelcol"):
            directory.mkdir(parents=True, exist_ok=True)
        for name in _LOGS:
            self.log(name).unlink(missing_ok=True)
        for database in (self.demo_db, self.sink_db):
            for suffix in ("", "-wal", "-shm", "-journal"):
                database.with_name(database.name + suffix).unlink(missing_ok=True)
        # The service's span spool (next to its database): batches a previous run could not
        # export belong to that run's demo data, which is gone, and maybe to another destination.
        shutil.rmtree(self.demo_db.parent / "spool", ignore_errors=True)

    @staticmethod
    def new_scheduler_token() -> str:
        return secrets.token_urlsafe(32)

    def processes(self) -> list[ManagedProcess]:
        handles = (self.service, self.collector, self.sink)
        return [handle.process for handle in handles if handle is not None]

    def stop_all(self, say: Callable[[str], None]) -> None:
        """Stop the service first (it flushes its spans), then the collector, then the sink."""
        for name in ("service", "collector", "sink"):
            handle: ServiceHandle | CollectorHandle | SinkHandle | None = getattr(self, name)
            if handle is None:
                continue
            code = handle.process.stop(timeout=30)
            # uvicorn re-raises the SIGTERM it handled gracefully: -15 is a clean stop too.
            clean = code in (0, -signal.SIGTERM)
            say(f"stopped the {name}" + ("" if clean else f" (exit code {code})"))
            setattr(self, name, None)


def write_credentials(state: RunState, account: DemoAccount, token: str, service_url: str) -> Path:
    """The demo's secrets, readable only by the owner, with example requests using them."""
    path = state.demo_db.parent / "credentials.json"
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    run = {
        "executionGrantId": account.grant_id,
        "scheduleId": "governance:community",
        "input": {"messages": [{"role": "user", "content": "review"}]},
    }
    document = {
        "service": service_url,
        "billingAccountId": account.billing_account_id,
        "userId": account.user_id,
        "apiKey": account.api_key,
        "executionGrantId": account.grant_id,
        "schedulerToken": token,
        "examples": [
            f"curl -s {service_url}/api/v1/ai/chat -H 'Authorization: Bearer {account.api_key}'"
            f" -H 'Content-Type: application/json' -d '{json.dumps(chat)}'",
            f"curl -s {service_url}/api/internal/graphs/{GOVERNANCE_GRAPH}/runs"
            f" -H 'Authorization: Bearer {token}' -H 'Idempotency-Key: manual-1'"
            f" -H 'Content-Type: application/json' -d '{json.dumps(run)}'",
        ],
    }
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    return path
