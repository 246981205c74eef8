"""Pipeline at full speed: spans/s end to end from several generator processes, zero loss.

One Python process cannot pass ~17,000 spans/s (bench/pipeline_throughput.py: it creates and
encodes every span under one GIL), so `--generators N` starts N bench/span_generator.py
processes together, each with its own share of the spans and its own sessions, and releases
them at the same instant. They export to the real collector (bin/otelcol, otel-collector.yaml),
which sends to one of two destinations, named in every figure:

  null   bench/null_endpoint.py: answers as Langfuse would (Basic auth, gzip, 413 over 5 MB),
         counts spans and session.ids, stores nothing: the "through the collector" figure
  sink   the development sink: decodes every span into SQLite (~33 µs of Python a span)

The rate is all spans / wall time from the first generator's first span until the destination
received the last one. Zero loss is checked on exact counts (span_generator's exporter, the
collector's own counters, the destination's count of spans and of spans with a session.id);
any difference fails the run. CPU per span comes from /proc (collector, destination) and each
generator's own process time; the collector's VmRSS is sampled every 0.5 s, VmHWM read at the
end. On a 2-core machine the processes share the cores, so the report also gives each one's
ceiling (the spans/s its CPU per span allows) to say where the limit is.

`--overlay` adds a `yaml:` config URI to the collector's command line, to measure what one
part of otel-collector.yaml costs (e.g. without the privacy processor:
`--overlay 'yaml:service::pipelines::traces::processors: [memory_limiter, filter/langfuse_runs]'`).

Usage: python bench/pipeline_load.py [--quick] [--generators 1,2,3] [--destinations null,sink]
       [--spans N] [--rounds R] [--batch-size B] [--overlay URI]... [--output FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import RESULTS_DIR, write_results
from local_stack import build_collector, workspace
from pipeline_destination import DESTINATIONS
from pipeline_fleet import FleetRun, run_fleet
from pipeline_load_report import report

RESULTS = RESULTS_DIR / "pipeline_load.md"
# The production 2 s flush only adds a fixed tail to a finite run (the last partial batch);
# batches still fill to min_size (512 KiB) while spans keep coming. As pipeline_throughput.py.
COLLECTOR_ENV = {"OTELCOL_BATCH_FLUSH_TIMEOUT": "200ms"}


def positive_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,3, got {text!r}")
    return counts


def destinations(text: str) -> list[str]:
    names = text.split(",")
    unknown = sorted(set(names) - set(DESTINATIONS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown destinations {unknown}; choose from {', '.join(DESTINATIONS)}"
        )
    return names


def summary(run: FleetRun, count: int) -> str:
    return (
        f"{run.destination}, {count} generator(s): {run.rate:,.0f} spans/s; µs/span generators "
        f"{run.us_per_span('generators'):.1f}, collector {run.us_per_span('collector'):.1f}, "
        f"{run.destination} {run.us_per_span('destination'):.1f}; machine "
        f"{run.machine_busy / run.wall:.2f} cores busy; "
        f"{'; '.join(run.problems) or 'nothing lost'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="correctness smoke run: few spans")
    parser.add_argument("--generators", type=positive_counts,
                        help="generator processes per run, comma-separated (default 1,2,3)")
    parser.add_argument("--destinations", type=destinations, default=list(DESTINATIONS),
                        help=f"comma-separated, of {', '.join(DESTINATIONS)}")
    parser.add_argument("--spans", type=int, help="spans per run, all generators together")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every configuration")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="each generator's OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    parser.add_argument("--overlay", action="append", default=[],
                        help="a `yaml:` --config URI for the collector, repeatable (diagnostics)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    bad = [uri for uri in args.overlay if not uri.startswith("yaml:")]
    if bad:
        parser.error(f"--overlay takes yaml: config URIs, got {bad}")
    args.generators = args.generators or ([2] if args.quick else [1, 2, 3])
    args.spans = args.spans or (4_000 if args.quick else 300_000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.spans % 10 or args.spans < 10 * max(args.generators):
        parser.error(f"--spans must be a multiple of 10, at least 10 per generator; "
                     f"got {args.spans}")

    build_collector()
    runs: list[tuple[int, FleetRun]] = []
    for round_index in range(args.rounds):
        for destination in args.destinations:
            for count in args.generators:
                with workspace("pipeline-load") as space:
                    run = run_fleet(space, destination, generators=count, spans=args.spans,
                                    batch=args.batch_size, collector_env=COLLECTOR_ENV,
                                    overlays=args.overlay)
                runs.append((count, run))
                print(f"round {round_index + 1}/{args.rounds}: {summary(run, count)}",
                      file=sys.stderr)
    problems = [p for _, run in runs for p in run.problems]
    if problems:
        print("spans were lost:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    # A run with overlays measures a different config: it never replaces the results file.
    default = None if args.quick or args.overlay else RESULTS
    write_results(report(runs, args), args.output or default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
