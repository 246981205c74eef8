"""SQLite store of what the development sink received: one row per request, one per span."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.otlp import SpanRecord

__all__ = ["RequestRecord", "SinkStore", "connect"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT,
    content_encoding TEXT,
    ingestion_version TEXT,
    auth_ok INTEGER NOT NULL,
    body_bytes INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests(id),
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_time_unix_nano INTEGER NOT NULL,
    end_time_unix_nano INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    attributes TEXT NOT NULL,
    resource_attributes TEXT NOT NULL,
    scope_name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
"""


@dataclass(frozen=True)
class RequestRecord:
    """The parts of one export request that matter for Langfuse's contract."""

    status: int
    content_type: str | None
    content_encoding: str | None
    ingestion_version: str | None
    auth_ok: bool
    body_bytes: int
    span_count: int = 0
    error: str | None = None


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (and create) the sink database; WAL so readers in other processes never block it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(_SCHEMA)
    return connection


class SinkStore:
    """Writes requests and spans; reads them back for the inspection endpoints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path)

    def close(self) -> None:
        self._db.close()

    def record(self, request: RequestRecord, spans: Sequence[SpanRecord] = ()) -> int:
        """Store one request and, all together, its spans; returns the request id."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO requests (received_at, status, content_type, content_encoding,"
                " ingestion_version, auth_ok, body_bytes, span_count, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    request.status,
                    request.content_type,
                    request.content_encoding,
                    request.ingestion_version,
                    int(request.auth_ok),
                    request.body_bytes,
                    len(spans),
                    request.error,
                ),
            )
            request_id = int(cursor.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO spans (request_id, trace_id, span_id, parent_span_id, name, kind,"
                " start_time_unix_nano, end_time_unix_nano, status_code, attributes,"
                " resource_attributes, scope_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        request_id,
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                        span.name,
                        span.kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        span.status_code,
                        json.dumps(span.attributes, sort_keys=True),
                        json.dumps(span.resource_attributes, sort_keys=True),
                        span.scope_name,
                    )
                    for span in spans
                ],
            )
        return request_id

    def spans(self, *, limit: int = 10_000) -> list[dict[str, Any]]:
        """Stored spans, oldest first, with the headers of the request that carried each."""
        rows = self._db.execute(
            "SELECT s.*, r.content_encoding, r.ingestion_version, r.auth_ok, r.content_type"
            " FROM spans s JOIN requests r ON r.id = s.request_id ORDER BY s.id LIMIT ?",
            (limit,),
        ).fetchall()
        return [_span_row(row) for row in rows]

    def requests(self, *, limit: int = 1_000) -> list[dict[str, Any]]:
        """The most recent requests, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM requests ORDER BY id DESC LIMIT ?) ORDER BY id",
            (limit,),
        ).fetchall()
        return [dict(row) | {"auth_ok": bool(row["auth_ok"])} for row in rows]

    def stats(self) -> dict[str, Any]:
        """Counts: requests by status, spans, distinct traces, largest request body."""
        by_status = self._db.execute(
            "SELECT status, COUNT(*) AS n FROM requests GROUP BY status"
        ).fetchall()
        spans, traces = self._db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT trace_id) FROM spans"
        ).fetchone()
        (max_body,) = self._db.execute(
            "SELECT COALESCE(MAX(body_bytes), 0) FROM requests"
        ).fetchone()
        return {
            "requests": {str(row["status"]): row["n"] for row in by_status},
            "spans": spans,
            "traces": traces,
            "max_body_bytes": max_body,
        }

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._db:
            self._db.execute("DELETE FROM spans")
            self._db.execute("DELETE FROM requests")


def _span_row(row: sqlite3.Row) -> dict[str, Any]:
    span = dict(row)
    span["attributes"] = json.loads(span["attributes"])
    span["resource_attributes"] = json.loads(span["resource_attributes"])
    span["auth_ok"] = bool(span["auth_ok"])
    return span
