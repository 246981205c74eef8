"""The service traced a peer's way, for bench/service_peers.py: the Langfuse SDK or contrib baggage.

The app is the service's own (`create_app(settings, tracer_provider=...)`), served as
`python -m service serve` serves it (same logging, `uvicorn.run(..., reset_contextvars=True)`);
only the injected TracerProvider and one ASGI middleware differ:

- langfuse: `LangfuseSpanProcessor` (langfuse's BatchSpanProcessor subclass and its OTLP/HTTP
  exporter, gzip by default) posting to LANGFUSE_BASE_URL with LANGFUSE_PUBLIC_KEY/SECRET_KEY;
  `should_export_span` keeps every span (the default keeps LLM spans only). The middleware wraps
  each request in `propagate_attributes(session_id=..., user_id=...)`, which stamps the open HTTP
  server span and every span started inside.
- baggage: contrib's `BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS)`, then the SDK's
  `BatchSpanProcessor` with the plain `OTLPSpanExporter` (OTEL_EXPORTER_OTLP_* variables). The
  middleware puts `session.id` and `user.id` in the baggage of the attached context, and sets them
  on the HTTP server span by hand: the processor stamps spans only as they start.

The middleware runs inside the HTTP server span. It knows each request's session and user from
BENCH_PEER_CALLERS, a JSON object from an `Authorization` header value to `[session_id,
user_id]` (the values the route derives: the bench checks them at the endpoint), so it does
no authentication or body parsing of its own; the route still does both, as in every variant.

Usage: python bench/peer_service.py {langfuse,baggage} [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from importlib.metadata import version

import uvicorn
from langfuse import propagate_attributes
from langfuse._client.span_processor import LangfuseSpanProcessor
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings, get_settings
from service.main import create_app
from sessiontrace.attributes import DEPLOYMENT_ENVIRONMENT_NAME, SESSION_ID, USER_ID

__all__ = ["WAYS", "BaggageCallers", "LangfuseCallers", "build_provider", "main"]

CALLERS_ENV = "BENCH_PEER_CALLERS"
Callers = Mapping[bytes, tuple[str, str]]


def _caller(scope: Scope, callers: Callers) -> tuple[str, str] | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            return callers.get(value)
    return None


class _CallerMiddleware:
    """ASGI middleware handing each request's session and user to a peer's mechanism."""

    def __init__(self, app: ASGIApp, *, callers: Callers) -> None:
        self.app = app
        self._callers = callers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class LangfuseCallers(_CallerMiddleware):
    """Each request inside `propagate_attributes(session_id=..., user_id=...)`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = _caller(scope, self._callers) if scope["type"] == "http" else None
        if caller is None:
            await self.app(scope, receive, send)
            return
        with propagate_attributes(session_id=caller[0], user_id=caller[1]):
            await self.app(scope, receive, send)


class BaggageCallers(_CallerMiddleware):
    """Each request with session.id and user.id in its baggage, and on its server span."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = _caller(scope, self._callers) if scope["type"] == "http" else None
        if caller is None:
            await self.app(scope, receive, send)
            return
        session_id, user_id = caller
        trace.get_current_span().set_attributes({SESSION_ID: session_id, USER_ID: user_id})
        context = baggage.set_baggage(USER_ID, user_id, baggage.set_baggage(SESSION_ID, session_id))
        token = otel_context.attach(context)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


WAYS: dict[str, type[_CallerMiddleware]] = {
    "langfuse": LangfuseCallers, "baggage": BaggageCallers,
}


def _export_every_span(span: ReadableSpan) -> bool:
    return True


def build_provider(way: str, settings: Settings) -> TracerProvider:
    """A TracerProvider with the service's resource and the peer's processors."""
    resource = Resource.create({
        SERVICE_NAME: settings.service_name,
        SERVICE_VERSION: version("sessiontrace-service"),
        DEPLOYMENT_ENVIRONMENT_NAME: settings.deploy_environment,
    })
    provider = TracerProvider(resource=resource)
    if way == "langfuse":
        provider.add_span_processor(LangfuseSpanProcessor(
            public_key=os.environ["LANGFUSE_PUBLIC_KEY"],
            secret_key=os.environ["LANGFUSE_SECRET_KEY"],
            base_url=os.environ["LANGFUSE_BASE_URL"],
            should_export_span=_export_every_span,
        ))
    elif way == "baggage":
        provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ValueError(f"way must be one of {', '.join(WAYS)}, got {way!r}")
    return provider


def _callers() -> dict[bytes, tuple[str, str]]:
    text = os.environ.get(CALLERS_ENV, "")
    try:
        table = json.loads(text)
        return {key.encode(): (session, user) for key, (session, user) in table.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise SystemExit(f"{CALLERS_ENV} must be a JSON object of Authorization header "
                         f"values to [session_id, user_id] ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("way", choices=sorted(WAYS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    # As service.cli.main configures it: the access log lines are part of every request's cost.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    callers = _callers()
    settings = get_settings()
    provider = build_provider(args.way, settings)
    try:
        app = create_app(settings, tracer_provider=provider)
        app.add_middleware(WAYS[args.way], callers=callers)
        print(json.dumps({"serving": f"http://{args.host}:{args.port}", "way": args.way}),
              flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_config=None,
                    reset_contextvars=True)
    finally:
        # create_app flushes an injected provider on exit but leaves its shutdown to the owner.
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
