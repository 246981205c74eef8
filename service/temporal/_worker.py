"""`python -m service worker`: runs the firings Temporal's schedules start, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from service.config import Settings
from service.temporal._activity import FiringActivity
from service.temporal._client import TemporalError, connect
from service.temporal._workflow import GovernanceFiring

__all__ = ["run_worker", "worker_tracer_provider"]

logger = logging.getLogger(__name__)

# A stopping worker lets a firing in flight finish this long; after that it is cancelled and
# Temporal hands it to another worker (same Idempotency-Key: still one run).
_GRACEFUL_SHUTDOWN = dt.timedelta(seconds=10)
_DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"


def worker_tracer_provider(settings: Settings) -> TracerProvider:
    """The worker's own spans, over OTLP/HTTP (OTEL_EXPORTER_OTLP_* as the service reads them).

    They carry no session: the collector's Langfuse pipeline drops them
    (`filter/langfuse_runs`), the operations pipeline keeps them. OTEL_SDK_DISABLED=true turns
    them off. A plain SDK provider, not `configure_tracing`: its SessionSpanProcessor would
    count every one of these spans as a span missing its session.
    """
    resource = Resource.create({
        SERVICE_NAME: f"{settings.service_name}-worker",
        _DEPLOYMENT_ENVIRONMENT: settings.deploy_environment,
    })
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


async def run_worker(
    settings: Settings, *, tracer: Tracer, started: Callable[[], None] | None = None
) -> None:
    """Poll TEMPORAL_TASK_QUEUE for firings until SIGTERM or SIGINT; `started` once polling."""
    if not settings.scheduler_api_token.get_secret_value().strip():
        raise TemporalError(
            "SCHEDULER_API_TOKEN is not set: the internal runs route refuses every firing"
        )
    client = await connect(settings)
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[GovernanceFiring],
        activities=[FiringActivity(settings, tracer=tracer).fire],
        # The workflow's models (service.schedules, service.schemas) are plain data: imported
        # once, outside the sandbox, rather than re-imported for every workflow run.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("service")
        ),
        graceful_shutdown_timeout=_GRACEFUL_SHUTDOWN,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with worker:
            logger.info(
                "worker polling task queue %r in namespace %r at %s; firing through %s",
                settings.temporal_task_queue, settings.temporal_namespace,
                settings.temporal_address, settings.service_url,
            )
            if started is not None:
                started()
            await stop.wait()
            logger.info("worker stopping: firings in flight get %s to finish", _GRACEFUL_SHUTDOWN)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    logger.info("worker stopped")
