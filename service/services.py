"""The long-lived objects of a running service, opened and closed by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from opentelemetry.trace import Tracer

from service.config import Settings
from service.graphs import GraphExecutor, GraphRegistry, default_registry
from service.llm import LLMProvider, build_provider
from service.idempotency import IdempotencyPolicy, pruning_periodically
from service.store import Database

__all__ = ["Services", "open_services"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What request handlers use; one instance per running app."""

    database: Database
    registry: GraphRegistry
    executor: GraphExecutor
    idempotency: IdempotencyPolicy


@asynccontextmanager
async def open_services(
    settings: Settings, *, tracer: Tracer, llm: LLMProvider | None = None
) -> AsyncIterator[Services]:
    """Open the database (schema migrated) and the LLM client (unless `llm` is given).

    While open, finished idempotency keys past IDEMPOTENCY_RETENTION_HOURS are pruned
    hourly. On exit the pruning stops and every database connection is closed.
    """
    database = Database.from_url(settings.database_url, pool_size=settings.database_pool_size)
    try:
        await asyncio.to_thread(database.migrate)
        idempotency = IdempotencyPolicy.from_settings(settings)
        pruning = asyncio.create_task(
            pruning_periodically(database, idempotency),
            name="idempotency-pruning",
        )
        try:
            async with httpx.AsyncClient(timeout=settings.llm_timeout_seconds) as client:
                yield Services(
                    database=database,
                    registry=default_registry(),
                    executor=GraphExecutor(
                        tracer=tracer,
                        llm=llm or build_provider(settings, client),
                        environment=settings.deploy_environment,
                        prices=settings.llm_prices,
                        run_timeout=settings.run_timeout_seconds,
                    ),
                    idempotency=idempotency,
                )
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
    finally:
        await asyncio.to_thread(database.close)
