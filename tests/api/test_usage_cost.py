"""Token usage on every LLM span, and its cost when the model has a price in LLM_PRICES."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import Seed, chat_body, run_body, scheduler_headers, spans_of_trace, user_headers
from service.config import ModelPrice, Settings
from service.graphs import GraphExecutor, RunInput, default_registry
from service.llm import ChatMessage, OpenAICompatibleProvider
from service.main import create_app
from sessiontrace import derive_user_session_id
from service.caller import CallerContext, bind_caller
from sessiontrace.attributes import (
    GEN_AI_USAGE_COST,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from trace_support import attributes, named

PRICES = {"offline-echo": {"input_per_1k": 0.5, "output_per_1k": 1.5}}


def test_every_llm_span_of_a_priced_model_carries_its_cost_on_both_paths(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    prices = {"offline-echo": ModelPrice(input_per_1k=0.5, output_per_1k=1.5)}
    priced = settings.model_copy(update={"llm_prices": prices})
    with TestClient(create_app(priced, tracer_provider=tracer_provider)) as client:
        chat = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))
        review = client.post("/api/internal/graphs/builtin:governance-review/runs",
                             json=run_body(seed.acme_grant), headers=scheduler_headers("k-1"))

    llm_spans = [
        span
        for trace_id in (chat.json()["traceId"], review.json()["traceId"])
        for span in named(spans_of_trace(exporter, trace_id), "chat ")
    ]
    assert len(llm_spans) == 3
    for span in llm_spans:
        tokens_in = attributes(span)[GEN_AI_USAGE_INPUT_TOKENS]
        tokens_out = attributes(span)[GEN_AI_USAGE_OUTPUT_TOKENS]
        assert tokens_in > 0 and tokens_out > 0
        assert attributes(span)[GEN_AI_USAGE_COST] == pytest.approx(
            (tokens_in * 0.5 + tokens_out * 1.5) / 1000
        )


def test_llm_spans_of_a_model_without_a_price_carry_usage_but_no_cost(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))

    (span,) = named(spans_of_trace(exporter, response.json()["traceId"]), "chat ")
    assert attributes(span)[GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert GEN_AI_USAGE_COST not in attributes(span)


def test_a_dated_response_model_is_priced_under_the_model_that_was_requested(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    body = {
        "model": "gpt-test-2026-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 2000},
    }
    caller = CallerContext(
        billing_account_id="acme", user_id="alice", session_id=derive_user_session_id("acme", "t"),
        request_id="r", run_id="run", trigger="user", graph_id="builtin:chat",
    )
    chat = default_registry().get("builtin:chat")
    assert chat is not None

    async def run() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
        async with httpx.AsyncClient(transport=transport) as client:
            llm = OpenAICompatibleProvider(client=client, base_url="http://llm.test/v1",
                                           model="gpt-test")
            executor = GraphExecutor(
                tracer=tracer_provider.get_tracer("t"), llm=llm,
                prices={"gpt-test": ModelPrice(input_per_1k=0.01, output_per_1k=0.03)},
            )
            with bind_caller(caller):
                await executor.run(chat, RunInput(messages=(ChatMessage("user", "hi"),)))

    asyncio.run(run())

    (span,) = named(exporter.get_finished_spans(), "chat ")
    assert attributes(span)[GEN_AI_USAGE_COST] == pytest.approx(0.01 + 0.06)


def test_without_llm_prices_no_model_is_priced() -> None:
    assert Settings(_env_file=None).llm_prices == {}  # type: ignore[call-arg]


def test_llm_prices_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PRICES", json.dumps(PRICES))

    prices = Settings(_env_file=None).llm_prices  # type: ignore[call-arg]

    assert prices == {"offline-echo": ModelPrice(input_per_1k=0.5, output_per_1k=1.5)}


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[1, 2]",
        '{"m": {"input_per_1k": -1, "output_per_1k": 1}}',
        '{"m": {"input_per_1k": 1}}',
        '{"m": {"input_per_1k": 1, "output_per_1k": 1, "currency": "EUR"}}',
        '{"m": {"input_per_1k": "cheap", "output_per_1k": 1}}',
        '{"": {"input_per_1k": 1, "output_per_1k": 1}}',
    ],
    ids=["not-json", "not-an-object", "negative", "missing", "unknown-field", "not-a-number",
         "empty-model"],
)
def test_a_malformed_price_table_refuses_to_start_naming_llm_prices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LLM_PRICES", value)

    with pytest.raises(ValueError, match="LLM_PRICES"):
        Settings(_env_file=None)  # type: ignore[call-arg]
