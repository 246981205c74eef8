"""The one interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["ChatMessage", "Completion", "LLMError", "LLMProvider", "Role"]

Role = Literal["system", "user", "assistant", "tool"]


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
