"""What a node may do: call the LLM and run tools, each inside its GenAI span."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from service.config import ModelPrice
from service.graphs.outcome import MANUAL_OUTCOME, recording_outcome
from service.graphs.payloads import PayloadRecorder
from service.llm import ChatMessage, ChunkSink, Completion, LLMProvider
from sessiontrace.attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_COST,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LANGFUSE_OBSERVATION_COMPLETION_START_TIME,
)

__all__ = ["NodeRuntime"]

_T = TypeVar("_T")


class NodeRuntime:
    """The LLM and tool calls available to a graph's nodes during one run.

    One per run: it holds the run's payload policy (hashes only for accounts
    that mask content) and, when the run streams, where the answer's text goes.
    """

    def __init__(
        self,
        *,
        tracer: Tracer,
        llm: LLMProvider,
        payloads: PayloadRecorder | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        on_chunk: ChunkSink | None = None,
    ) -> None:
        self._tracer = tracer
        self._llm = llm
        self._payloads = payloads or PayloadRecorder(mask_content=False)
        self._prices = prices or {}
        self._on_chunk = on_chunk

    async def chat(
        self, messages: Sequence[ChatMessage], *, model: str, is_answer: bool = False
    ) -> Completion:
        """One LLM call, as a `chat {model}` span with messages and usage (a Langfuse generation).

        With `is_answer`, the call's text is the run's answer: when the run
        streams, it is streamed to the client as it arrives, and the span
        records when the first piece came (Langfuse's time to first token).
        """
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                GEN_AI_OPERATION_NAME: "chat",
                GEN_AI_PROVIDER_NAME: self._llm.name,
                GEN_AI_REQUEST_MODEL: model,
            },
            **MANUAL_OUTCOME,
        ) as span, recording_outcome(span, mask_content=self._payloads.mask_content):
            completion: Completion | None = None
            try:
                if is_answer and self._on_chunk is not None:
                    completion = await self._llm.stream(
                        messages, model=model, on_chunk=_noting_first_chunk(span, self._on_chunk)
                    )
                else:
                    completion = await self._llm.complete(messages, model=model)
            finally:
                # One write as the call ends, the messages alone if it failed; payloads are
                # scrubbed and encoded for a span that records only.
                if span.is_recording():
                    span.set_attributes(self._llm_attributes(messages, model, completion))
            return completion

    def _llm_attributes(
        self, messages: Sequence[ChatMessage], requested_model: str, completion: Completion | None
    ) -> dict[str, AttributeValue]:
        """An LLM call's messages; with its completion, the answer, model, tokens and cost."""
        attributes = self._payloads.llm_input(messages)
        if completion is None:
            return attributes
        return {
            **attributes,
            **self._payloads.llm_output(completion),
            **self._usage(requested_model=requested_model, completion=completion),
        }

    def _usage(self, *, requested_model: str, completion: Completion) -> dict[str, AttributeValue]:
        """The response model, token counts and cost of an LLM call, as one set of attributes."""
        usage: dict[str, AttributeValue] = {GEN_AI_RESPONSE_MODEL: completion.model}
        if completion.input_tokens is not None:
            usage[GEN_AI_USAGE_INPUT_TOKENS] = completion.input_tokens
        if completion.output_tokens is not None:
            usage[GEN_AI_USAGE_OUTPUT_TOKENS] = completion.output_tokens
        # A dated response model ("gpt-4o-2024-08-06") falls back to the requested name.
        price = self._prices.get(completion.model) or self._prices.get(requested_model)
        if price is not None and completion.input_tokens is not None and (
            completion.output_tokens is not None
        ):
            usage[GEN_AI_USAGE_COST] = price.cost(
                input_tokens=completion.input_tokens, output_tokens=completion.output_tokens
            )
        return usage

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
            **MANUAL_OUTCOME,
        ) as span, recording_outcome(span, mask_content=self._payloads.mask_content):
            loop = asyncio.get_running_loop()
            finished = False
            try:
                result = await loop.run_in_executor(None, functools.partial(function, arguments))
                finished = True
            finally:
                # As for an LLM call: one write, for a span that records only.
                if span.is_recording():
                    span.set_attributes({
                        **self._payloads.tool_input(arguments),
                        **(self._payloads.tool_output(result) if finished else {}),
                    })
            return result


def _noting_first_chunk(span: Span, on_chunk: ChunkSink) -> ChunkSink:
    """`on_chunk`, setting the span's completion start time when the first piece arrives."""
    started = False

    async def forward(text: str) -> None:
        nonlocal started
        if not started:
            started = True
            span.set_attribute(
                LANGFUSE_OBSERVATION_COMPLETION_START_TIME, _iso_utc(time.time_ns())
            )
        await on_chunk(text)

    return forward


def _iso_utc(time_ns: int) -> str:
    # The span clock (time_ns), as ISO 8601 UTC with microseconds and a "Z",
    # the form Langfuse's own SDKs send.
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos // 1000:06d}Z"
