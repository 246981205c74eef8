"""The user path: `POST /api/v1/ai/chat`."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.trace import format_trace_id

from service.callers import user_caller
from service.deps import (
    CurrentUserDep,
    ExecutorDep,
    RegistryDep,
    RequestIdDep,
    json_body,
    openapi_body,
)
from service.errors import ApiError
from service.graphs import GraphRunError
from service.graphs.outcome import error_message, mark_failed_request
from service.schemas import ChatRequest, ChatResponse, ChatRunIds, MessageBody
from service.streaming import RunEventStream
from telemetry import CallerContext, bind_caller

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

ChatBodyDep = Annotated[ChatRequest, Depends(json_body(ChatRequest))]


_EVENT_STREAM_DOC = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "example": (
            'event: chunk\ndata: {"content":"Hello "}\n\n'
            'event: done\ndata: {"runId":"...","traceId":"...","sessionId":"...",'
            '"stateKey":"..."}\n\n'
        ),
    }
}


@router.post(
    "/api/v1/ai/chat",
    response_model=ChatResponse,
    openapi_extra=openapi_body(ChatRequest),
    responses={200: {"content": _EVENT_STREAM_DOC, "description": "The answer; with "
                     "`stream: true`, server-sent `chunk` events then `done` (or `error`)."}},
)
async def chat(
    user: CurrentUserDep,
    body: ChatBodyDep,
    request_id: RequestIdDep,
    registry: RegistryDep,
    executor: ExecutorDep,
) -> ChatResponse | Response:
    """Run a graph for the authenticated user in the session of `stateKey`.

    A run that fails answers 502 `run_failed` (500 `internal_error` when
    something other than a node failed), with the run's ids in the body.
    """
    graph = registry.get(body.graph_id)
    if graph is None:
        raise ApiError(404, "unknown_graph", f"graph {body.graph_id!r} does not exist")
    state_key = body.state_key or uuid.uuid4().hex
    caller = user_caller(
        user=user, state_key=state_key, graph_id=graph.id, request_id=request_id,
        run_id=uuid.uuid4().hex, extra_tags=executor.trace_tags,
    )
    if body.stream:
        return RunEventStream(
            executor=executor, graph=graph, run_input=body.run_input(), caller=caller,
            state_key=state_key,
        )
    with bind_caller(caller):
        try:
            outcome = await executor.run(graph, body.run_input())
        except GraphRunError as exc:
            _mark_server_span(exc.status_message)
            ids = _run_ids(caller, state_key, exc.trace_id)
            raise ApiError(502, "run_failed", str(exc), extra=ids) from exc
        except Exception as exc:
            logger.exception("graph %s: run %s failed", graph.id, caller.run_id)
            # Not a node's failure: nothing says whether the account masks content, so the
            # span gets the error's type only.
            _mark_server_span(error_message(exc, mask_content=True))
            ids = _run_ids(caller, state_key, _current_trace_id())
            raise ApiError(500, "internal_error", "internal server error", extra=ids) from exc
    return ChatResponse(
        run_id=caller.run_id,
        trace_id=outcome.trace_id,
        session_id=caller.session_id,
        state_key=state_key,
        output=MessageBody(role="assistant", content=outcome.answer),
    )


def _run_ids(caller: CallerContext, state_key: str, trace_id: str | None) -> dict[str, object]:
    ids = ChatRunIds(
        run_id=caller.run_id, trace_id=trace_id, session_id=caller.session_id,
        state_key=state_key,
    )
    return ids.model_dump(mode="json", by_alias=True)


def _mark_server_span(status_message: str) -> None:
    """Give the HTTP server span, which its instrumentation marks ERROR, the error's message."""
    # The run's spans have ended: the current span is the server span again.
    span = trace.get_current_span()
    if span.is_recording():
        mark_failed_request(span, status_message)


def _current_trace_id() -> str | None:
    # The run span, when it started, is a child of the server span: they share the trace.
    context = trace.get_current_span().get_span_context()
    return format_trace_id(context.trace_id) if context.is_valid else None
