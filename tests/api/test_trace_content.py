"""What a trace shows in Langfuse, the same on both paths: name, tags, metadata, input, output."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    Seed,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from sessiontrace.attributes import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT,
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_INPUT,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_OUTPUT,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)
from trace_support import attributes, named, only

CHAT = "/api/v1/ai/chat"
REVIEW = "/api/internal/graphs/builtin:governance-review/runs"
META = "langfuse.trace.metadata."
PROVIDER = "sessiontrace.offline"
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
]


def json_attribute(span: ReadableSpan, key: str) -> Any:
    return json.loads(str(attributes(span)[key]))


def test_a_user_trace_is_named_after_its_graph_with_low_cardinality_tags_and_its_ids(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key))

    body = response.json()
    run = only(spans_of_trace(exporter, body["traceId"]), "invoke_agent")
    assert attributes(run)[LANGFUSE_TRACE_NAME] == "builtin:chat"
    assert list(attributes(run)[LANGFUSE_TRACE_TAGS]) == ["user", "builtin:chat", PROVIDER, "test"]
    assert attributes(run)[META + "run_id"] == body["runId"]
    assert attributes(run)[META + "request_id"] == response.headers["X-Request-ID"]
    assert attributes(run)[META + "graph_id"] == "builtin:chat"
    assert attributes(run)[META + "billing_account_id"] == "acme"
    assert attributes(run)[META + "trigger"] == "user"
    assert META + "schedule_id" not in attributes(run)
    assert not any("alice" in str(value) for value in attributes(run)[LANGFUSE_TRACE_TAGS])


def test_a_governance_trace_is_named_after_its_graph_and_carries_its_schedule(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(
        REVIEW, json=run_body(seed.acme_grant, scheduleId="governance:community"),
        headers=scheduler_headers("k-1"),
    )

    body = response.json()
    run = only(spans_of_trace(exporter, body["traceId"]), "invoke_agent")
    tags = list(attributes(run)[LANGFUSE_TRACE_TAGS])
    assert attributes(run)[LANGFUSE_TRACE_NAME] == "builtin:governance-review"
    assert tags[:2] == ["schedule", "builtin:governance-review"]
    assert {PROVIDER, "test"} <= set(tags)
    assert not any("alice" in tag for tag in tags)
    assert attributes(run)[META + "run_id"] == body["runId"]
    assert attributes(run)[META + "request_id"] == response.headers["X-Request-ID"]
    assert attributes(run)[META + "graph_id"] == "builtin:governance-review"
    assert attributes(run)[META + "billing_account_id"] == "acme"
    assert attributes(run)[META + "trigger"] == "schedule"
    assert attributes(run)[META + "schedule_id"] == "governance:community"


def test_a_user_trace_shows_the_last_user_message_and_the_answer_on_trace_and_run_span(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(CHAT, json={"messages": CONVERSATION},
                           headers=user_headers(seed.alice_key))

    body = response.json()
    run = only(spans_of_trace(exporter, body["traceId"]), "invoke_agent")
    question = {"role": "user", "content": "second question"}
    answer = {"role": "assistant", "content": body["output"]["content"]}
    assert json_attribute(run, LANGFUSE_TRACE_INPUT) == question
    assert json_attribute(run, LANGFUSE_OBSERVATION_INPUT) == question
    assert json_attribute(run, LANGFUSE_TRACE_OUTPUT) == answer
    assert json_attribute(run, LANGFUSE_OBSERVATION_OUTPUT) == answer


def test_an_llm_span_carries_its_messages_in_the_genai_shape(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(CHAT, json={"messages": CONVERSATION},
                           headers=user_headers(seed.alice_key))

    body = response.json()
    llm = only(spans_of_trace(exporter, body["traceId"]), "chat ")
    assert json_attribute(llm, GEN_AI_INPUT_MESSAGES) == [
        {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
        for m in CONVERSATION
    ]
    assert json_attribute(llm, GEN_AI_OUTPUT_MESSAGES) == [
        {"role": "assistant", "parts": [{"type": "text", "content": body["output"]["content"]}],
         "finish_reason": "stop"}
    ]


def test_a_governance_trace_shows_its_input_answer_llm_messages_and_tool_calls(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(REVIEW, json=run_body(seed.acme_grant),
                           headers=scheduler_headers("k-2"))

    spans = spans_of_trace(exporter, response.json()["traceId"])
    run = only(spans, "invoke_agent")
    assess, summarize = sorted(named(spans, "chat "), key=lambda span: span.start_time or 0)
    final_answer = json_attribute(summarize, GEN_AI_OUTPUT_MESSAGES)[0]["parts"][0]["content"]
    question = {"role": "user", "content": "review last week's activity"}
    assert json_attribute(run, LANGFUSE_TRACE_INPUT) == question
    assert json_attribute(run, LANGFUSE_TRACE_OUTPUT) == {"role": "assistant",
                                                          "content": final_answer}
    assert json_attribute(run, LANGFUSE_OBSERVATION_OUTPUT)["content"] == final_answer
    assert [m["role"] for m in json_attribute(assess, GEN_AI_INPUT_MESSAGES)] == ["system", "user"]
    policy = only(spans, "execute_tool account_policy")
    assert json_attribute(policy, LANGFUSE_OBSERVATION_INPUT) == {"topic": "governance"}
    assert json_attribute(policy, LANGFUSE_OBSERVATION_OUTPUT)["billingAccountId"] == "acme"
    stats = only(spans, "execute_tool message_stats")
    assert json_attribute(stats, LANGFUSE_OBSERVATION_INPUT) == {"messages": [question]}
    assert json_attribute(stats, LANGFUSE_OBSERVATION_OUTPUT) == {
        "messages": 1, "words": 4, "characters": len(question["content"])
    }


SECRETS = (
    "use sk-live0123456789abcdefXYZ, Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig and mail "
    "jane.doe@example.com, card 4111 1111 1111 1111"
)
LEAKS = ("sk-live0123456789abcdefXYZ", "eyJhbGciOiJIUzI1NiJ9", "jane.doe@example.com",
         "4111 1111 1111 1111")


def test_secrets_and_personal_data_never_reach_an_exported_span_on_either_path(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    chat = client.post(CHAT, json=chat_body(SECRETS), headers=user_headers(seed.alice_key))
    review = client.post(
        REVIEW, json={**run_body(seed.acme_grant),
                      "input": {"messages": [{"role": "user", "content": SECRETS}]}},
        headers=scheduler_headers("k-3"),
    )

    for trace_id in (chat.json()["traceId"], review.json()["traceId"]):
        spans = spans_of_trace(exporter, trace_id)
        exported = json.dumps([{k: str(v) for k, v in attributes(s).items()} for s in spans])
        assert not [leak for leak in LEAKS if leak in exported]
        shown = json_attribute(only(spans, "invoke_agent"), LANGFUSE_TRACE_INPUT)["content"]
        assert "[REDACTED]" in shown and "[EMAIL]" in shown and "[CARD]" in shown


def test_a_message_past_the_trace_cap_is_summarized_on_the_trace_but_whole_on_the_llm_span(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    long_text = "é" * 30_000  # 60 KB of UTF-8: over the 50 KB trace cap, under 100 KB for LLMs
    response = client.post(CHAT, json=chat_body(long_text), headers=user_headers(seed.alice_key))

    spans = spans_of_trace(exporter, response.json()["traceId"])
    summary = json_attribute(only(spans, "invoke_agent"), LANGFUSE_TRACE_INPUT)
    assert summary["omitted"] == "over_cap" and summary["cap_bytes"] == 50_000
    assert summary["bytes"] > 60_000 and len(summary["sha256"]) == 64
    llm_input = json_attribute(only(spans, "chat "), GEN_AI_INPUT_MESSAGES)
    assert llm_input[0]["parts"][0]["content"] == long_text


def test_a_tool_payload_past_the_tool_cap_is_summarized_by_size_and_hash(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    text = "é" * 6_000  # 12 KB: over the 10 KB tool cap, well under the trace cap
    response = client.post(
        REVIEW, json={**run_body(seed.acme_grant),
                      "input": {"messages": [{"role": "user", "content": text}]}},
        headers=scheduler_headers("k-4"),
    )

    spans = spans_of_trace(exporter, response.json()["traceId"])
    summary = json_attribute(only(spans, "execute_tool message_stats"), LANGFUSE_OBSERVATION_INPUT)
    assert summary["omitted"] == "over_cap" and summary["cap_bytes"] == 10_000
    assert json_attribute(only(spans, "invoke_agent"), LANGFUSE_TRACE_INPUT)["content"] == text


def test_on_both_paths_the_root_span_carries_the_runs_input_output_and_metadata(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    # Langfuse's v4 path takes a trace's input, output and metadata from its root span only.
    chat = client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key)).json()
    review = client.post(REVIEW, json=run_body(seed.acme_grant),
                         headers=scheduler_headers("k-root")).json()

    for body in (chat, review):
        spans = spans_of_trace(exporter, body["traceId"])
        (root,) = [span for span in spans if span.parent is None]
        run = only(spans, "invoke_agent")
        assert root.name.startswith("POST /api/")
        for key in (LANGFUSE_OBSERVATION_INPUT, LANGFUSE_OBSERVATION_OUTPUT,
                    LANGFUSE_TRACE_INPUT, LANGFUSE_TRACE_OUTPUT):
            assert attributes(root)[key] == attributes(run)[key], key
        assert attributes(root)[META + "run_id"] == body["runId"]
        root_metadata = {key for key in attributes(root) if key.startswith(META)}
        assert root_metadata == {key for key in attributes(run) if key.startswith(META)}


def test_every_span_of_a_run_carries_trace_name_tags_and_langfuse_session_and_user(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    review = client.post(REVIEW, json=run_body(seed.acme_grant, scheduleId="governance:community"),
                         headers=scheduler_headers("k-every")).json()

    spans = spans_of_trace(exporter, review["traceId"])
    assert len(spans) >= 8
    for span in spans:
        found = attributes(span)
        assert found[LANGFUSE_TRACE_NAME] == "builtin:governance-review", span.name
        assert "schedule:governance:community" in found[LANGFUSE_TRACE_TAGS], span.name
        assert found[LANGFUSE_SESSION_ID] == found[SESSION_ID] == review["sessionId"], span.name
        assert found[LANGFUSE_USER_ID] == found[USER_ID] == "alice", span.name
        # Trace metadata stays on the root and the run span: Langfuse reads it from the root.
        if span.parent is not None and not span.name.startswith("invoke_agent"):
            assert not [key for key in found if key.startswith(META)], span.name
