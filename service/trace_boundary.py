"""Every request starts its own trace: trace context sent by clients is dropped.

A client that reuses one `traceparent` for two conversations would put two
sessions in one trace, which Langfuse then lists under both. So the service is
a trace boundary: it removes propagation headers before the OpenTelemetry
middleware extracts them. (Identity never came from them: the session
processor ignores baggage; this also keeps client baggage from travelling on.)
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DropClientTraceContext", "make_trace_boundary"]

_DROPPED = frozenset(
    {b"traceparent", b"tracestate", b"baggage", b"b3", b"uber-trace-id"}
)
_DROPPED_PREFIXES = (b"x-b3-", b"uberctx-")


class DropClientTraceContext:
    """ASGI middleware removing trace propagation headers from HTTP requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            kept = [(name, value) for name, value in headers if not _is_trace_header(name)]
            if len(kept) != len(headers):
                scope = {**scope, "headers": kept}
        await self.app(scope, receive, send)


def make_trace_boundary(app: FastAPI) -> None:
    """Put DropClientTraceContext outside the whole stack, OpenTelemetry's middleware included.

    Call after `FastAPIInstrumentor.instrument_app`, which installs its
    middleware outermost by replacing `build_middleware_stack` the same way.
    """
    build_instrumented: Callable[[], ASGIApp] = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return DropClientTraceContext(build_instrumented())

    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010


def _is_trace_header(name: bytes) -> bool:
    lowered = name.lower()
    return lowered in _DROPPED or lowered.startswith(_DROPPED_PREFIXES)
