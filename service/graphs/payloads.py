"""What a run's spans record as input and output: scrubbed and capped, or only hashed.

Every payload attribute is built here, through `sessiontrace.encode_payload`, so no
text reaches a span unscrubbed, over its cap, or at all for an account that
masks content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

from service.llm import ChatMessage, Completion
from sessiontrace import encode_payload
from sessiontrace.attributes import (
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT,
)

__all__ = ["LLM_PAYLOAD_CAP", "TOOL_PAYLOAD_CAP", "TRACE_PAYLOAD_CAP", "PayloadRecorder"]

# The service's caps, in bytes of encoded JSON: past them a payload becomes a summary.
TRACE_PAYLOAD_CAP = 50_000
LLM_PAYLOAD_CAP = 100_000
TOOL_PAYLOAD_CAP = 10_000

Attributes = dict[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class PayloadRecorder:
    """Span attributes of one run's payloads; with `mask_content`, hashes only."""

    mask_content: bool

    def run_input(self, messages: Sequence[ChatMessage]) -> str:
        """The last user message: the run's input, on its span and its trace's root."""
        return self._encode(_message(_last_user_message(messages)), TRACE_PAYLOAD_CAP)

    def run_output(self, answer: str) -> str:
        """The final answer: the run's output, on its span and its trace's root."""
        return self._encode({"role": "assistant", "content": answer}, TRACE_PAYLOAD_CAP)

    def llm_input(self, messages: Sequence[ChatMessage]) -> Attributes:
        """The messages an LLM call sends, in the GenAI semantic-convention shape."""
        shaped = [_genai_message(m.role, m.content) for m in messages]
        return {GEN_AI_INPUT_MESSAGES: self._encode(shaped, LLM_PAYLOAD_CAP)}

    def llm_output(self, completion: Completion) -> Attributes:
        """The message an LLM call received, in the GenAI semantic-convention shape."""
        shaped = [{**_genai_message("assistant", completion.content), "finish_reason": "stop"}]
        return {GEN_AI_OUTPUT_MESSAGES: self._encode(shaped, LLM_PAYLOAD_CAP)}

    def tool_input(self, arguments: Mapping[str, Any]) -> Attributes:
        """A tool's arguments."""
        return {LANGFUSE_OBSERVATION_INPUT: self._encode(dict(arguments), TOOL_PAYLOAD_CAP)}

    def tool_output(self, result: Any) -> Attributes:
        """A tool's result."""
        return {LANGFUSE_OBSERVATION_OUTPUT: self._encode(result, TOOL_PAYLOAD_CAP)}

    def _encode(self, value: Any, cap: int) -> str:
        return encode_payload(value, max_bytes=cap, mask_content=self.mask_content)


def _last_user_message(messages: Sequence[ChatMessage]) -> ChatMessage | None:
    users = [m for m in messages if m.role == "user"]
    if users:
        return users[-1]
    return messages[-1] if messages else None


def _message(message: ChatMessage | None) -> dict[str, str] | None:
    return None if message is None else {"role": message.role, "content": message.content}


def _genai_message(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}
