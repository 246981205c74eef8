"""Two service replicas on one Postgres database, as in production: one run per Idempotency-Key
whichever replica answers, a replica killed mid-run, a locked or stopped database.

Postgres from `initdb` in a temporary directory (devstack.postgres); each replica is
`python -m service serve` exporting OTLP to the real collector, which sends to the development
sink; an LLM stub in this process holds each call until released, so a run stays in progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from governance_request import FIRING_KEY, run_request
from llm_stub import LLMStub
from devstack.delivery import wait_for_sink
from devstack.demo import DemoAccount, provision_demo
from devstack.postgres import PostgresServer, start_postgres
from devstack.processes import free_port, wait_until
from devstack.report import sessions_report
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle
from service.store import Database, IdempotencyStatus, get_idempotency_record
from sessiontrace.attributes import LANGFUSE_TRACE_METADATA_PREFIX as METADATA

pytestmark = pytest.mark.integration

ServiceFactory = Callable[..., ServiceHandle]
ReplicasFactory = Callable[..., list[ServiceHandle]]

KEY = FIRING_KEY
# The shortest pending timeout the settings allow past this run deadline (it must exceed
# RUN_TIMEOUT_SECONDS + 30 s): how long a dead replica's key stays pending.
RUN_TIMEOUT_SECONDS = 5
PENDING_TIMEOUT_SECONDS = RUN_TIMEOUT_SECONDS + 31


@pytest.fixture
def service_database_url(postgres_database_url: str) -> str:
    """Overrides the SQLite default of conftest: every replica shares one Postgres database."""
    return postgres_database_url


def stored(database_url: str, key: str = KEY) -> Any:
    with Database.from_url(database_url) as database:
        return get_idempotency_record(database, key)


def completed_runs(sink: SinkHandle) -> list[dict[str, Any]]:
    """The `invoke_agent` spans at the sink: one per run that ended."""
    return [span for span in sink.spans() if span["name"].startswith("invoke_agent")]


def test_ten_concurrent_requests_with_one_key_across_two_replicas_start_exactly_one_run(
    replicas: ReplicasFactory, demo_account: DemoAccount, llm_stub: LLMStub,
    sink: SinkHandle, collector: CollectorHandle, service_database_url: str,
) -> None:
    first, second = replicas(2)

    with ThreadPoolExecutor(10) as pool:
        answers: list[Future[httpx.Response]] = [
            pool.submit(run_request, (first, second)[index % 2], demo_account)
            for index in range(10)
        ]
        wait_until(lambda: llm_stub.calls >= 1, timeout=60, message="the one run's LLM call")
        # Every other request is answered while the run is held in its first LLM call.
        wait_until(lambda: sum(answer.done() for answer in answers) == 9, timeout=60,
                   message="nine answers while the run is in progress")
        llm_stub.release.set()
        responses = [answer.result(timeout=120) for answer in answers]
        replays = list(pool.map(lambda i: run_request((first, second)[i % 2], demo_account),
                                range(10)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 9, [r.text for r in responses]
    [ran] = [response.json() for response in responses if response.status_code == 200]
    assert ran["ok"] is True
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"] == "idempotency_key_in_progress"
    assert [(r.status_code, r.json()) for r in replays] == [(200, ran)] * 10
    record = stored(service_database_url)
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.attempts == 1 and record.response == ran
    assert llm_stub.calls == 2  # one run: governance-review makes two LLM calls
    by_trace = wait_for_sink(sink, collector, [ran["traceId"]], timeout=60)
    assert len(by_trace[ran["traceId"]]) >= 3
    assert [span["trace_id"] for span in completed_runs(sink)] == [ran["traceId"]]
    report = sessions_report(sink.db)
    assert [(s.session_id, s.traces) for s in report.sessions] == [(ran["sessionId"], 1)]


def test_a_replica_killed_mid_run_leaves_its_key_to_another_after_the_pending_timeout(
    replicas: ReplicasFactory, demo_account: DemoAccount, llm_stub: LLMStub,
    sink: SinkHandle, collector: CollectorHandle, service_database_url: str,
) -> None:
    doomed, survivor = replicas(
        2, RUN_TIMEOUT_SECONDS=str(RUN_TIMEOUT_SECONDS),
        IDEMPOTENCY_PENDING_TIMEOUT_SECONDS=str(PENDING_TIMEOUT_SECONDS),
    )

    with ThreadPoolExecutor(1) as pool:
        lost = pool.submit(run_request, doomed, demo_account)
        wait_until(lambda: llm_stub.calls == 1, timeout=60, message="the doomed run's LLM call")
        doomed.process.popen.kill()  # kill -9, mid-run
        doomed.process.popen.wait(30)
        with pytest.raises(httpx.HTTPError):
            lost.result(timeout=60)
    llm_stub.release.set()  # calls from now on are answered at once

    pending = stored(service_database_url)
    assert pending is not None and pending.status is IdempotencyStatus.PENDING
    early = run_request(survivor, demo_account)
    assert early.status_code == 409  # the dead run might still be going, for all it knows

    retried: list[httpx.Response] = []

    def recovered() -> bool:
        retried.append(run_request(survivor, demo_account))
        return retried[-1].status_code == 200

    wait_until(recovered, timeout=PENDING_TIMEOUT_SECONDS + 60, interval=2,
               message=lambda: f"a takeover; last answer {retried[-1].text if retried else '-'}")

    assert {r.status_code for r in retried[:-1]} <= {409}
    ran = retried[-1].json()
    assert ran["ok"] is True and ran["runId"] != pending.run.run_id
    record = stored(service_database_url)
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.attempts == 2 and record.response == ran
    assert llm_stub.calls == 1 + 2  # the killed run's first call, then one whole run
    wait_for_sink(sink, collector, [ran["traceId"]], timeout=60)
    [completed] = completed_runs(sink)  # the killed run never ended
    assert completed["trace_id"] == ran["traceId"]
    assert completed["attributes"][METADATA + "retakes_run_id"] == pending.run.run_id
    assert completed["attributes"][METADATA + "attempt"] == "2"
    replay = run_request(survivor, demo_account)
    assert replay.status_code == 200 and replay.json() == ran


def test_a_locked_postgres_answers_503_database_busy_and_nothing_is_kept(
    replicas: ReplicasFactory, demo_account: DemoAccount, llm_stub: LLMStub,
    service_database_url: str,
) -> None:
    [service] = replicas(1)
    llm_stub.release.set()
    chat = {"graphId": "builtin:chat", "messages": [{"role": "user", "content": "hello"}]}
    user = {"Authorization": f"Bearer {demo_account.api_key}"}

    with psycopg.connect(service_database_url) as lock, httpx.Client(
        base_url=service.url, timeout=60
    ) as client:
        # As an operator's long migration would: no one may read users or write keys.
        lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        lock.execute("LOCK TABLE idempotency_keys IN EXCLUSIVE MODE")
        busy_chat = client.post("/api/v1/ai/chat", json=chat, headers=user)
        busy_run = run_request(service, demo_account)
        lock.rollback()
        after_chat = client.post("/api/v1/ai/chat", json=chat, headers=user)
    after_run = run_request(service, demo_account)

    for busy in (busy_chat, busy_run):
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "database_busy"
        assert "locked" in busy.json()["message"] and int(busy.headers["Retry-After"]) > 0
    assert after_chat.status_code == 200
    # The refused request kept nothing: its key was never claimed, and now runs.
    assert after_run.status_code == 200 and after_run.json()["ok"] is True
    record = stored(service_database_url)
    assert record is not None and record.attempts == 1


@dataclass
class OwnPostgres:
    """A Postgres server of one test's own, and one service on it (tracing off)."""

    server: PostgresServer
    service: ServiceHandle
    account: DemoAccount

    def chat(self, client: httpx.Client) -> httpx.Response:
        return client.post(
            "/api/v1/ai/chat",
            json={"graphId": "builtin:chat", "messages": [{"role": "user", "content": "hello"}]},
            headers={"Authorization": f"Bearer {self.account.api_key}"},
        )


@pytest.fixture
def own_postgres(service_factory: ServiceFactory, tmp_path: Path) -> Iterator[OwnPostgres]:
    # Its own server, so stopping or pausing it leaves the module's alone.
    with start_postgres() as server:
        url = server.create_database("own")
        account = provision_demo(url)
        service = service_factory(
            otlp_endpoint=f"http://127.0.0.1:{free_port()}", OTEL_SDK_DISABLED="true",
            DATABASE_URL=url, SESSIONTRACE_SPOOL_DIR=str(tmp_path / "spool"),
        )
        yield OwnPostgres(server, service, account)


def test_a_stopped_postgres_answers_503_and_the_service_recovers_once_it_is_back(
    own_postgres: OwnPostgres,
) -> None:
    own = own_postgres.server
    with httpx.Client(base_url=own_postgres.service.url, timeout=60) as client:
        before = own_postgres.chat(client)
        own.stop()
        down = [own_postgres.chat(client) for _ in range(2)]
        unready = client.get("/readyz")
        own.start()
        wait_until(
            lambda: own_postgres.chat(client).status_code == 200,
            timeout=60, interval=0.5, message="the service answering once Postgres is back",
        )

    assert before.status_code == 200
    for answer in down:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "database_busy" and answer.headers["Retry-After"]
    assert unready.status_code == 503 and unready.json()["error"] == "not_ready"


def test_after_a_postgres_restart_one_request_fails_not_one_per_pooled_connection(
    own_postgres: OwnPostgres,
) -> None:
    own = own_postgres.server

    def service_connections() -> int:
        with psycopg.connect(own.url()) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sessiontrace'"
            ).fetchone()
        return int(row[0]) if row else 0

    with httpx.Client(base_url=own_postgres.service.url, timeout=60) as client:
        # Concurrent chats make the pool lend (and keep) several connections at once.
        with ThreadPoolExecutor(max_workers=12) as pool:
            wait_until(
                lambda: all(a.status_code == 200 for a in pool.map(
                    lambda _: own_postgres.chat(client), range(24)))
                and service_connections() >= 4,
                timeout=60, interval=0, message="the pool holding four connections or more",
            )
        pooled = service_connections()
        own.stop()
        own.start()
        answers = [own_postgres.chat(client).status_code for _ in range(pooled + 2)]

    # Every pooled connection broke with the restart: the first request on one of them
    # fails, and the pool replaces the others before they fail a request of their own.
    assert answers.count(503) <= 1, (pooled, answers)
    assert answers[1:] == [200] * (len(answers) - 1), (pooled, answers)


def test_a_hung_postgres_answers_503_within_a_bound_and_the_service_recovers_when_it_resumes(
    own_postgres: OwnPostgres,
) -> None:
    # SIGSTOP keeps every connection open and unanswered, which neither libpq nor TCP notices
    # on loopback: only the service's own bound on a store call ends the request.
    own, service, account = own_postgres.server, own_postgres.service, own_postgres.account
    with httpx.Client(base_url=service.url, timeout=120) as client:
        before = own_postgres.chat(client)
        own.pause()
        try:
            hung_chat = own_postgres.chat(client)
            hung_run = run_request(service, account, key="governance:community:hung")
            unready = client.get("/readyz")
            alive = client.get("/healthz")
        finally:
            own.resume()
        wait_until(
            lambda: own_postgres.chat(client).status_code == 200,
            timeout=60, interval=0.5, message="the service answering once Postgres resumes",
        )
    after_run = run_request(service, account, key="governance:community:after")

    assert before.status_code == 200
    for answer in (hung_chat, hung_run):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "database_busy" and answer.headers["Retry-After"]
        assert "did not answer" in answer.json()["message"]
    assert unready.status_code == 503 and unready.json()["error"] == "not_ready"
    assert alive.status_code == 200
    assert after_run.status_code == 200 and after_run.json()["ok"] is True
    assert "did not answer" in service.log()
