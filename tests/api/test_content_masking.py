"""An account created with `--mask-content` gets hashes only on its spans, never text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    Seed,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from service.config import Settings
from service.llm import ChatMessage, Completion, LLMError, OfflineProvider
from service.main import create_app
from service.store import (
    Database,
    account_masks_content,
    create_billing_account,
    create_grant,
    create_user,
)
from sessiontrace.attributes import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT,
    LANGFUSE_TRACE_INPUT,
    LANGFUSE_TRACE_OUTPUT,
    SESSION_ID,
)
from trace_support import attributes, only

PAYLOAD_KEYS = (
    LANGFUSE_TRACE_INPUT, LANGFUSE_TRACE_OUTPUT, LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT, GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES,
)
SECRET_TEXT = "the merger with Initech closes on Friday"
REVIEW = "/api/internal/graphs/builtin:governance-review/runs"


class Private:
    """A billing account that masks content, with its user's key and a grant."""

    def __init__(self, database: Database) -> None:
        create_billing_account(database, "private", mask_content=True)
        self.api_key = create_user(database, billing_account_id="private", user_id="carol").api_key
        self.grant = create_grant(
            database, billing_account_id="private", user_id="carol",
            graphs=("builtin:chat", "builtin:governance-review"),
        ).id


@pytest.fixture
def private(database: Database) -> Private:
    return Private(database)


def assert_hashes_only(spans: Sequence[ReadableSpan], *texts: str) -> int:
    """Every payload attribute is a masked summary and no text appears; how many there were."""
    payloads = 0
    for span in spans:
        for key in PAYLOAD_KEYS:
            if key in attributes(span):
                summary = json.loads(str(attributes(span)[key]))
                assert set(summary) == {"omitted", "bytes", "sha256"}, (span.name, key)
                assert summary["omitted"] == "masked"
                payloads += 1
        exported = json.dumps({k: str(v) for k, v in attributes(span).items()})
        exported += json.dumps([str(event.attributes) for event in span.events])
        exported += span.status.description or ""
        assert not [text for text in texts if text in exported], span.name
    return payloads


def test_the_mask_content_flag_is_stored_on_the_account(
    database: Database, seed: Seed, private: Private
) -> None:
    assert account_masks_content(database, "private") is True
    assert account_masks_content(database, "acme") is False
    assert account_masks_content(database, "no-such-account") is True  # in doubt, mask


def test_a_masked_accounts_chat_records_hashes_only_on_every_span(
    client: TestClient, private: Private, exporter: InMemorySpanExporter
) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(SECRET_TEXT),
                           headers=user_headers(private.api_key))

    body = response.json()
    assert SECRET_TEXT in body["output"]["content"]  # the user still gets the answer
    spans = spans_of_trace(exporter, body["traceId"])
    # root server span and run span (4 each: observation and trace input and output), LLM call (2)
    assert assert_hashes_only(spans, SECRET_TEXT, "Initech", body["output"]["content"]) == 10
    # Every span is marked as the account's: other libraries' content on it is masked too.
    assert {attributes(span).get("sessiontrace.content") for span in spans} == {"masked"}
    # The same text hashes the same: runs stay comparable without revealing it.
    question = json.dumps({"role": "user", "content": SECRET_TEXT}, separators=(",", ":"))
    trace_input = json.loads(str(attributes(only(spans, "invoke_agent"))[LANGFUSE_TRACE_INPUT]))
    assert trace_input["sha256"] == hashlib.sha256(question.encode()).hexdigest()


def test_a_masked_accounts_governance_run_records_hashes_only_on_every_span(
    client: TestClient, private: Private, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        REVIEW, json={**run_body(private.grant),
                      "input": {"messages": [{"role": "user", "content": SECRET_TEXT}]}},
        headers=scheduler_headers("k-private"),
    )

    body = response.json()
    assert body["ok"] is True
    spans = spans_of_trace(exporter, body["traceId"])
    # root server span (4), run (4), two LLM calls (2 each), two tools (2 each)
    assert assert_hashes_only(spans, SECRET_TEXT, "Initech", "Flag personal data") == 16
    assert {attributes(span)[SESSION_ID] for span in spans} == {body["sessionId"]}


def test_an_account_without_the_flag_keeps_readable_payloads_next_to_a_masked_one(
    client: TestClient, seed: Seed, private: Private, exporter: InMemorySpanExporter
) -> None:
    masked = client.post("/api/v1/ai/chat", json=chat_body(SECRET_TEXT),
                         headers=user_headers(private.api_key)).json()
    readable = client.post("/api/v1/ai/chat", json=chat_body(SECRET_TEXT),
                           headers=user_headers(seed.alice_key)).json()

    assert_hashes_only(spans_of_trace(exporter, masked["traceId"]), SECRET_TEXT)
    run = only(spans_of_trace(exporter, readable["traceId"]), "invoke_agent")
    assert json.loads(str(attributes(run)[LANGFUSE_TRACE_INPUT]))["content"] == SECRET_TEXT


class EchoingFailure(OfflineProvider):
    """Fails with the conversation in its message, as careless upstream errors do."""

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        raise LLMError(f"upstream rejected: {messages[-1].content}")


def test_a_masked_accounts_failed_run_keeps_the_text_out_of_its_error_records(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    database: Database, private: Private,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=EchoingFailure())
    with TestClient(app) as client:
        response = client.post("/api/v1/ai/chat", json=chat_body(SECRET_TEXT),
                               headers=user_headers(private.api_key))

    assert response.status_code == 502
    spans = exporter.get_finished_spans()
    failing = only(spans, "chat ")
    assert failing.events and failing.status.description
    assert_hashes_only(spans, SECRET_TEXT, "Initech")
