"""An offline, deterministic provider: the default, so everything runs without network."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from service.llm.base import ChatMessage, Completion

__all__ = ["OfflineProvider"]

_PER_MESSAGE_OVERHEAD = 4
_ECHO_CHARS = 160


class OfflineProvider:
    """Answers from the input alone: same messages, same answer, same token counts."""

    def __init__(self, *, model: str = "offline-echo") -> None:
        self._model = model

    @property
    def name(self) -> str:
        return "sessiontrace.offline"

    @property
    def default_model(self) -> str:
        return self._model

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        digest = hashlib.sha256(
            "\x1e".join(f"{m.role}\x1f{m.content}" for m in messages).encode("utf-8")
        ).hexdigest()[:8]
        echo = " ".join(last.split())[:_ECHO_CHARS]
        content = f"[{model} {digest}] You said: {echo}"
        return Completion(
            content=content,
            model=model,
            input_tokens=sum(_count_tokens(m.content) + _PER_MESSAGE_OVERHEAD for m in messages),
            output_tokens=_count_tokens(content),
        )


def _count_tokens(text: str) -> int:
    # A crude, stable stand-in for a tokenizer: one token per word.
    return len(text.split())
