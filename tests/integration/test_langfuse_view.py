"""What Langfuse's v4 ("direct") path gets, black box: service -> the repo's collector -> the
Langfuse-contract sink, for every kind of request.

Langfuse must get exactly one trace per run and nothing else; each run's root span carries the
run (input, output, metadata); every span carries the trace name, tags, session and user under
the `langfuse.*` keys; streamed generations say when the first token came; every ERROR span says
why; and no span carries a user's request details.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.delivery import wait_for_sink
from devstack.demo import (
    CHAT_GRAPH,
    GOVERNANCE_GRAPH,
    DemoAccount,
    governance_run,
    service_cli,
)
from devstack.processes import free_port
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle

pytestmark = pytest.mark.integration

META = "langfuse.trace.metadata."
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode
REQUEST_DETAIL_PARTS = ("peer", "client.address", "user_agent", "http.url", "url.full")
SCHEDULE = "governance:langfuse-view"
ServiceFactory = Callable[..., ServiceHandle]


def chat_trace(service: ServiceHandle, account: DemoAccount, *, stream: bool = False) -> dict[str, Any]:
    """A chat's answer (for a stream: its `done` or `error` event) and HTTP status."""
    body = {"graphId": CHAT_GRAPH, "stream": stream,
            "messages": [{"role": "user", "content": "What changed this week?"}]}
    headers = {"Authorization": f"Bearer {account.api_key}", "User-Agent": "secret-agent/1.0"}
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.post("/api/v1/ai/chat?token=hunter2", json=body, headers=headers)
    if not stream:
        return {"status": response.status_code, **response.json()}
    events = [block for block in response.text.split("\n\n") if block.startswith("event: ")]
    last = events[-1].splitlines()
    return {"status": response.status_code, "event": last[0].removeprefix("event: "),
            **json.loads(last[1].removeprefix("data: "))}


def refused_requests(service: ServiceHandle, account: DemoAccount, replay_key: str) -> list[int]:
    """A replay, a 401, a 403, a 404 and a health probe: requests that start no run."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    token = {"Authorization": f"Bearer {service.scheduler_token}"}
    with httpx.Client(base_url=service.url, timeout=30) as client:
        replay = client.post(
            f"/api/internal/graphs/{GOVERNANCE_GRAPH}/runs",
            json=_governance_body(account.grant_id, now),
            headers={**token, "Idempotency-Key": replay_key},
        )
        assert replay.headers.get("Idempotent-Replayed") == "true", replay.text
        unauthenticated = client.post("/api/v1/ai/chat", json={"messages": []},
                                      headers={"Authorization": "Bearer nope"})
        forbidden = client.post(
            f"/api/internal/graphs/{GOVERNANCE_GRAPH}/runs",
            json=_governance_body("no-such-grant", now),
            headers={**token, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
        )
        unknown = client.post(
            "/api/v1/ai/chat", json={"graphId": "builtin:nope", "messages": [
                {"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {account.api_key}"},
        )
        health = client.get("/healthz")
    return [r.status_code for r in (replay, unauthenticated, forbidden, unknown, health)]


def _governance_body(grant_id: str, scheduled_for: dt.datetime) -> dict[str, Any]:
    return {
        "executionGrantId": grant_id,
        "scheduleId": SCHEDULE,
        "scheduledFor": scheduled_for.isoformat(),
        "input": {"messages": [{"role": "user", "content": "Review this week's activity."}]},
    }


@pytest.fixture
def masked_account(service_database_url: str) -> DemoAccount:
    service_cli(service_database_url, "accounts", "create", "--billing-account", "private",
                "--mask-content")
    created = service_cli(service_database_url, "users", "create", "--billing-account", "private",
                          "--user", "pat")
    return DemoAccount("private", "pat", grant_id="", api_key=str(created["apiKey"]))


def test_langfuse_gets_one_whole_trace_per_run_and_nothing_else(
    sink: SinkHandle,
    collector: CollectorHandle,
    service: ServiceHandle,
    service_factory: ServiceFactory,
    demo_account: DemoAccount,
    masked_account: DemoAccount,
    tmp_path: Path,
) -> None:
    # An LLM nobody listens on: this service's chats fail after the run started.
    broken = service_factory(
        otlp_endpoint=collector.otlp_http_url, LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        LLM_MODEL="gpt-test", LLM_TIMEOUT_SECONDS="2",
        SESSIONTRACE_SPOOL_DIR=str(tmp_path / "broken-spool"),  # one spool per process
    )
    runs: dict[str, Mapping[str, Any]] = {}
    runs["chat"] = chat_trace(service, demo_account)
    runs["streamed chat"] = chat_trace(service, demo_account, stream=True)
    runs["masked chat"] = chat_trace(service, masked_account)
    runs["failed chat"] = chat_trace(broken, demo_account)
    slot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    keys = [f"{SCHEDULE}:{uuid.uuid4().hex}" for _ in range(2)]
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for index, key in enumerate(keys):
            result = governance_run(
                client, scheduler_token=service.scheduler_token, account=demo_account,
                schedule_id=SCHEDULE, idempotency_key=key, scheduled_for=slot,
            )
            runs[f"governance {index}"] = {"status": 200, "traceId": result.trace_id,
                                           "sessionId": result.session_id}
    assert refused_requests(service, demo_account, keys[0]) == [200, 401, 403, 404, 200]
    assert runs["failed chat"]["status"] == 502 and runs["failed chat"]["runId"]
    assert runs["streamed chat"]["event"] == "done"
    assert runs["governance 0"]["sessionId"] == runs["governance 1"]["sessionId"]

    trace_ids = {label: str(run["traceId"]) for label, run in runs.items()}
    # Waits until the collector accounted for every span it accepted: sent or kept out.
    wait_for_sink(sink, collector, list(trace_ids.values()), timeout=60)
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in sink.spans():
        by_trace[span["trace_id"]].append(span)
    assert set(by_trace) == set(trace_ids.values()), "a trace arrived that is no run"

    for label, trace_id in trace_ids.items():
        spans = by_trace[trace_id]
        roots = [span for span in spans if span["parent_span_id"] is None]
        assert len(roots) == 1, (label, [span["name"] for span in roots])
        root = roots[0]["attributes"]
        assert root.get("langfuse.observation.input"), label
        if label != "failed chat":
            assert root.get("langfuse.observation.output"), label
        assert root[META + "run_id"], label
        for span in spans:
            found = span["attributes"]
            where = (label, span["name"])
            assert found["langfuse.trace.name"] in (CHAT_GRAPH, GOVERNANCE_GRAPH), where
            assert found["langfuse.trace.tags"], where
            assert found["langfuse.session.id"] == found["session.id"] == runs[label][
                "sessionId"], where
            assert found["langfuse.user.id"] == found["user.id"], where
            if span["status_code"] == STATUS_ERROR:
                assert found.get("langfuse.observation.status_message"), where
            leaked = [key for key in found if any(part in key for part in REQUEST_DETAIL_PARTS)]
            assert not leaked, (where, leaked)
            assert "hunter2" not in json.dumps(found), where

    failed_root = next(s for s in by_trace[trace_ids["failed chat"]] if s["parent_span_id"] is None)
    assert failed_root["status_code"] == STATUS_ERROR
    assert failed_root["attributes"][META + "run_id"] == runs["failed chat"]["runId"]
    generations = [s for s in by_trace[trace_ids["streamed chat"]] if s["name"].startswith("chat ")]
    assert generations and all(
        s["attributes"].get("langfuse.observation.completion_start_time") for s in generations
    )
    masked_root = next(s for s in by_trace[trace_ids["masked chat"]] if s["parent_span_id"] is None)
    assert json.loads(masked_root["attributes"]["langfuse.observation.input"])["omitted"] == "masked"
