"""Requests sharing one keep-alive connection never share a trace.

uvicorn resumes reading a connection from inside the request it is serving when that request's
body overflowed its read buffer (over 64 KiB) or when requests are pipelined; without a trace
boundary the next request's task inherits that request's context, so a second tenant's run would
become a child of the first tenant's HTTP server span. These tests drive the real service over raw
sockets (one connection, several requests) and check what reached the Langfuse-contract sink.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.delivery import wait_for_sink
from devstack.demo import CHAT_GRAPH, GOVERNANCE_GRAPH, DemoAccount, provision_demo
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle

pytestmark = pytest.mark.integration

ServiceFactory = Callable[..., ServiceHandle]
LARGE_CHAT_BYTES = 90_000
LARGE_UNAUTHENTICATED_BYTES = 200_000


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Accounts:
    a: DemoAccount
    b: DemoAccount


@pytest.fixture
def accounts(service_database_url: str) -> Accounts:
    """Two billing accounts (two tenants), each with a user; account a also has a grant."""
    return Accounts(
        a=provision_demo(service_database_url, billing_account="tenant-a", user="alice"),
        b=provision_demo(service_database_url, billing_account="tenant-b", user="bob"),
    )


def chat_request(account: DemoAccount, *, text: str, history_bytes: int = 0) -> bytes:
    """A chat; `history_bytes` of earlier turns make it a long conversation (a large body)."""
    turn = 20_000  # each message stays under the API's per-message limit
    history = [
        {"role": "user" if index % 2 == 0 else "assistant", "content": "h" * turn}
        for index in range(-(-history_bytes // turn))
    ]
    body = {"graphId": CHAT_GRAPH, "messages": [*history, {"role": "user", "content": text}]}
    return http_request(
        "/api/v1/ai/chat", body, {"Authorization": f"Bearer {account.api_key}"}
    )


def governance_request(account: DemoAccount, *, token: str) -> bytes:
    scheduled_for = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body = {
        "executionGrantId": account.grant_id,
        "scheduleId": "governance:isolation",
        "scheduledFor": scheduled_for.isoformat(),
        "input": {"messages": [{"role": "user", "content": "Review."}]},
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": f"governance:isolation:{uuid.uuid4().hex}",
    }
    return http_request(f"/api/internal/graphs/{GOVERNANCE_GRAPH}/runs", body, headers)


def unauthenticated_request(size: int) -> bytes:
    body = {"graphId": CHAT_GRAPH, "messages": [{"role": "user", "content": "x" * size}]}
    return http_request("/api/v1/ai/chat", body, {"Authorization": "Bearer not-a-key"})


def http_request(path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Connection:
    """One keep-alive HTTP/1.1 connection over a raw socket: requests may be pipelined."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._socket = socket.create_connection((parts.hostname, parts.port), timeout=60)
        self._file = self._socket.makefile("rb")

    def send(self, *requests: bytes) -> None:
        self._socket.sendall(b"".join(requests))

    def read_answer(self) -> Answer:
        status_line = self._file.readline().decode()
        assert status_line.startswith("HTTP/1.1 "), f"not an HTTP answer: {status_line!r}"
        headers: dict[str, str] = {}
        while (line := self._file.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers.get("connection", "keep-alive") != "close", "the server closed the connection"
        body = self._file.read(int(headers["content-length"]))
        return Answer(int(status_line.split()[1]), json.loads(body))

    def exchange(self, request: bytes) -> Answer:
        self.send(request)
        return self.read_answer()

    def close(self) -> None:
        self._file.close()
        self._socket.close()


@pytest.fixture
def connection(service: ServiceHandle) -> Any:
    opened = Connection(service.url)
    yield opened
    opened.close()


def assert_isolated_runs(
    sink: SinkHandle, collector: CollectorHandle, answers: list[Answer], sessions: int
) -> None:
    """Each run answered 200 with its own trace, and no trace at the sink holds two sessions."""
    assert [answer.status for answer in answers] == [200] * len(answers), answers
    trace_ids = [answer.body["traceId"] for answer in answers]
    assert len(set(trace_ids)) == len(trace_ids), f"runs share a trace: {trace_ids}"
    assert len({answer.body["sessionId"] for answer in answers}) == sessions
    wait_for_sink(sink, collector, trace_ids, timeout=60)
    sessions_of_trace: dict[str, set[str | None]] = defaultdict(set)
    roots_of_trace: dict[str, int] = defaultdict(int)
    for span in sink.spans():
        sessions_of_trace[span["trace_id"]].add(span["attributes"].get("session.id"))
        roots_of_trace[span["trace_id"]] += span["parent_span_id"] is None
    joined = {trace: found for trace, found in sessions_of_trace.items() if len(found) > 1}
    assert not joined, f"traces holding two sessions: {joined}"
    for answer, trace_id in zip(answers, trace_ids, strict=True):
        assert roots_of_trace[trace_id] == 1, f"trace {trace_id} has {roots_of_trace[trace_id]} roots"
        assert sessions_of_trace[trace_id] == {answer.body["sessionId"]}


def test_a_large_body_does_not_join_the_next_requests_on_its_connection(
    sink: SinkHandle, collector: CollectorHandle, accounts: Accounts, service: ServiceHandle,
    connection: Connection,
) -> None:
    answers = [
        connection.exchange(chat_request(
            accounts.a, text="Tenant a's question.", history_bytes=LARGE_CHAT_BYTES
        )),
        connection.exchange(chat_request(accounts.b, text="Tenant b's question.")),
        connection.exchange(governance_request(accounts.a, token=service.scheduler_token)),
    ]

    assert_isolated_runs(sink, collector, answers, sessions=3)


def test_pipelined_requests_of_two_tenants_get_their_own_traces(
    sink: SinkHandle, collector: CollectorHandle, accounts: Accounts, service: ServiceHandle,
    connection: Connection,
) -> None:
    connection.send(
        chat_request(accounts.a, text="Tenant a's question."),
        chat_request(accounts.b, text="Tenant b's question."),
        governance_request(accounts.a, token=service.scheduler_token),
    )
    answers = [connection.read_answer() for _ in range(3)]

    assert_isolated_runs(sink, collector, answers, sessions=3)


def test_an_unauthenticated_large_request_does_not_join_the_runs_after_it(
    sink: SinkHandle, collector: CollectorHandle, accounts: Accounts, service: ServiceHandle,
    connection: Connection,
) -> None:
    refused = connection.exchange(unauthenticated_request(LARGE_UNAUTHENTICATED_BYTES))
    assert refused.status == 401, refused
    answers = [
        connection.exchange(chat_request(accounts.a, text="Tenant a's question.")),
        connection.exchange(chat_request(accounts.b, text="Tenant b's question.")),
        connection.exchange(governance_request(accounts.a, token=service.scheduler_token)),
    ]

    assert_isolated_runs(sink, collector, answers, sessions=3)


def test_pooled_connections_shared_by_tenants_keep_every_run_in_its_own_trace(
    sink: SinkHandle, collector: CollectorHandle, accounts: Accounts, service: ServiceHandle,
) -> None:
    # As behind a reverse proxy: a few upstream connections, each carrying requests of both
    # tenants and scheduled runs in turn, some of them long conversations.
    def serve_connection(index: int) -> list[Answer]:
        pooled = Connection(service.url)
        try:
            answers = []
            for turn in range(5):
                account = accounts.a if (index + turn) % 2 == 0 else accounts.b
                if turn == 2:
                    request = governance_request(accounts.a, token=service.scheduler_token)
                else:
                    history = LARGE_CHAT_BYTES if turn % 2 == 0 else 0
                    request = chat_request(account, text=f"turn {turn}", history_bytes=history)
                answers.append(pooled.exchange(request))
            return answers
        finally:
            pooled.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [answer for batch in pool.map(serve_connection, range(4)) for answer in batch]

    # Chats without a state key each start a conversation; the scheduled runs share one session.
    assert_isolated_runs(sink, collector, answers, sessions=len(answers) - 3)
