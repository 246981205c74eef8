"""Identity comes from credentials only: headers a client sends cannot change its spans'."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    Seed,
    alice_session,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from sessiontrace import derive_schedule_session_id
from sessiontrace.attributes import SESSION_ID, USER_ID

CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPOOFING_HEADERS = {
    "baggage": "session.id=x,user.id=y,langfuse.session.id=x",
    "traceparent": f"00-{CLIENT_TRACE_ID}-b7ad6b7169203331-01",
}


def identities(exporter: InMemorySpanExporter, trace_id: str) -> set[tuple[object, object]]:
    return {
        (span.attributes.get(SESSION_ID), span.attributes.get(USER_ID))
        for span in spans_of_trace(exporter, trace_id)
        if span.attributes is not None
    }


def test_baggage_cannot_change_the_session_or_user_of_a_chat(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(stateKey="thread-1"),
                           headers=user_headers(seed.alice_key, **SPOOFING_HEADERS))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sessionId"] == alice_session("thread-1")
    assert identities(exporter, body["traceId"]) == {(body["sessionId"], "alice")}


def test_baggage_cannot_change_the_session_or_user_of_a_governance_run(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        "/api/internal/graphs/builtin:governance-review/runs",
        json=run_body(seed.acme_grant, scheduleId="governance:community"),
        headers=scheduler_headers("k-baggage", **SPOOFING_HEADERS),
    )

    body = response.json()
    assert body["sessionId"] == derive_schedule_session_id("acme", "governance:community")
    assert identities(exporter, body["traceId"]) == {(body["sessionId"], "alice")}


def test_a_refused_request_gets_no_session_from_baggage(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(), headers=SPOOFING_HEADERS)

    assert response.status_code == 401
    spans = exporter.get_finished_spans()
    assert spans, "the refused request is still traced"
    for span in spans:
        assert span.attributes is not None
        assert SESSION_ID not in span.attributes and USER_ID not in span.attributes


def test_a_client_reusing_one_traceparent_for_two_conversations_gets_two_traces(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    first, second = (
        client.post("/api/v1/ai/chat", json=chat_body(stateKey=key),
                    headers=user_headers(seed.alice_key, **SPOOFING_HEADERS)).json()
        for key in ("thread-a", "thread-b")
    )

    assert first["sessionId"] != second["sessionId"]
    assert CLIENT_TRACE_ID not in (first["traceId"], second["traceId"])
    assert first["traceId"] != second["traceId"]
    for run in (first, second):
        assert identities(exporter, run["traceId"]) == {(run["sessionId"], "alice")}
    assert spans_of_trace(exporter, CLIENT_TRACE_ID) == []
