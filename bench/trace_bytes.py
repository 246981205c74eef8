"""OTLP bytes per run: what stamping each span for Langfuse's v4 path costs on the wire.

The spans are the service's own, served in-process (`encoder_overhead.service_spans`): builtin:chat
runs and builtin:governance-review runs of one schedule. Each layout is the same spans with other
attributes, encoded by sessiontrace._otlp_encoder in batches of 512 (the exporter's bytes), then
gzipped (what the collector sends Langfuse):

  before        what the service stamped before issue 10: `session.id` and `user.id` on every
                span; trace name, tags and metadata on the run span only; the HTTP server span
                without the run's input, output and metadata
  now           every span also carries `langfuse.session.id`, `langfuse.user.id`,
                `langfuse.trace.name` and `langfuse.trace.tags`; the root (HTTP server) span
                carries the trace metadata and the run's input and output
  now + metadata on every span   as the Langfuse SDK does: the trace metadata copied onto
                every span (not done: Langfuse reads it from the root span)

Usage: python bench/trace_bytes.py [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, command_line, git_revision, machine_line, utc_now, write_results
from encoder_overhead import BATCH, service_spans

RESULTS = RESULTS_DIR / "trace_bytes.md"
META = "langfuse.trace.metadata."
EVERY_SPAN_KEYS = ("langfuse.session.id", "langfuse.user.id", "langfuse.trace.name",
                   "langfuse.trace.tags")
ROOT_KEYS = ("langfuse.observation.input", "langfuse.observation.output", "langfuse.trace.input",
             "langfuse.trace.output")
Layout = Callable[[Any, Mapping[str, Any]], dict[str, Any]]


def before(span: Any, run_metadata: Mapping[str, Any]) -> dict[str, Any]:
    attributes = dict(span.attributes or {})
    if span.name.startswith("invoke_agent"):
        return attributes
    for key in list(attributes):
        if key in EVERY_SPAN_KEYS or key.startswith(META) or (
            span.parent is None and key in ROOT_KEYS
        ):
            del attributes[key]
    return attributes


def now(span: Any, run_metadata: Mapping[str, Any]) -> dict[str, Any]:
    return dict(span.attributes or {})


def metadata_everywhere(span: Any, run_metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {**(span.attributes or {}), **run_metadata}


LAYOUTS: dict[str, Layout] = {
    "before": before,
    "now": now,
    "now + metadata on every span": metadata_everywhere,
}


def relaid(spans: Sequence[Any], layout: Layout) -> list[Any]:
    """Copies of `spans` whose attributes are what `layout` makes of them."""
    from opentelemetry.sdk.trace import ReadableSpan

    metadata: dict[int, dict[str, Any]] = {}
    for span in spans:
        if span.name.startswith("invoke_agent"):
            metadata[span.context.trace_id] = {
                key: value for key, value in (span.attributes or {}).items()
                if key.startswith(META)
            }
    return [
        ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=layout(span, metadata.get(span.context.trace_id, {})), events=span.events,
            links=span.links, kind=span.kind, status=span.status, start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
        )
        for span in spans
    ]


def wire_bytes(spans: Sequence[Any]) -> tuple[int, int]:
    """Protobuf and gzipped bytes of `spans` exported in batches of BATCH."""
    from sessiontrace._otlp_encoder import TraceRequestEncoder

    encoder = TraceRequestEncoder()
    raw = zipped = 0
    for start in range(0, len(spans), BATCH):
        body = encoder.encode(spans[start:start + BATCH])
        raw += len(body)
        zipped += len(gzip.compress(body, compresslevel=6))
    return raw, zipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few runs")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    runs = 16 if args.quick else 256

    spans = service_spans(runs, governance_runs=runs)
    chat_traces = {s.context.trace_id for s in spans if s.name == "invoke_agent builtin:chat"}
    kinds = {
        "builtin:chat": [s for s in spans if s.context.trace_id in chat_traces],
        "builtin:governance-review": [s for s in spans if s.context.trace_id not in chat_traces],
    }
    rows = ["| run | layout | spans a run | bytes a run | gzip bytes a run | relative to before |",
            "|---|---|--:|--:|--:|--:|"]
    for kind, kind_spans in kinds.items():
        measured = {name: wire_bytes(relaid(kind_spans, layout)) for name, layout in LAYOUTS.items()}
        if not measured["before"][0] < measured["now"][0] < measured[
            "now + metadata on every span"
        ][0]:
            print(f"{kind}: layouts did not change the bytes as expected: {measured}",
                  file=sys.stderr)
            return 1
        for name, (raw, zipped) in measured.items():
            rows.append(
                f"| {kind} | {name} | {len(kind_spans) / runs:g} | {raw / runs:,.0f} "
                f"| {zipped / runs:,.0f} | {raw / measured['before'][0]:.2f} |"
            )
    text = f"""# OTLP bytes per run, by what each span carries

`{command_line("trace_bytes.py")}`, {utc_now()}.

- Machine: {machine_line()}.
- Spans: {runs} builtin:chat runs and {runs} builtin:governance-review runs of one schedule,
  served in-process; service/ and telemetry/ at {git_revision("service", "telemetry")}.
  Encoded by sessiontrace._otlp_encoder in batches of up to {BATCH}; gzip level 6. Bytes are exact,
  not timings: they do not vary between runs of the same code.

{chr(10).join(rows)}

Layouts: `before` is what the service stamped before issue 10; `now` what it stamps; `now +
metadata on every span` what copying the trace metadata onto every span would add, as the Langfuse
SDK does. Langfuse reads trace metadata from the root span only, so the service does not.
"""
    write_results(text, None if args.quick else (args.output or RESULTS))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SCHEDULER_API_TOKEN", "bench-trace-bytes")
    sys.exit(main())
