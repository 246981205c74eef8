"""A null OTLP/HTTP destination: answers every POST 200 without decoding it, for benchmarks.

It stands where Langfuse (or the development sink) would, so the collector's whole export path
(persistent queue, batching, gzip, Basic auth, HTTP) runs while the destination costs next to
nothing. `GET /_stats` says how many requests and bytes arrived and when the last one did.

Run: python bench/null_endpoint.py --port 4320
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn

Scope = dict[str, Any]


def make_app() -> Any:
    stats = {"requests": 0, "bytes": 0, "first_at": 0.0, "last_at": 0.0}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            now = time.time()
            stats["requests"] += 1
            stats["bytes"] += size
            stats["first_at"] = stats["first_at"] or now
            stats["last_at"] = now
            body = b"{}"
        else:
            body = json.dumps(stats).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
