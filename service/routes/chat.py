"""The user path: `POST /api/v1/ai/chat`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

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
from telemetry import bind_caller

__all__ = ["router"]

router = APIRouter(tags=["chat"])

ChatBodyDep = Annotated[ChatRequest, Depends(json_body(ChatRequest))]


@router.post(
    "/api/v1/ai/chat", response_model=ChatResponse, openapi_extra=openapi_body(ChatRequest)
)
async def chat(
    user: CurrentUserDep,
    body: ChatBodyDep,
    request_id: RequestIdDep,
    registry: RegistryDep,
    executor: ExecutorDep,
) -> ChatResponse:
    """Run a graph for the authenticated user in the session of `stateKey`."""
    graph = registry.get(body.graph_id)
    if graph is None:
        raise ApiError(404, "unknown_graph", f"graph {body.graph_id!r} does not exist")
    state_key = body.state_key or uuid.uuid4().hex
    caller = user_caller(
        user=user, state_key=state_key, graph_id=graph.id, request_id=request_id,
        run_id=uuid.uuid4().hex,
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
