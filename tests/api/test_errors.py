"""Refusals: each answers its status code with a JSON body that says why, and runs nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import SCHEDULER_TOKEN, Seed, chat_body, run_body, scheduler_headers, user_headers

RUNS = "/api/internal/graphs/builtin:governance-review/runs"


def assert_refused(
    response_status: int, body: dict[str, object], status: int, code: str
) -> None:
    assert response_status == status, body
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


def agent_spans(exporter: InMemorySpanExporter) -> list[str]:
    return [span.name for span in exporter.get_finished_spans() if "invoke_agent" in span.name]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Bearer {SCHEDULER_TOKEN}x",
        f"Basic {SCHEDULER_TOKEN}",
        SCHEDULER_TOKEN,
        "Bearer " + "a" * 600,
    ],
    ids=["missing", "empty", "wrong", "wrong-scheme", "no-scheme", "overlong"],
)
def test_internal_route_refuses_requests_without_the_scheduler_token_with_401(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter, authorization: str | None
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.post(RUNS, json=run_body(seed.acme_grant), headers=headers)

    assert_refused(response.status_code, response.json(), 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert agent_spans(exporter) == []


def test_internal_route_refuses_a_user_api_key(client: TestClient, seed: Seed) -> None:
    response = client.post(RUNS, json=run_body(seed.acme_grant),
                           headers={**user_headers(seed.alice_key), "Idempotency-Key": "k"})
    assert_refused(response.status_code, response.json(), 401, "unauthorized")


def test_authentication_is_checked_before_the_body_is_parsed(client: TestClient) -> None:
    response = client.post(RUNS, content=b"{not json", headers={"Idempotency-Key": "k"})
    assert_refused(response.status_code, response.json(), 401, "unauthorized")


def test_internal_route_requires_an_idempotency_key_with_400(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(RUNS, json=run_body(seed.acme_grant),
                           headers={"Authorization": f"Bearer {SCHEDULER_TOKEN}"})

    assert_refused(response.status_code, response.json(), 400, "missing_idempotency_key")
    assert agent_spans(exporter) == []


@pytest.mark.parametrize("key", ["k" * 256, "tab\tinside", "caf\u00e9"],
                         ids=["overlong", "control-char", "non-ascii"])
def test_internal_route_refuses_a_malformed_idempotency_key_with_400(
    client: TestClient, seed: Seed, key: str
) -> None:
    headers = {"Authorization": f"Bearer {SCHEDULER_TOKEN}", "Idempotency-Key": key}
    response = client.post(RUNS, json=run_body(seed.acme_grant),
                           headers={k: v.encode("utf-8") for k, v in headers.items()})
    assert_refused(response.status_code, response.json(), 400, "invalid_idempotency_key")


@pytest.mark.parametrize(
    "body",
    [
        {"input": {"messages": [{"role": "user", "content": "x"}]}},
        {"executionGrantId": "g"},
        {"executionGrantId": "g", "input": {"messages": []}},
        {"executionGrantId": "g", "input": {"messages": [{"role": "robot", "content": "x"}]}},
        {"executionGrantId": "g", "input": {"messages": [{"role": "user", "content": "x"}]},
         "runId": "has spaces"},
        {"executionGrantId": "g", "input": {"messages": [{"role": "user", "content": "x"}]},
         "unexpected": 1},
        [1, 2],
    ],
    ids=["no-grant", "no-input", "no-messages", "bad-role", "bad-run-id", "unknown-field", "array"],
)
def test_internal_route_refuses_an_invalid_body_with_400(
    client: TestClient, body: object
) -> None:
    response = client.post(RUNS, json=body, headers=scheduler_headers("k-invalid"))
    assert_refused(response.status_code, response.json(), 400, "invalid_request")


def test_internal_route_refuses_malformed_json_with_400(client: TestClient) -> None:
    response = client.post(RUNS, content=b"{not json", headers=scheduler_headers("k-json"))
    assert_refused(response.status_code, response.json(), 400, "invalid_request")


def test_internal_route_refuses_an_unknown_graph_with_404(client: TestClient, seed: Seed) -> None:
    response = client.post("/api/internal/graphs/builtin:nope/runs",
                           json=run_body(seed.acme_grant), headers=scheduler_headers("k-404"))
    assert_refused(response.status_code, response.json(), 404, "unknown_graph")


@pytest.mark.parametrize(
    ("grant", "code"),
    [
        ("grant_does_not_exist", "grant_not_found"),
        ("expired_grant", "grant_expired"),
        ("revoked_grant", "grant_revoked"),
        ("chat_only_grant", "graph_not_covered"),
    ],
)
def test_internal_route_refuses_a_grant_that_does_not_allow_the_run_with_403_and_the_reason(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter, grant: str, code: str
) -> None:
    grant_id = getattr(seed, grant, grant)
    response = client.post(RUNS, json=run_body(grant_id), headers=scheduler_headers(f"k-{code}"))

    assert_refused(response.status_code, response.json(), 403, code)
    assert grant_id in response.json()["message"]
    assert agent_spans(exporter) == []


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer st_not-a-key", f"Bearer {SCHEDULER_TOKEN}", "Bearer " + "a" * 600],
    ids=["missing", "unknown-key", "scheduler-token", "overlong"],
)
def test_chat_refuses_requests_without_a_user_api_key_with_401(
    client: TestClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/api/v1/ai/chat", json=chat_body(), headers=headers)
    assert_refused(response.status_code, response.json(), 401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"graphId": "builtin:chat"},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "x"}], "stateKey": ""},
        {"messages": [{"role": "user", "content": "x"}], "stateKey": "line\nbreak"},
        {"messages": [{"role": "user", "content": "x"}], "stateKey": "k" * 201},
    ],
    ids=["empty-messages", "no-messages", "no-content", "empty-state-key",
         "control-char-state-key", "overlong-state-key"],
)
def test_chat_refuses_an_invalid_body_with_400_like_the_internal_route(
    client: TestClient, seed: Seed, body: object
) -> None:
    response = client.post("/api/v1/ai/chat", json=body, headers=user_headers(seed.alice_key))
    assert_refused(response.status_code, response.json(), 400, "invalid_request")


def test_chat_refuses_an_unknown_graph_with_404(client: TestClient, seed: Seed) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(graphId="custom:missing"),
                           headers=user_headers(seed.alice_key))
    assert_refused(response.status_code, response.json(), 404, "unknown_graph")


def test_a_body_over_the_size_cap_is_refused_with_413(client: TestClient, seed: Seed) -> None:
    response = client.post("/api/v1/ai/chat", content=b" " * 1_000_001,
                           headers=user_headers(seed.alice_key))
    assert_refused(response.status_code, response.json(), 413, "body_too_large")
