"""Liveness and readiness probes (not traced)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.deps import DatabaseDep
from service.errors import ApiError
from service.store import Database
from service.store.database import in_thread
from sessiontrace import SpanSpool, SpoolStats

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def get_span_spool(request: Request) -> SpanSpool | None:
    """The spool of the provider the app built (none with an injected provider)."""
    spool = getattr(request.app.state, "span_spool", None)
    return spool if isinstance(spool, SpanSpool) else None


SpanSpoolDep = Annotated[SpanSpool | None, Depends(get_span_spool)]


@router.get("/readyz")
async def readyz(database: DatabaseDep, spool: SpanSpoolDep) -> dict[str, object]:
    """The process can serve: its database answers with the current schema.

    Also what the span spool holds and what it lost, as detail: spans waiting for the
    collector do not make the service unready.
    """
    try:
        await in_thread(Database.ping, database)
    except Exception as exc:
        logger.warning("readiness check failed: %s", exc)
        raise ApiError(503, "not_ready", "the database is not available") from exc
    if spool is None:
        return {"status": "ready"}
    return {"status": "ready", "spanSpool": _spool_detail(spool.stats())}


def _spool_detail(stats: SpoolStats) -> dict[str, int]:
    return {
        "files": stats.files,
        "bytes": stats.bytes,
        "maxBytes": stats.max_bytes,
        "spooledSpans": stats.spooled_spans,
        "deliveredSpans": stats.delivered_spans,
        "droppedSpans": stats.dropped_spans,
        "rejectedSpans": stats.rejected_spans,
    }
