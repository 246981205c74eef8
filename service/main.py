"""Builds the FastAPI app: settings, tracing, lifespan, routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from service.config import Settings, get_settings, is_postgres_url, sqlite_path
from service.errors import install_error_handlers
from service.limits import InFlightLimitMiddleware
from service.llm import LLMProvider
from service.middleware import RequestIdMiddleware
from service.request_attributes import make_server_request_hook, request_attribute_limit
from service.routes import chat, health, runs
from service.scheduler import embedded_scheduler
from service.schedules import configured_schedules
from service.services import open_services
from service.trace_boundary import make_trace_boundary
from sessiontrace import ContextPropagatingExecutor, SpanSpool, configure_tracing

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_UNTRACED_URLS = "healthz,readyz"
_FLUSH_TIMEOUT_MS = 10_000
# How long a stopping service still waits for the collector; then the spans left go to the
# spool for the next start. Without it a hung collector holds each export for
# OTEL_EXPORTER_OTLP_TIMEOUT (10 s): three of them made a SIGTERM take 30 s.
_SHUTDOWN_SEND_SECONDS = 5.0
# The BatchSpanProcessor's queue, in spans, unless OTEL_BSP_MAX_QUEUE_SIZE says otherwise:
# four times the SDK's 2,048, for bursts and for the export that finds the collector gone.
_SPAN_QUEUE_SIZE = 8192


def create_app(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    llm_provider: LLMProvider | None = None,
) -> FastAPI:
    """The service app.

    Args:
        settings: overrides `get_settings()` for the app and its dependencies.
        tracer_provider: an injected provider (tests) is flushed on exit but
            not shut down; without one, the app builds its own from settings
            and OTEL_* variables and shuts it down on exit.
        llm_provider: replaces the provider chosen from settings (tests).
    """
    resolved = settings if settings is not None else get_settings()
    owns_provider = tracer_provider is None
    spool = _span_spool(resolved) if owns_provider else None
    provider = tracer_provider or configure_tracing(
        service_name=resolved.service_name,
        service_version=_package_version(),
        environment=resolved.deploy_environment,
        spool=spool,
        max_queue_size=_SPAN_QUEUE_SIZE,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not resolved.scheduler_api_token.get_secret_value():
            logger.warning("SCHEDULER_API_TOKEN is empty: the internal runs route refuses all")
        # run_in_executor does not copy context by itself; this pool does, so
        # work handed to threads keeps the bound caller and its session.
        executor = ContextPropagatingExecutor(thread_name_prefix="sessiontrace")
        asyncio.get_running_loop().set_default_executor(executor)
        try:
            tracer = provider.get_tracer("service")
            async with open_services(resolved, tracer=tracer, llm=llm_provider) as services:
                # A malformed SCHEDULES_FILE (ScheduleFileError) stops start-up here.
                schedules = await asyncio.to_thread(
                    configured_schedules, resolved.schedules_file,
                    known_graphs=services.registry.ids,
                )
                app.state.services = services
                async with embedded_scheduler(
                    resolved, schedules, database=services.database
                ) as scheduler:
                    app.state.scheduler = scheduler
                    yield
        finally:
            app.state.services = None
            app.state.scheduler = None
            executor.shutdown(wait=True)
            _close_provider(provider, shutdown=owns_provider, spool=spool)

    app = FastAPI(title="sessiontrace", version=_package_version() or "0", lifespan=lifespan)
    app.state.settings = resolved
    app.state.span_spool = spool
    install_error_handlers(app)
    # Added first, so it runs inside RequestIdMiddleware: a 503 or 413 still gets its request id.
    app.add_middleware(InFlightLimitMiddleware, limit=resolved.max_inflight_runs)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(runs.router)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=_UNTRACED_URLS,
        # The ASGI receive/send spans start outside the route, before the
        # caller is bound: they would be spans without a session.
        exclude_spans=["receive", "send"],
        # Scrubs secrets from the recorded query and cuts request details
        # (User-Agent, URL, headers) to the attribute length limit.
        server_request_hook=make_server_request_hook(limit=request_attribute_limit()),
    )
    make_trace_boundary(app)
    return app


def _span_spool(settings: Settings) -> SpanSpool | None:
    if settings.sessiontrace_spool_max_bytes == 0:
        return None
    # Next to a SQLite database by default: on the same volume, and one per service instance.
    # A Postgres database has no local file: ./var/spool (replicas on one host set their own).
    directory = settings.sessiontrace_spool_dir or (
        Path("var/spool") if is_postgres_url(settings.database_url)
        else sqlite_path(settings.database_url).parent / "spool"
    )
    return SpanSpool(directory, max_bytes=settings.sessiontrace_spool_max_bytes)


def _close_provider(provider: TracerProvider, *, shutdown: bool, spool: SpanSpool | None) -> None:
    # Telemetry never breaks the service, not even its exit.
    try:
        if spool is not None:
            spool.begin_shutdown(send_timeout=_SHUTDOWN_SEND_SECONDS)
        provider.force_flush(timeout_millis=_FLUSH_TIMEOUT_MS)
        if shutdown:
            provider.shutdown()
    except Exception:
        logger.exception("flushing the tracer provider failed")


def _package_version() -> str | None:
    try:
        return version("sessiontrace-service")
    except PackageNotFoundError:
        return None
