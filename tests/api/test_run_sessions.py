"""Every span of a run, server span included, carries the run's session and user."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api_support import (
    Seed,
    alice_session,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from service.callers import user_session_id
from service.store import Database, create_user
from sessiontrace import derive_adhoc_session_id, derive_schedule_session_id
from sessiontrace.attributes import (
    GEN_AI_AGENT_NAME,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    SESSION_ID,
    USER_ID,
)


def test_every_span_of_a_user_chat_carries_its_session_and_user(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/v1/ai/chat", json=chat_body(stateKey="thread-1"), headers=user_headers(seed.alice_key)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sessionId"] == alice_session("thread-1")
    assert body["stateKey"] == "thread-1"
    assert body["output"]["role"] == "assistant" and body["output"]["content"]
    spans = spans_of_trace(exporter, body["traceId"])
    assert Counter(span.name for span in spans) == Counter(
        {
            "POST /api/v1/ai/chat": 1,
            "invoke_agent builtin:chat": 1,
            "node respond": 1,
            "chat offline-echo": 1,
        }
    )
    assert [span.kind for span in spans if span.name.startswith("POST")] == [SpanKind.SERVER]
    for span in spans:
        assert span.attributes is not None
        assert span.attributes[SESSION_ID] == body["sessionId"], span.name
        assert span.attributes[USER_ID] == "alice", span.name


def test_every_span_of_a_governance_run_carries_the_schedule_session_and_grant_user(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/internal/graphs/builtin:governance-review/runs",
        json=run_body(seed.acme_grant, scheduleId="governance:community"),
        headers=scheduler_headers("governance:community:2026-11-24T08:00:00Z"),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and "error" not in body
    assert body["sessionId"] == derive_schedule_session_id("acme", "governance:community")
    spans = spans_of_trace(exporter, body["traceId"])
    names = Counter(span.name for span in spans)
    assert names["POST /api/internal/graphs/{graph_id}/runs"] == 1
    assert names["invoke_agent builtin:governance-review"] == 1
    assert {"node gather", "node assess", "node summarize"} <= set(names)
    assert names["execute_tool account_policy"] == 1
    assert names["chat offline-echo"] == 2
    for span in spans:
        assert span.attributes is not None
        assert span.attributes[SESSION_ID] == body["sessionId"], span.name
        assert span.attributes[USER_ID] == "alice", span.name


def test_governance_run_without_schedule_gets_the_idempotency_key_session(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/internal/graphs/builtin:chat/runs",
        json=run_body(seed.acme_grant, runId="run-adhoc-1"),
        headers=scheduler_headers("adhoc-key-1"),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["runId"] == "run-adhoc-1"
    assert body["sessionId"] == derive_adhoc_session_id("acme", "adhoc-key-1")
    sessions = {span.attributes[SESSION_ID] for span in spans_of_trace(exporter, body["traceId"])
                if span.attributes is not None}
    assert sessions == {body["sessionId"]}


def test_run_spans_follow_the_genai_conventions(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/internal/graphs/builtin:governance-review/runs",
        json=run_body(seed.acme_grant, scheduleId="governance:community"),
        headers=scheduler_headers("k-genai"),
    )
    spans = {span.name: span for span in spans_of_trace(exporter, response.json()["traceId"])}

    agent = spans["invoke_agent builtin:governance-review"].attributes or {}
    assert agent[GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert agent[GEN_AI_AGENT_NAME] == "builtin:governance-review"
    llm = spans["chat offline-echo"].attributes or {}
    assert llm[GEN_AI_OPERATION_NAME] == "chat"
    assert llm[GEN_AI_REQUEST_MODEL] == llm[GEN_AI_RESPONSE_MODEL] == "offline-echo"
    input_tokens, output_tokens = llm[GEN_AI_USAGE_INPUT_TOKENS], llm[GEN_AI_USAGE_OUTPUT_TOKENS]
    assert isinstance(input_tokens, int) and input_tokens > 0
    assert isinstance(output_tokens, int) and output_tokens > 0
    tool = spans["execute_tool message_stats"].attributes or {}
    assert tool[GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool[GEN_AI_TOOL_NAME] == "message_stats"


def test_the_model_named_in_a_chat_request_is_the_one_called(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/v1/ai/chat", json=chat_body(model="small-model"), headers=user_headers(seed.alice_key)
    )
    names = {span.name for span in spans_of_trace(exporter, response.json()["traceId"])}
    assert "chat small-model" in names


def test_two_chats_with_one_state_key_share_a_session_in_two_traces(
    client: TestClient, seed: Seed
) -> None:
    first, second = (
        client.post("/api/v1/ai/chat", json=chat_body(text, stateKey="thread-7"),
                    headers=user_headers(seed.alice_key)).json()
        for text in ("first question", "second question")
    )

    assert first["sessionId"] == second["sessionId"] == alice_session("thread-7")
    assert first["traceId"] != second["traceId"]
    assert first["runId"] != second["runId"]


def test_a_chat_without_state_key_starts_a_conversation_whose_key_continues_it(
    client: TestClient, seed: Seed
) -> None:
    first = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))
    other = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))
    key = first.json()["stateKey"]
    follow_up = client.post(
        "/api/v1/ai/chat", json=chat_body(stateKey=key), headers=user_headers(seed.alice_key)
    )

    assert key and key != other.json()["stateKey"]
    assert first.json()["sessionId"] != other.json()["sessionId"]
    assert follow_up.json()["sessionId"] == first.json()["sessionId"]
    assert key not in first.json()["sessionId"]  # only a hash of the state key is kept


def test_one_state_key_in_two_billing_accounts_gives_two_sessions(
    client: TestClient, seed: Seed
) -> None:
    alice = client.post("/api/v1/ai/chat", json=chat_body(stateKey="t"),
                        headers=user_headers(seed.alice_key)).json()
    bob = client.post("/api/v1/ai/chat", json=chat_body(stateKey="t"),
                      headers=user_headers(seed.bob_key)).json()

    assert alice["sessionId"] != bob["sessionId"]
    assert bob["sessionId"] == user_session_id(
        billing_account_id="globex", user_id="bob", state_key="t"
    )


def test_another_user_of_the_account_sending_a_users_state_key_gets_a_session_of_their_own(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    carol_key = create_user(database, billing_account_id="acme", user_id="carol").api_key
    alice = client.post("/api/v1/ai/chat", json=chat_body(stateKey="thread-9"),
                        headers=user_headers(seed.alice_key)).json()
    carol = client.post("/api/v1/ai/chat", json=chat_body(stateKey="thread-9"),
                        headers=user_headers(carol_key)).json()

    assert alice["sessionId"] == alice_session("thread-9")
    assert carol["sessionId"] == user_session_id(
        billing_account_id="acme", user_id="carol", state_key="thread-9"
    )
    assert carol["sessionId"] != alice["sessionId"]
    carols_spans = spans_of_trace(exporter, carol["traceId"])
    assert carols_spans
    assert {(s.attributes or {}).get(SESSION_ID) for s in carols_spans} == {carol["sessionId"]}
    assert {(s.attributes or {}).get(USER_ID) for s in carols_spans} == {"carol"}


def test_two_runs_of_one_schedule_share_a_session_and_another_schedule_gets_another(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    def fire(schedule_id: str, key: str) -> dict[str, object]:
        response = client.post(
            "/api/internal/graphs/builtin:governance-review/runs",
            json=run_body(seed.acme_grant, scheduleId=schedule_id),
            headers=scheduler_headers(key),
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    monday = fire("governance:community", "governance:community:2026-11-23T08:00:00Z")
    tuesday = fire("governance:community", "governance:community:2026-11-24T08:00:00Z")
    billing = fire("governance:billing", "governance:billing:2026-11-24T08:00:00Z")

    assert monday["sessionId"] == tuesday["sessionId"]
    assert monday["traceId"] != tuesday["traceId"]
    assert billing["sessionId"] != monday["sessionId"]
    for run in (monday, tuesday, billing):
        sessions = {span.attributes[SESSION_ID] for span in spans_of_trace(
            exporter, str(run["traceId"])) if span.attributes is not None}
        assert sessions == {run["sessionId"]}


def test_a_run_acts_for_the_user_its_grant_names(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    body = client.post(
        "/api/internal/graphs/builtin:governance-review/runs",
        json=run_body(seed.globex_grant, scheduleId="governance:community"),
        headers=scheduler_headers("globex-1"),
    ).json()

    assert body["sessionId"] == derive_schedule_session_id("globex", "governance:community")
    users = {span.attributes[USER_ID] for span in spans_of_trace(exporter, body["traceId"])
             if span.attributes is not None}
    assert users == {"bob"}
