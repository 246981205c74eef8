"""The real service, its database locked while a run's outcome is stored: one run per key, and the
scheduler gets the outcome (never a 500).

service process -> an LLM stub in this process (holds each call until released); this test holds
the SQLite write lock of the service's database from another connection, as a backup or an
operator's `sqlite3` shell would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing

import pytest

from governance_request import FIRING_KEY, run_request
from llm_stub import LLMStub
from devstack.demo import DemoAccount
from devstack.processes import free_port, wait_until
from devstack.stack import ServiceHandle
from service.config import sqlite_path
from service.store import Database, IdempotencyStatus, get_idempotency_record
from service.store.database import BUSY_TIMEOUT_SECONDS
from service.store.idempotency import FINISH_RETRY_SECONDS

pytestmark = pytest.mark.integration

ServiceFactory = Callable[..., ServiceHandle]

KEY = FIRING_KEY
# Longer than one write waits for a lock, shorter than storing an outcome keeps retrying.
LOCK_SECONDS = BUSY_TIMEOUT_SECONDS + 2
assert LOCK_SECONDS < FINISH_RETRY_SECONDS


def test_a_lock_while_the_outcome_is_stored_still_gives_one_run_and_its_outcome(
    service_factory: ServiceFactory,
    demo_account: DemoAccount,
    llm_stub: LLMStub,
) -> None:
    service = service_factory(
        otlp_endpoint=f"http://127.0.0.1:{free_port()}", OTEL_SDK_DISABLED="true",
        LLM_BASE_URL=llm_stub.url, LLM_MODEL="stub-model",
    )
    database_file = sqlite_path(service.database_url)

    with ThreadPoolExecutor(1) as pool:
        firing = pool.submit(run_request, service, demo_account)
        wait_until(lambda: llm_stub.calls == 1, timeout=30, message="the run's first LLM call")
        with closing(sqlite3.connect(database_file, isolation_level=None)) as lock:
            lock.execute("BEGIN EXCLUSIVE")
            llm_stub.release.set()  # the run ends and stores its outcome while the lock is held
            with pytest.raises(FutureTimeout):
                firing.result(timeout=LOCK_SECONDS)  # the service waits for the lock
            lock.execute("ROLLBACK")
        answer = firing.result(timeout=30)

    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    assert "the database is locked" in service.log()  # it retried, and the retry stored it
    record = get_idempotency_record(Database(database_file), KEY)
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.response == answer.json() and record.attempts == 1

    replay = run_request(service, demo_account)

    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == answer.json()
    assert llm_stub.calls == 2  # one run: governance-review makes two LLM calls
