"""One JSON error shape for every failure: `{"error": code, "message": text}`.

An error may add fields after those two (a failed run adds its ids), never replace them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.store.database import (
    BUSY_TIMEOUT_SECONDS,
    DATABASE_ERRORS,
    DatabaseNotAnswering,
    is_busy,
)

__all__ = ["ApiError", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)

# How long a client told the database was busy should wait before retrying.
_DATABASE_BUSY_RETRY_AFTER = "2"


class ApiError(Exception):
    """A client-facing failure with its status code, stable code and message.

    Args:
        extra: more fields of the body (JSON values), e.g. the ids of a failed run.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def error_response(
    status_code: int, code: str, message: str, *, headers: Mapping[str, str] | None = None,
    details: list[dict[str, str]] | None = None, extra: Mapping[str, object] | None = None,
) -> JSONResponse:
    """The JSON response of an error; `extra` fields never replace `error` or `message`."""
    body: dict[str, object] = {"error": code, "message": message}
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.code, exc.message, headers=exc.headers, extra=exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # 400, not FastAPI's 422, on every route; the offending values are not
    # echoed back (they may hold secrets), only where and what.
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": ".".join(str(part) for part in error.get("loc", ())), "message": error["msg"]}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{d['loc']}: {d['message']}" for d in details[:5])
    return error_response(400, "invalid_request", summary or "invalid request", details=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A lock held past the busy timeout (a long write, a backup), or a Postgres
    # server out of reach, is temporary: 503 with Retry-After, not an internal error. Nothing a
    # request did before it failed is kept (each write is one transaction),
    # so retrying is safe; a run whose outcome could not be stored answers
    # that outcome instead (service.routes.runs).
    if not is_busy(exc):
        raise exc  # an unexpected error: 500 internal_error, traceback logged
    logger.warning("%s %s: the database is busy: %s", request.method, request.url.path, exc)
    return error_response(
        503, "database_busy",
        f"the database stayed locked for over {BUSY_TIMEOUT_SECONDS:g} s, could not be "
        "reached or did not answer; retry shortly",
        headers={"Retry-After": _DATABASE_BUSY_RETRY_AFTER},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this handler, so the server logs the traceback.
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_error in (*DATABASE_ERRORS, DatabaseNotAnswering):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
