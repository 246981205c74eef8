"""An OpenAI-compatible chat-completions client (OpenAI, LiteLLM, vLLM, Ollama)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from service.llm.base import ChatMessage, ChunkSink, Completion, LLMError

__all__ = ["OpenAICompatibleProvider"]


class OpenAICompatibleProvider:
    """POSTs `{base_url}/chat/completions` and reads the answer and `usage`.

    `stream` asks for server-sent events with `stream_options.include_usage`,
    so a streamed answer reports its token usage too (in its last event).
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        base_url: str,
        model: str,
        api_key: str | None = None,
        provider_name: str = "openai",
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._provider_name = provider_name

    @property
    def name(self) -> str:
        return self._provider_name

    @property
    def default_model(self) -> str:
        return self._model

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        payload = _request_body(messages, model)
        try:
            response = await self._client.post(self._url, json=payload, headers=self._headers)
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM request to {self._url} failed: {type(exc).__name__}") from exc
        if response.status_code != httpx.codes.OK:
            raise LLMError(f"LLM answered {response.status_code} for model {model!r}")
        try:
            return _parse(response.json(), requested_model=model)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"LLM answer is not a chat completion: {exc!r}") from exc

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, on_chunk: ChunkSink
    ) -> Completion:
        payload = {
            **_request_body(messages, model),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with self._client.stream(
                "POST", self._url, json=payload, headers=self._headers
            ) as response:
                if response.status_code != httpx.codes.OK:
                    raise LLMError(f"LLM answered {response.status_code} for model {model!r}")
                return await _read_events(response, requested_model=model, on_chunk=on_chunk)
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM request to {self._url} failed: {type(exc).__name__}") from exc


def _request_body(messages: Sequence[ChatMessage], model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": m.role, "content": m.content} for m in messages]}


async def _read_events(
    response: httpx.Response, *, requested_model: str, on_chunk: ChunkSink
) -> Completion:
    """Collect a `chat.completion.chunk` event stream, forwarding each text delta."""
    parts: list[str] = []
    model = requested_model
    usage: dict[str, Any] = {}
    finished = False
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (":"), event names
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            finished = True
            break
        chunk = _parse_chunk(data, requested_model=requested_model)
        model = chunk.model or model
        usage = chunk.usage or usage
        finished = finished or chunk.finished
        for text in chunk.texts:
            parts.append(text)
            await on_chunk(text)
    if not finished:
        raise LLMError(f"LLM stream for model {requested_model!r} ended before the answer did")
    return Completion(
        content="".join(parts),
        model=model,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
    )


@dataclass(frozen=True, slots=True)
class _Chunk:
    texts: tuple[str, ...]
    model: str | None
    usage: dict[str, Any] | None
    finished: bool


def _parse_chunk(data: str, *, requested_model: str) -> _Chunk:
    try:
        event = json.loads(data)
        if "error" in event:
            raise LLMError(f"LLM stream reported an error for model {requested_model!r}")
        choices = event.get("choices") or ()
        deltas = [(choice.get("delta") or {}).get("content") for choice in choices]
        model, usage = event.get("model"), event.get("usage")
        return _Chunk(
            texts=tuple(text for text in deltas if isinstance(text, str) and text),
            model=model if isinstance(model, str) and model else None,
            usage=usage if isinstance(usage, dict) else None,
            finished=any(choice.get("finish_reason") for choice in choices),
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise LLMError(f"LLM stream event is not a chat completion chunk: {exc!r}") from exc


def _parse(body: Any, *, requested_model: str) -> Completion:
    content = body["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("choices[0].message.content is not a string")
    usage = body.get("usage") or {}
    model = body.get("model")
    return Completion(
        content=content,
        model=model if isinstance(model, str) and model else requested_model,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
