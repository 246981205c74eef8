"""The user path: `POST /api/v1/ai/chat`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from opentelemetry import trace

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
from service.graphs import (
    Graph,
    GraphExecutor,
    GraphRunError,
    RunInput,
    RunOutcome,
    current_trace_id,
)
from service.graphs.outcome import error_message, mark_failed_request, recording_abort_reason
from service.middleware import get_client_request_id
from service.schemas import ChatRequest, ChatResponse, ChatRunIds, MessageBody
from service.streaming import CLIENT_DISCONNECTED, RunEventStream
from service.caller import CallerContext, bind_caller

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

ChatBodyDep = Annotated[ChatRequest, Depends(json_body(ChatRequest))]
ClientRequestIdDep = Annotated[str | None, Depends(get_client_request_id)]

# Not a registered HTTP status: the client that would read it has gone (nginx's code).
_CLIENT_CLOSED_REQUEST = 499


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
    client_request_id: ClientRequestIdDep,
    request: Request,
) -> ChatResponse | Response:
    """Run a graph for the authenticated user in the session of `stateKey`.

    A run that fails answers 502 `run_failed` (500 `internal_error` when
    something other than a node failed), with the run's ids in the body.
    A graph that does not run on the user path answers 403 `graph_not_allowed`.
    A client that disconnects before the answer aborts the run.
    """
    graph = registry.get(body.graph_id)
    if graph is None:
        raise ApiError(404, "unknown_graph", f"graph {body.graph_id!r} does not exist")
    if not graph.runs_on("user"):
        raise ApiError(
            403, "graph_not_allowed",
            f"graph {graph.id!r} cannot run from chat; it runs on the governance path only",
        )
    state_key = body.state_key or uuid.uuid4().hex
    caller = user_caller(
        user=user, state_key=state_key, graph_id=graph.id, request_id=request_id,
        run_id=uuid.uuid4().hex, extra_tags=executor.trace_tags,
        client_request_id=client_request_id,
    )
    if body.stream:
        return RunEventStream(
            executor=executor, graph=graph, run_input=body.run_input(), caller=caller,
            state_key=state_key,
        )
    with bind_caller(caller):
        try:
            outcome = await _run_while_connected(request, executor, graph, body.run_input())
        except GraphRunError as exc:
            _mark_server_span(lambda: exc.status_message)
            ids = _run_ids(caller, state_key, exc.trace_id)
            raise ApiError(502, "run_failed", str(exc), extra=ids) from exc
        except Exception as exc:
            logger.exception("graph %s: run %s failed", graph.id, caller.run_id)
            # Not a node's failure: its message may hold anything, whatever the account's
            # masking, so the span gets the error's type only.
            _mark_server_span(lambda: error_message(exc, mask_content=True))
            ids = _run_ids(caller, state_key, current_trace_id())
            raise ApiError(500, "internal_error", "internal server error", extra=ids) from exc
    if outcome is None:
        raise ApiError(_CLIENT_CLOSED_REQUEST, "client_closed_request", CLIENT_DISCONNECTED)
    return ChatResponse(
        run_id=caller.run_id,
        trace_id=outcome.trace_id,
        session_id=caller.session_id,
        state_key=state_key,
        output=MessageBody(role="assistant", content=outcome.answer),
    )


async def _run_while_connected(
    request: Request, executor: GraphExecutor, graph: Graph, run_input: RunInput
) -> RunOutcome | None:
    """The run's outcome; None when the client disconnected first and the run was cancelled.

    The body has been read, so the next message the server hands over is the
    client's disconnect (or, once the response is sent, the end of the request).
    As in `service.streaming`, the run's spans then end with the outcome
    `aborted`, saying the client disconnected.
    """
    outcome: RunOutcome | None = None
    failure: Exception | None = None
    with recording_abort_reason() as abort_reason:
        async with anyio.create_task_group() as group:

            async def cancel_on_disconnect() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                abort_reason.reason = CLIENT_DISCONNECTED
                group.cancel_scope.cancel()

            group.start_soon(cancel_on_disconnect)
            try:
                outcome = await executor.run(graph, run_input)
            except Exception as exc:
                # Raised below, outside the task group, as itself (not in an ExceptionGroup).
                failure = exc
            group.cancel_scope.cancel()  # the run is over: stop listening
    if failure is not None:
        raise failure
    return outcome


def _run_ids(caller: CallerContext, state_key: str, trace_id: str | None) -> dict[str, object]:
    ids = ChatRunIds(
        run_id=caller.run_id, trace_id=trace_id, session_id=caller.session_id,
        state_key=state_key,
    )
    return ids.model_dump(mode="json", by_alias=True)


def _mark_server_span(status_message: Callable[[], str]) -> None:
    """Give the HTTP server span, which its instrumentation marks ERROR, the error's message.

    The message is made (its text scrubbed) only for a span that records.
    """
    # The run's spans have ended: the current span is the server span again.
    span = trace.get_current_span()
    if span.is_recording():
        mark_failed_request(span, status_message())
