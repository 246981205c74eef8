"""Runs a graph for the bound caller, one GenAI span per run, node, LLM call and tool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer, format_trace_id

from service.config import ModelPrice
from service.graphs.model import Graph, RunInput, RunState
from service.graphs.outcome import (
    MANUAL_OUTCOME,
    RUN_OUTCOME,
    Outcome,
    error_message,
    mark_aborted,
    mark_error,
    recording_outcome,
)
from service.graphs.payloads import PayloadRecorder
from service.graphs.runtime import NodeRuntime
from service.llm import ChunkSink, LLMError, LLMProvider
from service.caller import require_caller
from sessiontrace import SessionContext, set_trace_io
from sessiontrace.attributes import GEN_AI_AGENT_NAME, GEN_AI_OPERATION_NAME

__all__ = [
    "GraphExecutor", "GraphRunError", "RunDeadlineError", "RunOutcome", "current_trace_id",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """A finished run: its answer and the trace that recorded it."""

    answer: str
    trace_id: str | None


class GraphRunError(Exception):
    """A node of the run failed (`failure`); the message is safe to return to the client."""

    def __init__(
        self, message: str, *, trace_id: str | None, failure: Exception, mask_content: bool
    ) -> None:
        super().__init__(message)
        self.trace_id = trace_id
        self.failure = failure
        self.mask_content = mask_content

    @property
    def status_message(self) -> str:
        """What the run's spans show for the error: its type and scrubbed message (type only
        for an account that masks content). Scrubbed when asked, for a span that records."""
        return error_message(self.failure, mask_content=self.mask_content)


class RunDeadlineError(Exception):
    """The run was still going when its deadline (RUN_TIMEOUT_SECONDS) passed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"run exceeded its deadline of {seconds:g} s")
        self.seconds = seconds


class _NoAnswerError(Exception):
    """Every node ran but none set the answer."""


class GraphExecutor:
    """Executes graphs; refuses to start a run unless a caller with a session is bound.

    Args:
        environment: the deployment environment, one of `trace_tags`.
        prices: per-model prices; LLM spans of a listed model get `gen_ai.usage.cost`.
        run_timeout: the wall-clock deadline of a run in seconds, from the
            moment `run` is called; None: none.
    """

    def __init__(
        self,
        *,
        tracer: Tracer,
        llm: LLMProvider,
        environment: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        run_timeout: float | None = None,
    ) -> None:
        self._tracer = tracer
        self._run_timeout = run_timeout
        self._llm = llm
        self._prices = dict(prices or {})
        self._tags = tuple(tag for tag in (llm.name, environment) if tag)

    @property
    def llm(self) -> LLMProvider:
        """The provider the runs call."""
        return self._llm

    @property
    def trace_tags(self) -> tuple[str, ...]:
        """Low-cardinality tags of every run's trace: the LLM provider and the environment."""
        return self._tags

    async def run(
        self, graph: Graph, run_input: RunInput, *, on_chunk: ChunkSink | None = None
    ) -> RunOutcome:
        """Run `graph` for the bound caller.

        Raises MissingCallerError before any span starts when no caller is
        bound: a run without a session (the original bug of scheduled runs)
        cannot happen. Raises GraphRunError when a node fails. With
        `on_chunk`, the answer's text is handed to it as the LLM produces it.

        The run span records exactly one `sessiontrace.run.outcome`: success,
        error (a node failed) or aborted (the run was cancelled, e.g. its
        client went away); it ends in every case. It carries the caller's
        trace attributes and the run's input and output, which also go on the
        trace's root span (`set_trace_io`) when that is another span.

        A run still going when its deadline (`run_timeout`) passes is
        cancelled where it stands and fails with RunDeadlineError, the outcome
        error: one deadline covers all its LLM calls and tools, whereas an LLM
        timeout applies per read. A tool's thread cannot be stopped; the run
        no longer waits for it.
        """
        deadline = None if self._run_timeout is None else (
            asyncio.get_running_loop().time() + self._run_timeout
        )
        caller = require_caller()
        if caller.graph_id != graph.id:
            raise ValueError(
                f"the bound caller is for graph {caller.graph_id!r}, not {graph.id!r}"
            )
        # The account's masking came with the user or grant, and bind_caller bound the
        # caller's session with it (`CallerContext.mask_content`).
        return await self._run_bound(
            graph, run_input, caller.session, mask_content=caller.mask_content,
            on_chunk=on_chunk, deadline=deadline,
        )

    async def _run_bound(
        self,
        graph: Graph,
        run_input: RunInput,
        session: SessionContext,
        *,
        mask_content: bool,
        on_chunk: ChunkSink | None,
        deadline: float | None,
    ) -> RunOutcome:
        payloads = PayloadRecorder(mask_content=mask_content)
        runtime = NodeRuntime(
            tracer=self._tracer, llm=self._llm, payloads=payloads, prices=self._prices,
            on_chunk=on_chunk,
        )
        state = RunState(input=run_input, model=run_input.model or self._llm.default_model)
        with self._tracer.start_as_current_span(
            f"invoke_agent {graph.id}",
            kind=SpanKind.INTERNAL,
            # The trace metadata too, as on the trace's root: the run span is the root
            # when nothing was open at bind time. The session processor stamps the rest of
            # the root set (session, user, trace name, tags) as on every span.
            attributes={
                GEN_AI_OPERATION_NAME: "invoke_agent",
                GEN_AI_AGENT_NAME: graph.id,
                **session.metadata_attributes,
            },
            **MANUAL_OUTCOME,
        ) as run_span:
            trace_id = _trace_id(run_span)
            node_name: str | None = None
            try:
                for node in graph.nodes:
                    node_name = node.name
                    with self._tracer.start_as_current_span(
                        f"node {node.name}", **MANUAL_OUTCOME
                    ) as node_span, recording_outcome(node_span, mask_content=mask_content):
                        await self._before_deadline(node.run(state, runtime), deadline)
                node_name = None
                if state.answer is None:
                    raise _NoAnswerError(f"graph {graph.id!r} produced no answer")
            except Exception as exc:
                mark_error(run_span, exc, mask_content=mask_content)
                _record_run(run_span, payloads, run_input, Outcome.ERROR)
                raise _run_error(
                    graph, node_name, exc, trace_id, mask_content=mask_content
                ) from exc
            except BaseException:
                mark_aborted(run_span)
                _record_run(run_span, payloads, run_input, Outcome.ABORTED)
                raise
            _record_run(run_span, payloads, run_input, Outcome.SUCCESS, answer=state.answer)
        return RunOutcome(answer=state.answer, trace_id=trace_id)

    async def _before_deadline(self, step: Awaitable[None], deadline: float | None) -> None:
        # Per node, so the node that overran fails with the deadline error too
        # (the LLM call or tool it was waiting for is aborted).
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                await step
        except TimeoutError:
            if timeout.expired() and self._run_timeout is not None:
                raise RunDeadlineError(self._run_timeout) from None
            raise  # the node's own TimeoutError


def _record_run(
    span: Span, payloads: PayloadRecorder, run_input: RunInput, outcome: Outcome, *,
    answer: str | None = None,
) -> None:
    """The run's outcome, and its input and output on its span and its trace's root.

    Once, as the run ends: one write to each span. Only for a span that records: with
    tracing off (OTEL_SDK_DISABLED) or the trace sampled out, no payload is scrubbed or
    encoded.
    """
    if not span.is_recording():
        return
    set_trace_io(
        input=payloads.run_input(run_input.messages),
        output=None if answer is None else payloads.run_output(answer),
        span=span,
    )
    span.set_attribute(RUN_OUTCOME, outcome.value)


def _run_error(
    graph: Graph, node_name: str | None, exc: Exception, trace_id: str | None, *,
    mask_content: bool,
) -> GraphRunError:
    if node_name is None:
        message = str(exc)
    elif isinstance(exc, RunDeadlineError):
        logger.warning("graph %s: %s, in node %s", graph.id, exc, node_name)
        message = str(exc)
    elif isinstance(exc, LLMError):
        message = f"node {node_name!r} failed: {exc}"
    else:
        logger.exception("graph %s: node %s failed", graph.id, node_name)
        message = f"node {node_name!r} failed ({type(exc).__name__})"
    return GraphRunError(message, trace_id=trace_id, failure=exc, mask_content=mask_content)


def current_trace_id() -> str | None:
    """The hex trace id of the current span (the run's, or its HTTP server span's); None untraced."""
    return _trace_id(trace.get_current_span())


def _trace_id(span: Span) -> str | None:
    context = span.get_span_context()
    # With tracing disabled the span is a no-op with an invalid (zero) trace id.
    return format_trace_id(context.trace_id) if context.is_valid else None
