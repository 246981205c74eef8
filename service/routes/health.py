"""Liveness and readiness probes (not traced)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter

from service.deps import DatabaseDep
from service.errors import ApiError

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(database: DatabaseDep) -> dict[str, str]:
    """The process can serve: its database answers with the current schema."""
    try:
        await asyncio.to_thread(database.ping)
    except Exception as exc:
        logger.warning("readiness check failed: %s", exc)
        raise ApiError(503, "not_ready", "the database is not available") from exc
    return {"status": "ready"}
