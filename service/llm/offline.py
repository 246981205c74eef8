"""An offline, deterministic provider: the default, so everything runs without network."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from service.llm.base import ChatMessage, ChunkSink, Completion

__all__ = ["OfflineProvider"]

_PER_MESSAGE_OVERHEAD = 4
_ECHO_CHARS = 160
_WORD_WITH_SPACE = re.compile(r"\S+\s*|\s+")


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

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, on_chunk: ChunkSink
    ) -> Completion:
        """The answer of `complete`, handed over one word (with its trailing space) at a time."""
        completion = await self.complete(messages, model=model)
        for piece in _WORD_WITH_SPACE.findall(completion.content):
            await on_chunk(piece)
        return completion


def _count_tokens(text: str) -> int:
    # A crude, stable stand-in for a tokenizer: one token per word.
    return len(text.split())
