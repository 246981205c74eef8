"""A null Langfuse OTLP/HTTP destination for benchmarks: answers as Langfuse would, stores nothing.

It stands where Langfuse (or the development sink) would, so the collector's whole export path
(persistent queue, batching, gzip, Basic auth, HTTP) runs while the destination costs little.
Like Langfuse's endpoint it answers 401 to wrong Basic credentials, 400 to an encoding other
than gzip or a body that does not decode, 413 over 5 MB, and 200 `{}` otherwise; it takes
protobuf only (what the collector sends; Langfuse also takes OTLP/JSON) and answers 415 to the
rest. What it keeps is counts: spans received and spans carrying a non-empty
`session.id`, so a run can check that every span arrived, exactly once, stamped, at ~2 µs of
CPU a span (gunzip, protobuf parse with upb, one pass over each span's attributes) against
the development sink's ~33 (decode to records, SQLite).

`GET /_stats`: requests, rejected requests, bytes, spans, stamped spans, first and last arrival.

Run: python bench/null_endpoint.py --port 4320 [--public-key pk-lf-bench --secret-key sk-lf-bench]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import time
import zlib
from typing import Any

import uvicorn
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Scope = dict[str, Any]

SESSION_ID = "session.id"
MAX_BODY_BYTES = 5 * 1024 * 1024  # Langfuse Cloud's documented request limit
PUBLIC_KEY = "pk-lf-bench"
SECRET_KEY = "sk-lf-bench"


def count_spans(body: bytes) -> tuple[int, int]:
    """Spans in an ExportTraceServiceRequest, and how many carry a non-empty session.id."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = stamped = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans += 1
                stamped += any(
                    kv.key == SESSION_ID and kv.value.string_value for kv in span.attributes
                )
    return spans, stamped


def check(headers: dict[bytes, bytes], body: bytes, authorization: bytes) -> tuple[int, str]:
    """Langfuse's answer to an export: (status, error); (200, "") when it would take it."""
    if headers.get(b"authorization") != authorization:
        return 401, "invalid or missing Basic credentials"
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type != b"application/x-protobuf":
        return 415, f"this endpoint takes protobuf only, got {content_type!r}"
    if headers.get(b"content-encoding", b"").strip().lower() not in (b"", b"gzip"):
        return 400, "unsupported content encoding"
    if len(body) > MAX_BODY_BYTES:
        return 413, f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}"
    return 200, ""


def make_app(public_key: str, secret_key: str) -> Any:
    authorization = b"Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode())
    stats: dict[str, float] = dict.fromkeys(
        ("requests", "rejected", "bytes", "spans", "stamped", "first_at", "last_at"), 0
    )

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        status, error, spans, stamped = 200, "", 0, 0
        if scope["method"] == "POST":
            headers = dict(scope["headers"])
            stats["bytes"] += len(body)
            status, error = check(headers, body, authorization)
            if status == 200:
                try:
                    if headers.get(b"content-encoding", b"").strip().lower() == b"gzip":
                        body = gzip.decompress(body)
                    spans, stamped = count_spans(body)
                except (OSError, EOFError, zlib.error, DecodeError) as exc:
                    status, error = 400, f"body is not a gzip'd ExportTraceServiceRequest: {exc}"
            now = time.time()
            stats["requests"] += 1
            if status == 200:
                stats["spans"] += spans
                stats["stamped"] += stamped
                stats["first_at"] = stats["first_at"] or now
                stats["last_at"] = now
            else:
                stats["rejected"] += 1
            answer = json.dumps({"error": error} if error else {}).encode()
        else:
            answer = json.dumps(stats).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", default=PUBLIC_KEY)
    parser.add_argument("--secret-key", default=SECRET_KEY)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.public_key, args.secret_key),
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
