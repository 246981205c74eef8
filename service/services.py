"""The long-lived objects of a running service, opened and closed by the lifespan."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from opentelemetry.trace import Tracer

from service.config import Settings
from service.graphs import GraphExecutor, GraphRegistry, default_registry
from service.llm import LLMProvider, build_provider
from service.store import Database, account_masks_content

__all__ = ["Services", "open_services"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What request handlers use; one instance per running app."""

    database: Database
    registry: GraphRegistry
    executor: GraphExecutor


@asynccontextmanager
async def open_services(
    settings: Settings, *, tracer: Tracer, llm: LLMProvider | None = None
) -> AsyncIterator[Services]:
    """Create the schema, open the LLM client (unless `llm` is given); close it on exit."""
    database = Database.from_url(settings.database_url)
    await asyncio.to_thread(database.migrate)
    async with httpx.AsyncClient(timeout=settings.llm_timeout_seconds) as client:
        yield Services(
            database=database,
            registry=default_registry(),
            executor=GraphExecutor(
                tracer=tracer,
                llm=llm or build_provider(settings, client),
                environment=settings.deploy_environment,
                prices=settings.llm_prices,
                masks_content=functools.partial(account_masks_content, database),
                run_timeout=settings.run_timeout_seconds,
            ),
        )
