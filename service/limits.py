"""Load limits on the run routes: how many run at once, and bodies refused by their declared size.

200 concurrent 1 MB chats took the process from 74 to 281 MB: each request
holds its body, its parsed messages and its run's payloads until it ends. So
past `limit` requests in flight on a run route, a new one answers 503
`overloaded` with Retry-After before its body is read, and a body that
declares more than the body cap is refused with 413 before a byte of it is
read (one that does not declare its size is cut off by `json_body` while it
is read). Health probes and other routes are never limited.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import MAX_BODY_BYTES
from service.errors import error_response

__all__ = ["RETRY_AFTER_SECONDS", "InFlightLimitMiddleware", "is_run_path"]

RETRY_AFTER_SECONDS = 1
_CHAT_PATH = "/api/v1/ai/chat"
_INTERNAL_PREFIX, _RUNS_SUFFIX = "/api/internal/graphs/", "/runs"


def is_run_path(path: str) -> bool:
    """Whether `path` is a route that starts a run (chat or the internal runs route)."""
    return path == _CHAT_PATH or (
        path.startswith(_INTERNAL_PREFIX) and path.endswith(_RUNS_SUFFIX)
    )


class InFlightLimitMiddleware:
    """ASGI middleware: at most `limit` requests on the run routes at once, in this process.

    A request holds its place until its response has been sent, a streamed
    answer included. The count needs no lock: it is only read and changed on
    the event loop, with no await in between.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.app = app
        self._limit = limit
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests on the run routes being handled now."""
        return self._in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_run_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > MAX_BODY_BYTES:
            refusal = error_response(
                413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes"
            )
            await refusal(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            overloaded = error_response(
                503, "overloaded",
                f"the service is running {self._limit} requests already; retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await overloaded(scope, receive, send)
            return
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # absent or malformed: the server and json_body deal with it
    return int(value)
