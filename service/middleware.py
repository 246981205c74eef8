"""Request ids: the service makes its own for every request and echoes it back.

A client's X-Request-ID is never the request id: the id in a trace's metadata
is one the service chose, so a client cannot make its requests look like
another's. A well-formed one is kept as the client's own (`client_request_id`).
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "get_client_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class RequestIdMiddleware:
    """Puts a new request id in `request.state.request_id` and the response header.

    A well-formed X-Request-ID from the client goes to `request.state.client_request_id`
    (None when absent or malformed).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_request_id"] = (
            offered if offered and _WELL_FORMED.fullmatch(offered) else None
        )

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_request_id)


async def get_client_request_id(request: Request) -> str | None:
    """The well-formed X-Request-ID the client sent, if any (a dependency)."""
    value = getattr(request.state, "client_request_id", None)
    return value if isinstance(value, str) else None
