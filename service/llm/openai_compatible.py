"""An OpenAI-compatible chat-completions client (OpenAI, LiteLLM, vLLM, Ollama)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from service.llm.base import ChatMessage, Completion, LLMError

__all__ = ["OpenAICompatibleProvider"]


class OpenAICompatibleProvider:
    """POSTs `{base_url}/chat/completions` and reads the answer and `usage`."""

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
        payload = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
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
