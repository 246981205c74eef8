"""DEVELOPMENT SINK: a local OTLP capture endpoint that enforces Langfuse's ingestion contract.

Not a Langfuse replacement: it has no UI, no sessions, no storage beyond one SQLite file. It
answers `POST /api/public/otel/v1/traces` the way Langfuse's OTLP endpoint does (Basic auth,
protobuf or OTLP/JSON, gzip only, ingestion version <= 4, all-or-nothing 400 on a bad id) so the
collector path can be exercised without a Langfuse instance, and it records what it received.

Development routes, for tests and `make run`:
  POST /_dev/fault {"status": 503}   answer every export with that status until cleared
  DELETE /_dev/fault                 clear the fault
  GET /_dev/spans, /_dev/requests, /_dev/stats; POST /_dev/reset; GET /_dev/health

Run: `python -m devstack.sink --port 4319 --db var/devsink.sqlite3` (or the DEVSINK_* variables).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import hmac
import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.otlp import InvalidExport, SpanRecord, decode_json, decode_protobuf
from devstack.store import RequestRecord, SinkStore

__all__ = ["DEV_PUBLIC_KEY", "DEV_SECRET_KEY", "TRACES_PATH", "SinkSettings", "create_app", "main"]

logger = logging.getLogger(__name__)

TRACES_PATH = "/api/public/otel/v1/traces"
# Dev-only credentials, used when none are given; never valid against a real Langfuse.
DEV_PUBLIC_KEY = "pk-lf-devsink"
DEV_SECRET_KEY = "sk-lf-devsink"
MAX_INGESTION_VERSION = 4
MAX_BODY_BYTES = 5 * 1024 * 1024  # Langfuse Cloud's documented request limit
_DECODERS = {"application/x-protobuf": decode_protobuf, "application/json": decode_json}
_NUMBER = re.compile(r"\s*[0-9]+\s*")


@dataclass(frozen=True)
class SinkSettings:
    """Where the sink listens, what it stores to, and the key pair it accepts."""

    host: str = "127.0.0.1"
    port: int = 4319
    db: str = "var/devsink.sqlite3"
    public_key: str = DEV_PUBLIC_KEY
    secret_key: str = DEV_SECRET_KEY


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(settings: SinkSettings, store: SinkStore) -> Starlette:
    """The sink as an ASGI app writing to `store`."""
    expected = f"{settings.public_key}:{settings.secret_key}".encode()
    fault: dict[str, int | None] = {"status": None}

    async def export(request: Request) -> Response:
        headers = request.headers
        body = await request.body()
        auth_ok = _auth_ok(headers.get("authorization", ""), expected)
        record = RequestRecord(
            status=200,
            content_type=headers.get("content-type"),
            content_encoding=headers.get("content-encoding"),
            ingestion_version=headers.get("x-langfuse-ingestion-version"),
            auth_ok=auth_ok,
            body_bytes=len(body),
        )
        spans: Sequence[SpanRecord] = ()
        try:
            if fault["status"] is not None:
                raise _Rejected(fault["status"], "fault injected by /_dev/fault")
            if not auth_ok:
                raise _Rejected(401, "invalid or missing Basic credentials")
            spans = _decode(record, body)
        except _Rejected as rejected:
            record = replace(record, status=rejected.status, error=str(rejected))
            store.record(record)
            logger.info("export rejected with %d: %s", rejected.status, rejected)
            return JSONResponse({"error": str(rejected)}, status_code=rejected.status)
        store.record(record, spans)
        return JSONResponse({})

    async def set_fault(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or "status" not in payload:
            return JSONResponse({"error": 'expected {"status": <4xx/5xx or null>}'}, 400)
        status = payload["status"]
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            return JSONResponse({"error": "status must be an HTTP error code or null"}, 400)
        fault["status"] = status
        return JSONResponse({"fault": status})

    async def clear_fault(request: Request) -> Response:
        fault["status"] = None
        return JSONResponse({"fault": None})

    async def spans(request: Request) -> Response:
        return JSONResponse(store.spans(limit=int(request.query_params.get("limit", 10_000))))

    async def requests(request: Request) -> Response:
        return JSONResponse(store.requests(limit=int(request.query_params.get("limit", 1_000))))

    async def stats(request: Request) -> Response:
        return JSONResponse(store.stats() | {"fault": fault["status"]})

    async def reset(request: Request) -> Response:
        store.clear()
        return JSONResponse({"reset": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sink": "development"})

    return Starlette(
        routes=[
            Route(TRACES_PATH, export, methods=["POST"]),
            Route("/_dev/fault", set_fault, methods=["POST"]),
            Route("/_dev/fault", clear_fault, methods=["DELETE"]),
            Route("/_dev/spans", spans, methods=["GET"]),
            Route("/_dev/requests", requests, methods=["GET"]),
            Route("/_dev/stats", stats, methods=["GET"]),
            Route("/_dev/reset", reset, methods=["POST"]),
            Route("/_dev/health", health, methods=["GET"]),
        ]
    )


def _auth_ok(header: str, expected: bytes) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def _decode(record: RequestRecord, body: bytes) -> list[SpanRecord]:
    media_type = (record.content_type or "").split(";")[0].strip().lower()
    decoder = _DECODERS.get(media_type)
    if decoder is None:
        raise _Rejected(400, f"unsupported content type {record.content_type!r}")
    encoding = (record.content_encoding or "").strip().lower()
    if encoding not in ("", "gzip"):
        raise _Rejected(400, f"unsupported content encoding {record.content_encoding!r}")
    version = record.ingestion_version
    if version is not None and (
        not _NUMBER.fullmatch(version) or int(version) > MAX_INGESTION_VERSION
    ):
        raise _Rejected(400, f"invalid x-langfuse-ingestion-version {version!r}")
    if len(body) > MAX_BODY_BYTES:
        raise _Rejected(413, f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise _Rejected(400, f"body is not valid gzip: {exc}") from exc
    try:
        return decoder(body)
    except InvalidExport as exc:
        raise _Rejected(400, str(exc)) from exc


def _settings(argv: Sequence[str] | None) -> SinkSettings:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m devstack.sink",
        description="Development OTLP sink that enforces Langfuse's ingestion contract."
        " Not a Langfuse replacement.",
    )
    parser.add_argument("--host", default=env.get("DEVSINK_HOST", SinkSettings.host))
    parser.add_argument("--port", type=int, default=int(env.get("DEVSINK_PORT", SinkSettings.port)))
    parser.add_argument("--db", default=env.get("DEVSINK_DB", SinkSettings.db))
    parser.add_argument("--public-key", default=env.get("DEVSINK_PUBLIC_KEY", DEV_PUBLIC_KEY))
    parser.add_argument("--secret-key", default=env.get("DEVSINK_SECRET_KEY", DEV_SECRET_KEY))
    args = parser.parse_args(argv)
    if not args.public_key or not args.secret_key:
        parser.error("the public and secret keys must be non-empty")
    return SinkSettings(args.host, args.port, args.db, args.public_key, args.secret_key)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the development sink until interrupted."""
    import uvicorn

    settings = _settings(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    store = SinkStore(settings.db)
    logger.info(
        "development sink (not Langfuse) on http://%s:%d%s, storing to %s",
        settings.host,
        settings.port,
        TRACES_PATH,
        settings.db,
    )
    app = create_app(settings, store)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        store.close()


if __name__ == "__main__":
    main()
