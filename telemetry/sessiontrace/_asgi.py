"""SessionMiddleware: binds a request's session around the whole ASGI app, for any framework.

A FastAPI dependency with `yield` runs in a context of its own: a `bind_session` there
binds nothing the endpoint or its spans see, sync or async. A middleware is the one
place that wraps every part of a request in one context: dependencies, the endpoint
(sync endpoints run in a thread that copies it), background work the route awaits, and
the response. An ASGI middleware is a plain callable, so no framework is imported here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sessiontrace._context import SessionContext, binding

__all__ = ["SessionMiddleware", "SessionResolver"]

# The ASGI types, spelled as Starlette spells them, so it accepts this class as middleware.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
SessionResolver = Callable[[Scope], SessionContext | None | Awaitable[SessionContext | None]]

_BOUND_SCOPES = ("http", "websocket")


class SessionMiddleware:
    """Binds the session `resolve` finds for each request around the app.

    `resolve(scope)` gets the ASGI scope of an HTTP or WebSocket request
    (headers, path, and whatever outer middleware put there) and returns its
    `SessionContext`, or None for a request that belongs to no session (a
    health probe); it may be async. Its exceptions propagate, as a failing
    dependency's do. Inside OpenTelemetry's ASGI middleware, where
    `app.add_middleware` puts it, the HTTP server span is open when the
    session is bound: it is stamped as the trace's root, and every span of the
    request, the ASGI receive and send spans too, carries the session.

    Args:
        app: the ASGI application to wrap.
        resolve: the request's session, from its scope.
    """

    def __init__(self, app: ASGIApp, *, resolve: SessionResolver) -> None:
        self.app = app
        self._resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _BOUND_SCOPES:  # lifespan
            await self.app(scope, receive, send)
            return
        session = self._resolve(scope)
        if inspect.isawaitable(session):
            session = await session
        if session is None:
            await self.app(scope, receive, send)
            return
        with binding(session):
            await self.app(scope, receive, send)
