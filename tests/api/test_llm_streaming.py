"""Streaming from the LLM providers: text as it arrives, the same answer and usage at the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from service.llm import ChatMessage, Completion, LLMError, OfflineProvider, OpenAICompatibleProvider

MESSAGES = (ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi"))

Handler = Callable[[httpx.Request], httpx.Response]


def openai_stream(*events: dict[str, object] | str) -> bytes:
    """An OpenAI-style event stream body."""
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return ("".join(lines)).encode()


def delta(text: str | None, *, finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-test-2026-01-01",
        "choices": [{"index": 0, "delta": {} if text is None else {"content": text},
                     "finish_reason": finish}],
    }


USAGE: dict[str, object] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-test-2026-01-01",
         "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
GOOD_STREAM = openai_stream(delta("Hel"), delta("lo"), delta("!"), delta(None, finish="stop"), USAGE,
                  "[DONE]")


def stream_with(handler: Handler) -> tuple[Completion, list[str]]:
    chunks: list[str] = []

    async def on_chunk(text: str) -> None:
        chunks.append(text)

    async def run() -> Completion:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            provider = OpenAICompatibleProvider(
                client=client, base_url="http://llm.test/v1", model="gpt-test", api_key="sk-test"
            )
            return await provider.stream(MESSAGES, model="gpt-test", on_chunk=on_chunk)

    return asyncio.run(run()), chunks


def test_openai_compatible_streaming_asks_for_usage_and_hands_over_each_delta() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=GOOD_STREAM,
                              headers={"Content-Type": "text/event-stream"})

    completion, chunks = stream_with(handler)

    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "hi"}
    assert chunks == ["Hel", "lo", "!"]
    assert completion == Completion(
        content="Hello!", model="gpt-test-2026-01-01", input_tokens=12, output_tokens=3
    )


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: httpx.Response(429, text="slow down"),
        lambda request: httpx.Response(200, content=openai_stream(delta("Hel"))),
        lambda request: httpx.Response(200, content=openai_stream("{not json")),
        lambda request: httpx.Response(200, content=openai_stream({"error": {"message": "overloaded"}})),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow")),
    ],
    ids=["http-error", "cut-short", "not-json", "error-event", "timeout"],
)
def test_openai_compatible_streaming_turns_every_failure_into_an_llm_error_without_the_key(
    handler: Handler,
) -> None:
    with pytest.raises(LLMError) as failure:
        stream_with(handler)
    assert "sk-test" not in str(failure.value)


def test_the_offline_provider_streams_its_usual_answer_word_by_word() -> None:
    provider = OfflineProvider()
    chunks: list[str] = []

    async def on_chunk(text: str) -> None:
        chunks.append(text)

    whole = asyncio.run(provider.complete(MESSAGES, model="offline-echo"))
    streamed = asyncio.run(provider.stream(MESSAGES, model="offline-echo", on_chunk=on_chunk))

    assert streamed == whole
    assert "".join(chunks) == whole.content
    assert len(chunks) == len(whole.content.split())
