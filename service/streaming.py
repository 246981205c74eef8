"""A chat run answered as server-sent events: `chunk` events, then `done` or `error`.

The run happens while the response is being sent, after the route returned,
so the caller is bound here, around the run, in the task that sends the
response. The response listens for the client going away and then cancels the
run: its spans end with the outcome `aborted`, saying the client disconnected,
before the response returns, so the HTTP server span, which ends when the app
returns, is the last to end.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.graphs import Graph, GraphExecutor, GraphRunError, RunInput
from service.graphs.outcome import recording_abort_reason
from service.schemas import ChatRunIds
from service.caller import CallerContext, bind_caller

__all__ = ["CLIENT_DISCONNECTED", "RunEventStream", "format_event"]

CLIENT_DISCONNECTED = "the client disconnected"

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

SendEvent = Callable[[str, dict[str, Any]], Awaitable[None]]


def format_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event whose data is a single line of JSON."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


class RunEventStream(Response):
    """Runs a graph for `caller`, streaming the answer as `text/event-stream`.

    Events: `chunk` `{"content"}` for each piece of the answer; then either
    `done` `{"runId", "traceId", "sessionId", "stateKey"}` or `error`
    `{"error", "message", "runId", "traceId", "sessionId", "stateKey"}`.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        executor: GraphExecutor,
        graph: Graph,
        run_input: RunInput,
        caller: CallerContext,
        state_key: str,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(_HEADERS)
        self._executor = executor
        self._graph = graph
        self._run_input = run_input
        self._caller = caller
        self._state_key = state_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        client_gone = anyio.Event()
        with recording_abort_reason() as abort_reason:
            async with anyio.create_task_group() as group:

                def abort() -> None:
                    abort_reason.reason = CLIENT_DISCONNECTED
                    client_gone.set()
                    group.cancel_scope.cancel()

                async def cancel_on_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    abort()

                async def send_event(event: str, data: dict[str, Any]) -> None:
                    body = format_event(event, data)
                    message = {"type": "http.response.body", "body": body, "more_body": True}
                    try:
                        await send(message)
                    except OSError:
                        # The server could not write to the client: it is gone.
                        abort()
                        await anyio.lowlevel.checkpoint()  # raises the cancellation here

                group.start_soon(cancel_on_disconnect)
                await self._run(send_event)
                group.cancel_scope.cancel()  # the run is over: stop listening
        if not client_gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _run(self, send_event: SendEvent) -> None:
        caller = self._caller

        def ids(trace_id: str | None) -> dict[str, Any]:
            run_ids = ChatRunIds(
                run_id=caller.run_id, trace_id=trace_id, session_id=caller.session_id,
                state_key=self._state_key,
            )
            return run_ids.model_dump(mode="json", by_alias=True)

        async def on_chunk(text: str) -> None:
            await send_event("chunk", {"content": text})

        with bind_caller(caller):
            try:
                outcome = await self._executor.run(self._graph, self._run_input, on_chunk=on_chunk)
            except GraphRunError as exc:
                failure = {"error": "run_failed", "message": str(exc)}
                await send_event("error", {**failure, **ids(exc.trace_id)})
                return
            await send_event("done", ids(outcome.trace_id))
