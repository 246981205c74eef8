"""OTLP encoding cost: the SDK's protobuf encoder against sessiontrace._otlp_encoder, side by side.

The spans are the service's own: builtin:chat runs served in-process by `create_app` (offline
LLM provider, SQLite) and recorded with an in-memory exporter, four spans a run (HTTP server,
graph run, node, LLM call). Batches of 512 spans, what the BatchSpanProcessor hands its exporter
by default, are encoded by:

  sdk     encode_spans(batch).SerializePartialToString(), what OTLPSpanExporter does
  direct  sessiontrace._otlp_encoder.TraceRequestEncoder().encode(batch), what
          DirectOTLPSpanExporter does (one encoder for the run, as one per exporter)
  direct, no pair cache   TraceRequestEncoder(reuse_pairs=False): no reuse of repeated pairs

Rounds interleave the encoders after a warm-up; medians of CPU time. The run fails unless both
encoders give the same bytes for every batch.

Usage: python bench/encoder_overhead.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import (
    RESULTS_DIR,
    command_line,
    git_revision,
    machine_line,
    package_versions,
    utc_now,
    write_results,
)

RESULTS = RESULTS_DIR / "encoder_overhead.md"
PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-common", "protobuf")
BATCH = 512
CHAT = {"graphId": "builtin:chat", "stateKey": "bench",
        "messages": [{"role": "user", "content": "Summarise this week's activity in two lines."}]}
GOVERNANCE = {"scheduleId": "governance:bench",
              "input": {"messages": [{"role": "user", "content": "Review this week's activity."}]}}
Encoder = Callable[[Sequence[Any]], bytes]


def service_spans(runs: int, *, governance_runs: int = 0) -> list[Any]:
    """The spans of `runs` builtin:chat runs (then `governance_runs` builtin:governance-review
    runs of one schedule), served in-process and recorded in memory."""
    import httpx
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from devstack.demo import provision_demo
    from service.config import Settings
    from service.main import create_app
    from sessiontrace import configure_tracing

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        account = provision_demo(database_url)
        exporter = InMemorySpanExporter()
        provider = configure_tracing(service_name="bench-encoder", exporter=exporter, batch=False)
        settings = Settings(database_url=database_url, scheduler_enabled=False)
        app = create_app(settings, tracer_provider=provider)
        headers = {"Authorization": f"Bearer {account.api_key}"}
        scheduler = {"Authorization": f"Bearer {settings.scheduler_api_token.get_secret_value()}"}

        async def serve() -> None:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                    for _ in range(runs):
                        answer = await client.post("/api/v1/ai/chat", json=CHAT, headers=headers)
                        answer.raise_for_status()
                    for index in range(governance_runs):
                        answer = await client.post(
                            "/api/internal/graphs/builtin:governance-review/runs",
                            json={**GOVERNANCE, "executionGrantId": account.grant_id},
                            headers={**scheduler, "Idempotency-Key": f"bench:{index}"},
                        )
                        answer.raise_for_status()

        asyncio.run(serve())
        provider.shutdown()
        return list(exporter.get_finished_spans())


def encoders() -> dict[str, Encoder]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from sessiontrace._otlp_encoder import TraceRequestEncoder

    def sdk(batch: Sequence[Any]) -> bytes:
        encoded: bytes = encode_spans(batch).SerializePartialToString()
        return encoded

    return {
        "sdk": sdk,
        "direct": TraceRequestEncoder().encode,
        "direct, no pair cache": TraceRequestEncoder(reuse_pairs=False).encode,
    }


def time_encoder(encode: Encoder, batches: list[list[Any]]) -> float:
    """CPU seconds per span to encode every batch once."""
    started = time.process_time()
    for batch in batches:
        encode(batch)
    return (time.process_time() - started) / sum(len(b) for b in batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few spans, one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 15)
    runs = 64 if args.quick else 1024

    spans = service_spans(runs)
    batches = [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]
    table = encoders()
    for name, encode in table.items():
        mismatched = [i for i, b in enumerate(batches) if encode(b) != table["sdk"](b)]
        if mismatched:
            print(f"{name}: batches {mismatched} differ from the SDK's bytes", file=sys.stderr)
            return 1

    times: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, encode in table.items():
            times[name].append(time_encoder(encode, batches))
    medians = {name: statistics.median(values[1:] or values) for name, values in times.items()}
    spans_per_run = len(spans) / runs

    rows = ["| encoder | µs per span | µs per chat run | cost relative to sdk | min–max µs per span |",
            "|---|--:|--:|--:|--:|"]
    for name, value in medians.items():
        kept = times[name][1:] or times[name]
        rows.append(
            f"| {name} | {value * 1e6:.1f} | {value * spans_per_run * 1e6:.0f} "
            f"| {value / medians['sdk']:.3f} | {min(kept) * 1e6:.1f}–{max(kept) * 1e6:.1f} |"
        )
    sizes = sorted(len(b) for b in batches)
    text = f"""# OTLP encoding: the SDK's encoder and sessiontrace._otlp_encoder

`{command_line("encoder_overhead.py")}`, {utc_now()}.

- Machine: {machine_line()}.
- Python {sys.version.split()[0]}; {package_versions(PACKAGES)}; protobuf backend
  {_protobuf_backend()}; service/ and telemetry/ at {git_revision("service", "telemetry")}
- Spans: {len(spans):,} from {runs:,} builtin:chat runs served in-process ({spans_per_run:g} a run),
  in {len(batches)} batches of up to {BATCH} (the BatchSpanProcessor's default), {sizes[-1]:,} spans
  the largest. {rounds} interleaved round(s) after one warm-up round; medians of CPU time.
- Checked: every batch encodes to the same bytes with every encoder.

{chr(10).join(rows)}

The exporter encodes on the BatchSpanProcessor's thread, but it holds the GIL while it does, so
in a one-process service each µs per chat run here is a µs the request handlers do not get.
"""
    write_results(text, None if args.quick else (args.output or RESULTS))
    return 0


def _protobuf_backend() -> str:
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


if __name__ == "__main__":
    os.environ.setdefault("SCHEDULER_API_TOKEN", "bench-encoder")
    sys.exit(main())
