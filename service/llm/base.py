"""The one interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["ChatMessage", "ChunkSink", "Completion", "LLMError", "LLMProvider", "Role"]

Role = Literal["system", "user", "assistant", "tool"]

ChunkSink = Callable[[str], Awaitable[None]]
"""Receives each piece of an answer's text as it arrives."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A provider's answer with the model that produced it and its token usage."""

    content: str
    model: str
    input_tokens: int | None
    output_tokens: int | None


class LLMError(Exception):
    """The provider failed; the message is safe to show (never holds credentials)."""


class LLMProvider(Protocol):
    """A chat-completions backend."""

    @property
    def name(self) -> str:
        """`gen_ai.provider.name` of its spans (e.g. "openai")."""
        ...

    @property
    def default_model(self) -> str:
        """The model used when a request names none."""
        ...

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        """Answer `messages` with `model`; raises LLMError on failure."""
        ...

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, on_chunk: ChunkSink
    ) -> Completion:
        """Answer as `complete` does, handing each piece of text to `on_chunk` on arrival.

        The returned completion holds the whole text and the usage. What
        `on_chunk` raises propagates unchanged; provider failures are LLMError.
        """
        ...
