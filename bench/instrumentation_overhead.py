"""The HTTP server span's price: opentelemetry-instrumentation-fastapi, recording or not.

One FastAPI app per configuration, with a single trivial `POST /api/v1/ai/chat` route (so the
route's own work does not drown the middleware's), called in-process through its ASGI interface:

  none  no instrumentation
  off   FastAPIInstrumentor.instrument_app as `service.main.create_app` calls it, on a provider
        built with OTEL_SDK_DISABLED=true: the middleware runs, its span does not record
  on    the same on a recording provider: BatchSpanProcessor to an exporter that encodes each
        batch with sessiontrace._otlp_encoder (what DirectOTLPSpanExporter does) and sends nothing

Rounds interleave the configurations after a warm-up; medians of process CPU time per request
(the export thread included). "on - off" is what the server span costs when tracing is on, the
part of the service's on/off gap that comes from the instrumentation issue 2 requires.

Usage: python bench/instrumentation_overhead.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from common import (
    RESULTS_DIR,
    command_line,
    machine_line,
    package_versions,
    utc_now,
    write_results,
)
from sessiontrace._otlp_encoder import TraceRequestEncoder

RESULTS = RESULTS_DIR / "instrumentation_overhead.md"
PACKAGES = ("fastapi", "opentelemetry-sdk", "opentelemetry-instrumentation-fastapi",
            "opentelemetry-instrumentation-asgi")
BODY = b'{"graphId":"builtin:chat","messages":[]}'
SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": "/api/v1/ai/chat", "raw_path": b"/api/v1/ai/chat",
    "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.2"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode())],
}


class EncodingExporter(SpanExporter):
    """Encodes every batch as DirectOTLPSpanExporter would, and sends nothing."""

    def __init__(self) -> None:
        self.encoder = TraceRequestEncoder()
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.encoder.encode(spans)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def build(mode: str) -> tuple[FastAPI, TracerProvider | None, EncodingExporter | None]:
    app = FastAPI()

    @app.post("/api/v1/ai/chat")
    async def chat() -> dict[str, bool]:
        return {"ok": True}

    if mode == "none":
        return app, None, None
    if mode == "off":
        os.environ[OTEL_SDK_DISABLED] = "true"  # read when the provider is built
    try:
        provider = TracerProvider()
    finally:
        os.environ.pop(OTEL_SDK_DISABLED, None)
    exporter = EncodingExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1_000_000))
    # As service.main.create_app calls it.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,
                                       excluded_urls="healthz,readyz",
                                       exclude_spans=["receive", "send"])
    return app, provider, exporter


async def requests(app: FastAPI, count: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(count):
        await app(dict(SCOPE), receive, send)
    if statuses != [200] * count:
        raise SystemExit(f"unexpected answers: {sorted(set(statuses))}")


def measure(apps: dict[str, tuple[FastAPI, TracerProvider | None, Any]], rounds: int,
            count: int) -> dict[str, list[float]]:
    """µs of process CPU per request, per configuration and round (warm-up round dropped)."""
    times: dict[str, list[float]] = {mode: [] for mode in apps}

    async def run() -> None:
        for round_ in range(rounds + 1):
            for mode, (app, provider, _) in apps.items():
                started = time.process_time()
                await requests(app, count)
                if provider is not None:
                    provider.force_flush()  # the export thread's work belongs to the round
                if round_:
                    times[mode].append((time.process_time() - started) / count * 1e6)

    asyncio.run(run())
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 15)
    count = 200 if args.quick else 3000

    apps = {mode: build(mode) for mode in ("none", "off", "on")}
    times = measure(apps, rounds, count)
    exported = apps["on"][2].spans if apps["on"][2] else 0
    expected = (rounds + 1) * count
    if exported != expected or (apps["off"][2] and apps["off"][2].spans):
        print(f"on exported {exported} spans, expected {expected}; off must export none",
              file=sys.stderr)
        return 1

    median = {mode: statistics.median(values) for mode, values in times.items()}
    rows = ["| configuration | µs CPU per request | min–max | added vs none |",
            "|---|--:|--:|--:|"]
    for mode, values in times.items():
        rows.append(f"| {mode} | {median[mode]:.1f} | {min(values):.1f}–{max(values):.1f} "
                    f"| {median[mode] - median['none']:+.1f} |")
    text = f"""# The HTTP server span: opentelemetry-instrumentation-fastapi, recording or not

`{command_line("instrumentation_overhead.py")}`, {utc_now()}.

- Machine: {machine_line()}.
- Python {sys.version.split()[0]}; {package_versions(PACKAGES)}
- {count:,} requests per configuration and round, in-process through ASGI, to a trivial route;
  {rounds} interleaved round(s) after one warm-up round; medians of process CPU time.
- Checked: every request answered 200, and "on" exported one span per request, "off" none.

{chr(10).join(rows)}

- The server span costs **{median['on'] - median['off']:.0f} µs** per request when it records
  ("on" − "off"); the middleware costs {median['off'] - median['none']:.0f} µs even when
  it does not ("off" − "none"), with tracing off as well as on.
- Part of the recording cost is upstream: the ASGI middleware passes its HTTP attributes to
  `start_span` and then sets each of them again with `span.set_attribute`
  (`opentelemetry/instrumentation/asgi/__init__.py`, `OpenTelemetryMiddleware.__call__`).
"""
    write_results(text, None if args.quick else (args.output or RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
