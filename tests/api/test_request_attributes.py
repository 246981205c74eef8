"""What the HTTP server span records of the request: bounded, and without the query's secrets."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import Seed, chat_body, spans_of_trace, user_headers
from service.request_attributes import DEFAULT_REQUEST_ATTRIBUTE_LIMIT
from sessiontrace.attributes import GEN_AI_INPUT_MESSAGES, LANGFUSE_TRACE_INPUT
from trace_support import attributes, only

CHAT = "/api/v1/ai/chat"
SERVER_SPAN = "POST /api/v1/ai/chat"


def test_a_60_kb_user_agent_is_cut_to_the_limit_and_the_runs_payloads_stay_whole(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    question = "q" * 32_000  # over 4096, under the 50 KB trace cap: recorded in full
    response = client.post(
        CHAT, json=chat_body(question),
        headers=user_headers(seed.alice_key, **{"User-Agent": "A" * 60_000}),
    )

    assert response.status_code == 200
    spans = spans_of_trace(exporter, response.json()["traceId"])
    server = attributes(only(spans, SERVER_SPAN))
    user_agents = [value for key, value in server.items() if "user_agent" in key]
    assert user_agents and all(value == "A" * DEFAULT_REQUEST_ATTRIBUTE_LIMIT for value in user_agents)
    assert json.loads(server[LANGFUSE_TRACE_INPUT])["content"] == question
    llm_input = json.loads(attributes(only(spans, "chat "))[GEN_AI_INPUT_MESSAGES])
    assert llm_input[-1]["parts"][0]["content"] == question


def test_secrets_and_emails_in_the_query_never_reach_the_server_span(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        f"{CHAT}?token=abc&email=a@b.c&page=2", json=chat_body(),
        headers=user_headers(seed.alice_key),
    )

    assert response.status_code == 200
    server = attributes(only(spans_of_trace(exporter, response.json()["traceId"]), SERVER_SPAN))
    texts = [value for value in server.values() if isinstance(value, str)]
    assert not any("token=abc" in text or "a@b.c" in text for text in texts)
    queried = [text for text in texts if "page=2" in text]  # http.target, http.url or url.query
    assert queried and all(
        "token=[REDACTED]" in text and "email=[EMAIL]" in text for text in queried
    )
