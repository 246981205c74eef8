"""LLM providers: the OpenAI-compatible client against a fake server, the offline one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from api_support import (
    Seed,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from service.config import Settings
from service.graphs import GraphExecutor, RunInput, default_registry
from service.llm import (
    ChatMessage,
    Completion,
    LLMError,
    LLMProvider,
    OfflineProvider,
    OpenAICompatibleProvider,
    build_provider,
)
from service.main import create_app
from sessiontrace import derive_user_session_id
from service.caller import CallerContext, bind_caller
from sessiontrace.attributes import (
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)

MESSAGES = (ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi"))

Handler = Callable[[httpx.Request], httpx.Response]


def completion_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "model": "gpt-test-2026-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    body.update(overrides)
    return body


def complete_with(handler: Handler, *, api_key: str | None = "sk-test") -> Completion:
    async def run() -> Completion:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            provider = OpenAICompatibleProvider(
                client=client, base_url="http://llm.test/v1/", model="gpt-test", api_key=api_key
            )
            return await provider.complete(MESSAGES, model="gpt-test")

    return asyncio.run(run())


def test_openai_compatible_provider_posts_chat_completions_and_reads_usage() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion_body())

    completion = complete_with(handler)

    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }
    assert completion == Completion(
        content="Hello!", model="gpt-test-2026-01-01", input_tokens=12, output_tokens=3
    )


def test_openai_compatible_provider_sends_no_authorization_without_a_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion_body(usage=None))

    completion = complete_with(handler, api_key=None)

    assert "Authorization" not in seen[0].headers
    assert completion.input_tokens is None and completion.output_tokens is None


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: httpx.Response(503, text="overloaded"),
        lambda request: httpx.Response(200, text="not json"),
        lambda request: httpx.Response(200, json={"choices": []}),
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")),
    ],
    ids=["http-error", "not-json", "no-choices", "unreachable"],
)
def test_openai_compatible_provider_turns_every_failure_into_an_llm_error_without_the_key(
    handler: Handler,
) -> None:
    with pytest.raises(LLMError) as failure:
        complete_with(handler)
    assert "sk-test" not in str(failure.value)


def test_offline_provider_is_deterministic_and_counts_tokens() -> None:
    provider = OfflineProvider()
    first = asyncio.run(provider.complete(MESSAGES, model="offline-echo"))
    again = asyncio.run(provider.complete(MESSAGES, model="offline-echo"))
    other = asyncio.run(provider.complete(MESSAGES[:1] + (ChatMessage("user", "bye"),),
                                          model="offline-echo"))

    assert first == again
    assert first.content != other.content
    assert "hi" in first.content
    assert first.input_tokens is not None and first.input_tokens > 0
    assert first.output_tokens == len(first.content.split())


def test_the_offline_provider_is_the_default_and_a_base_url_selects_openai_compatible() -> None:
    async def build(settings: Settings) -> LLMProvider:
        async with httpx.AsyncClient() as client:
            return build_provider(settings, client)

    offline = asyncio.run(build(Settings(_env_file=None)))  # type: ignore[call-arg]
    remote = asyncio.run(build(Settings(
        llm_base_url="http://llm.test/v1", llm_model="m", llm_api_key=SecretStr("k"),
        _env_file=None,  # type: ignore[call-arg]
    )))

    assert isinstance(offline, OfflineProvider)
    assert isinstance(remote, OpenAICompatibleProvider) and remote.default_model == "m"


def test_both_providers_produce_the_same_llm_span_shape(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    caller = CallerContext(
        billing_account_id="acme", user_id="alice",
        session_id=derive_user_session_id("acme", "t"), request_id="r", run_id="run",
        trigger="user", graph_id="builtin:chat",
    )
    chat = default_registry().get("builtin:chat")
    assert chat is not None

    async def run_with(make: Callable[[httpx.AsyncClient], LLMProvider]) -> None:
        handler: Handler = lambda request: httpx.Response(200, json=completion_body())  # noqa: E731
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            executor = GraphExecutor(tracer=tracer_provider.get_tracer("t"), llm=make(client))
            with bind_caller(caller):
                await executor.run(chat, RunInput(messages=MESSAGES, model="gpt-test"))

    asyncio.run(run_with(lambda client: OfflineProvider()))
    asyncio.run(run_with(lambda client: OpenAICompatibleProvider(
        client=client, base_url="http://llm.test/v1", model="gpt-test")))

    offline, remote = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-test"]
    assert set(offline.attributes or {}) == set(remote.attributes or {})
    assert {GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL, GEN_AI_RESPONSE_MODEL,
            GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS} <= set(offline.attributes or {})
    assert (remote.attributes or {})[GEN_AI_RESPONSE_MODEL] == "gpt-test-2026-01-01"
    assert (remote.attributes or {})[GEN_AI_USAGE_INPUT_TOKENS] == 12


class BrokenProvider(OfflineProvider):
    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        raise LLMError("LLM answered 500 for model 'offline-echo'")


def test_a_failed_llm_call_answers_502_on_chat_and_ok_false_on_the_internal_route(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=BrokenProvider())
    with TestClient(app) as client:
        chat = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))
        run = client.post("/api/internal/graphs/builtin:chat/runs",
                          json=run_body(seed.acme_grant), headers=scheduler_headers("k-fail"))

    assert chat.status_code == 502 and chat.json()["error"] == "run_failed"
    assert run.status_code == 200
    body = run.json()
    assert body["ok"] is False and "LLM answered 500" in body["error"]
    assert body["traceId"] and body["sessionId"]
    assert all((s.attributes or {}).get("session.id") == body["sessionId"]
               for s in spans_of_trace(exporter, body["traceId"]))
