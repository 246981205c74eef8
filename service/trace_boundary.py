"""Every request starts its own trace, from an empty context.

Two ways a request could inherit a trace it does not belong to:

- from the server: uvicorn resumes reading a keep-alive connection (after a
  body over its 64 KiB buffer, or pipelined requests) from inside the current
  request's task, so the next request's task is created with a copy of that
  request's context, its HTTP server span and bound caller included. Every
  later request on the connection, of any tenant, would become a child of the
  first. So the boundary attaches an empty OpenTelemetry context for each
  request, whatever the server does (`serve` also runs uvicorn with
  `reset_contextvars=True`);
- from the client: a client that reusing one `traceparent` for two conversations would put
two sessions in one trace, which Langfuse then lists under both. So the
boundary removes propagation headers before the OpenTelemetry middleware
extracts them. (Identity never came from them: the session
processor ignores baggage; this also keeps client baggage from travelling on.)
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from opentelemetry import context as otel_context
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DropClientTraceContext", "make_trace_boundary"]

_DROPPED = frozenset(
    {b"traceparent", b"tracestate", b"baggage", b"b3", b"uber-trace-id"}
)
_DROPPED_PREFIXES = (b"x-b3-", b"uberctx-")


class DropClientTraceContext:
    """ASGI middleware: each HTTP request runs in an empty context, without trace headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            kept = [(name, value) for name, value in headers if not _is_trace_header(name)]
            if len(kept) != len(headers):
                scope = {**scope, "headers": kept}
            token = otel_context.attach(otel_context.Context())
            try:
                await self.app(scope, receive, send)
            finally:
                otel_context.detach(token)
            return
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
