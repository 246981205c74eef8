"""Generate spans as fast as one Python thread can, through the SDK's export path; print JSON.

The tracing setup is the one the service uses (sessiontrace.configure_tracing): a TracerProvider
with SessionSpanProcessor first, then a BatchSpanProcessor, which reads OTEL_BSP_* itself, in
front of its OTLP/HTTP exporter, DirectOTLPSpanExporter (or, with `--endpoint none`, a no-op
exporter). Spans
come in traces of `--trace-size`: a run span and LLM-call children, each trace under its own
bound caller, as one request binds one. An exporter wrapper counts what reached the exporter,
what it reported as failed, and the CPU time spent exporting, so the result says whether the
SDK dropped anything (created - exported - failed) and where the process's time went.

Run by bench/pipeline_throughput.py, bench/pipeline_load.py and bench/pipeline_soak.py in its
own process, so its CPU time is its own. Several run side by side as one load (`--index` keeps
their sessions apart); with `--wait-for-go` each prints `ready` once set up and starts creating
spans when a line arrives on stdin, so start-up (imports, connection) is not part of the run.
`--rate` paces it to a steady rate instead of as fast as it can.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

from sessiontrace import (
    DirectOTLPSpanExporter,
    SessionContext,
    binding,
    configure_tracing,
    derive_user_session_id,
)
from sessiontrace._otlp_encoder import TraceRequestEncoder

SESSIONS = 100
TRACE_SIZE = 10  # spans per trace unless --trace-size says otherwise: a run span, 9 LLM calls
# What each LLM-call span carries besides its session (bench/pipeline_telemetrygen.py sends the
# same on every span).
LLM_ATTRIBUTES: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "offline-echo",
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 20,
}
MAX_LAG = 0.1  # seconds a paced generator may fall behind and still catch up


class CountingExporter(SpanExporter):
    """Passes batches on to `inner` (or nowhere), counting spans and the export's CPU time."""

    def __init__(self, inner: SpanExporter | None) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.calls = 0
        self.cpu = 0.0
        self.sample: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.thread_time()
        result = SpanExportResult.SUCCESS if self.inner is None else self.inner.export(spans)
        self.cpu += time.thread_time() - started
        self.calls += 1
        if len(spans) > len(self.sample):
            self.sample = list(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        if self.inner is not None:
            self.inner.shutdown()


def encoding_cost(spans: Sequence[ReadableSpan], repeats: int = 5) -> float:
    """CPU seconds per span of the exporter's OTLP encoding alone, timed on one batch."""
    if not spans:
        return 0.0
    encoder = TraceRequestEncoder()
    started = time.thread_time()
    for _ in range(repeats):
        encoder.encode(spans)
    return (time.thread_time() - started) / (repeats * len(spans))


def callers(index: int) -> list[SessionContext]:
    """Generator `index`'s sessions of SESSIONS conversations, built before the clock starts."""
    return [
        SessionContext(
            session_id=derive_user_session_id("bench", f"generator-{index}-conversation-{i}"),
            user_id=f"user-{index}-{i % 10}",
            trace_name="builtin:chat",
            tags=("user", "builtin:chat"),
            metadata={"run_id": f"run-{i}", "request_id": f"req-{i}"},
        )
        for i in range(SESSIONS)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP traces URL, or 'none'")
    parser.add_argument("--header", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--spans", type=int, required=True)
    parser.add_argument("--trace-size", type=int, default=TRACE_SIZE)
    parser.add_argument("--index", type=int, default=0, help="this generator's number in a load")
    parser.add_argument("--rate", type=float, default=0.0, help="spans/s; 0: as fast as it can")
    parser.add_argument("--wait-for-go", action="store_true",
                        help="print 'ready', then start when a line arrives on stdin")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f"--rate must be 0 (as fast as it can) or more, got {args.rate}")
    logging.basicConfig(level=logging.WARNING)

    inner = None
    if args.endpoint != "none":
        headers = dict(h.split("=", 1) for h in args.header)
        inner = DirectOTLPSpanExporter(endpoint=args.endpoint, headers=headers)
    exporter = CountingExporter(inner)
    provider = configure_tracing(service_name="bench-pipeline", exporter=exporter)
    tracer = provider.get_tracer("bench.pipeline")
    bound = callers(args.index)
    children = args.trace_size - 1
    traces, rest = divmod(args.spans, args.trace_size)
    if rest:
        parser.error("--spans must be a multiple of --trace-size")
    # Seconds between trace starts. A generator that falls more than MAX_LAG behind (a busy
    # machine) does not burst to catch up: the rate stays steady, only lower.
    interval = args.trace_size / args.rate if args.rate else 0.0
    if args.wait_for_go:
        print("ready", flush=True)
        sys.stdin.readline()

    started_at = time.time()
    wall, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
    due = wall
    for index in range(traces):
        if interval:
            lag = time.perf_counter() - due
            if lag < 0:
                time.sleep(-lag)
            elif lag > MAX_LAG:
                due += lag
            due += interval
        with binding(bound[index % SESSIONS]), tracer.start_as_current_span("run builtin:chat"):
            for _ in range(children):
                span = tracer.start_span("chat offline-echo")
                for key, value in LLM_ATTRIBUTES.items():
                    span.set_attribute(key, value)  # one call each: its CPU per span stays comparable
                span.end()
    created, main_cpu = time.perf_counter() - wall, time.thread_time() - cpu
    provider.force_flush(timeout_millis=300_000)
    flushed = time.perf_counter() - wall
    provider.shutdown()
    process_cpu = time.process_time() - process
    result = {
        "spans": args.spans,
        "traces": traces,
        "exported": exporter.exported,
        "failed": exporter.failed,
        "dropped": args.spans - exporter.exported - exporter.failed,
        "export_calls": exporter.calls,
        "started_at": started_at,
        "create_s": created,
        "flush_s": flushed,
        "main_cpu_s": main_cpu,
        "export_cpu_s": exporter.cpu,
        "process_cpu_s": process_cpu,
        "encode_s_per_span": encoding_cost(exporter.sample),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
