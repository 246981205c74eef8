"""Runs a graph for the bound caller, one GenAI span per run, node, LLM call and tool."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.trace import Span, SpanKind, Tracer, format_trace_id

from service.graphs.model import Graph, RunInput, RunState
from service.graphs.runtime import NodeRuntime
from service.llm import LLMError, LLMProvider
from telemetry import require_caller, trace_attributes
from telemetry.attributes import GEN_AI_AGENT_NAME, GEN_AI_OPERATION_NAME

__all__ = ["GraphExecutor", "GraphRunError", "RunOutcome"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """A finished run: its answer and the trace that recorded it."""

    answer: str
    trace_id: str | None


class GraphRunError(Exception):
    """A node of the run failed; the message is safe to return to the client."""

    def __init__(self, message: str, *, trace_id: str | None) -> None:
        super().__init__(message)
        self.trace_id = trace_id


class GraphExecutor:
    """Executes graphs; refuses to start a run unless a caller with a session is bound."""

    def __init__(self, *, tracer: Tracer, llm: LLMProvider) -> None:
        self._tracer = tracer
        self._llm = llm
        self._runtime = NodeRuntime(tracer=tracer, llm=llm)

    @property
    def llm(self) -> LLMProvider:
        """The provider the runs call."""
        return self._llm

    async def run(self, graph: Graph, run_input: RunInput) -> RunOutcome:
        """Run `graph` for the bound caller.

        Raises MissingCallerError before any span starts when no caller is
        bound: a run without a session (the original bug of scheduled runs)
        cannot happen. Raises GraphRunError when a node fails.
        """
        caller = require_caller()
        if caller.graph_id != graph.id:
            raise ValueError(
                f"the bound caller is for graph {caller.graph_id!r}, not {graph.id!r}"
            )
        state = RunState(input=run_input, model=run_input.model or self._llm.default_model)
        with self._tracer.start_as_current_span(
            f"invoke_agent {graph.id}",
            kind=SpanKind.INTERNAL,
            attributes={
                GEN_AI_OPERATION_NAME: "invoke_agent",
                GEN_AI_AGENT_NAME: graph.id,
                **trace_attributes(caller),
            },
        ) as run_span:
            trace_id = _trace_id(run_span)
            for node in graph.nodes:
                with self._tracer.start_as_current_span(f"node {node.name}"):
                    try:
                        await node.run(state, self._runtime)
                    except LLMError as exc:
                        raise GraphRunError(
                            f"node {node.name!r} failed: {exc}", trace_id=trace_id
                        ) from exc
                    except Exception as exc:
                        logger.exception("graph %s: node %s failed", graph.id, node.name)
                        raise GraphRunError(
                            f"node {node.name!r} failed ({type(exc).__name__})", trace_id=trace_id
                        ) from exc
        if state.answer is None:
            raise GraphRunError(f"graph {graph.id!r} produced no answer", trace_id=trace_id)
        return RunOutcome(answer=state.answer, trace_id=trace_id)


def _trace_id(span: Span) -> str | None:
    context = span.get_span_context()
    # With tracing disabled the span is a no-op with an invalid (zero) trace id.
    return format_trace_id(context.trace_id) if context.is_valid else None
