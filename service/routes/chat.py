"""The user path: `POST /api/v1/ai/chat`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

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
from service.schemas import ChatRequest, ChatResponse, MessageBody
from service.streaming import RunEventStream
from telemetry import bind_caller

__all__ = ["router"]

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
    """Run a graph for the authenticated user in the session of `stateKey`."""
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
            raise ApiError(502, "run_failed", str(exc)) from exc
    return ChatResponse(
        run_id=caller.run_id,
        trace_id=outcome.trace_id,
        session_id=caller.session_id,
        state_key=state_key,
        output=MessageBody(role="assistant", content=outcome.answer),
    )
