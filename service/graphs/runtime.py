"""What a node may do: call the LLM and run tools, each inside its GenAI span."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind, Tracer

from service.llm import ChatMessage, Completion, LLMProvider
from telemetry.attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)

__all__ = ["NodeRuntime"]

_T = TypeVar("_T")


class NodeRuntime:
    """The LLM and tool calls available to a graph's nodes during one run."""

    def __init__(self, *, tracer: Tracer, llm: LLMProvider) -> None:
        self._tracer = tracer
        self._llm = llm

    async def chat(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        """One LLM call, as a `chat {model}` span with usage (a Langfuse generation)."""
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                GEN_AI_OPERATION_NAME: "chat",
                GEN_AI_PROVIDER_NAME: self._llm.name,
                GEN_AI_REQUEST_MODEL: model,
            },
        ) as span:
            completion = await self._llm.complete(messages, model=model)
            span.set_attribute(GEN_AI_RESPONSE_MODEL, completion.model)
            if completion.input_tokens is not None:
                span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, completion.input_tokens)
            if completion.output_tokens is not None:
                span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, completion.output_tokens)
            return completion

    async def tool(
        self, name: str, function: Callable[[Mapping[str, Any]], _T], arguments: Mapping[str, Any]
    ) -> _T:
        """Run a blocking tool in the loop's executor, as an `execute_tool {name}` span.

        The service installs a context-propagating default executor, so the
        tool runs with the caller bound, as any code of the run does.
        """
        with self._tracer.start_as_current_span(
            f"execute_tool {name}",
            kind=SpanKind.INTERNAL,
            attributes={GEN_AI_OPERATION_NAME: "execute_tool", GEN_AI_TOOL_NAME: name},
        ):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(function, arguments))
