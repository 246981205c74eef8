"""Pipeline at full speed: spans/s end to end from several generator processes, zero loss.

`--generator` says what makes the load (comma-separated, each measured):

  telemetrygen  the OpenTelemetry project's load generator (Go, bin/telemetrygen; a few µs of
                CPU a span): the pipeline behind it sets the rate. The default.
  python        bench/span_generator.py, the Python SDK through the library (~55 µs a span:
                on a 2-core machine it, not the pipeline, sets the rate)

`--generators N` starts N processes together, each with its own share of the spans and its own
sessions (`--workers W`: telemetrygen goroutines per process). They export over OTLP/HTTP to
the real collector (bin/otelcol, otel-collector.yaml), which sends to one of two destinations,
named in every figure:

  null   bench/null_endpoint.py: answers as Langfuse would (Basic auth, gzip, 413 over 5 MB),
         counts spans and session.ids, stores nothing: the "through the collector" figure
  sink   the development sink: decodes every span into SQLite (~33 µs of Python a span)

The rate is all spans / wall time from the first generator's start until the destination
received the last one. Zero loss is checked on exact counts (span_generator's exporter, or
telemetrygen's fixed trace count; the collector's own counters; the destination's count of
spans and of spans with a session.id);
any difference fails the run. CPU per span comes from /proc (collector, destination) and each
generator's own process time; the collector's VmRSS is sampled every 0.5 s, VmHWM read at the
end. On a 2-core machine the processes share the cores, so the report also gives each one's
ceiling (the spans/s its CPU per span allows) to say where the limit is.

`--overlay` adds a `yaml:` config URI to the collector's command line, to measure what one
part of otel-collector.yaml costs (e.g. without the privacy processor:
`--overlay 'yaml:service::pipelines::traces::processors: [memory_limiter, filter/langfuse_runs]'`).

`--quick` (CI) runs both generators, 2 processes each, a few thousand spans: correctness only.

Usage: python bench/pipeline_load.py [--quick] [--generator telemetrygen,python]
       [--generators 1,2] [--workers 1,2] [--destinations null,sink] [--spans N]
       [--rounds R] [--batch-size B] [--overlay URI]... [--output FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from common import RESULTS_DIR, write_results
from local_stack import build_collector, build_telemetrygen, workspace
from pipeline_destination import DESTINATIONS
from pipeline_fleet import GENERATOR_KINDS, FleetRun, run_fleet
from pipeline_load_report import Shape, report

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


def name_value(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def names_of(choices: dict[str, str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of `choices`."""

    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = sorted(set(names) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown}; choose from {', '.join(choices)}"
            )
        return names

    return parse


def shapes(args: argparse.Namespace) -> list[Shape]:
    """Every configuration to run once a round; Python generators have one worker."""
    return [
        Shape(generator, destination, count, workers)
        for generator in args.generator
        for destination in args.destinations
        for count in args.generators
        for workers in (args.workers if generator == "telemetrygen" else [1])
    ]


def summary(run: FleetRun) -> str:
    shape = Shape.of(run)
    return (
        f"{shape.generator} → {shape.destination}, {shape.processes} process(es) × "
        f"{shape.workers} worker(s): {run.rate:,.0f} spans/s; µs/span generators "
        f"{run.us_per_span('generators'):.1f}, collector {run.us_per_span('collector'):.1f}, "
        f"{run.destination} {run.us_per_span('destination'):.1f}; machine "
        f"{run.machine_busy / run.wall:.2f} cores busy; "
        f"{'; '.join(run.problems) or 'nothing lost'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="correctness smoke run: few spans")
    parser.add_argument("--generator", type=names_of(GENERATOR_KINDS),
                        help="what makes the load, comma-separated of "
                             f"{', '.join(GENERATOR_KINDS)} (default telemetrygen)")
    parser.add_argument("--generators", type=positive_counts,
                        help="generator processes per run, comma-separated (default 1,2)")
    parser.add_argument("--workers", type=positive_counts, default=[1, 2],
                        help="telemetrygen workers per process, comma-separated (default 1,2)")
    parser.add_argument("--destinations", type=names_of(DESTINATIONS),
                        default=list(DESTINATIONS),
                        help=f"comma-separated, of {', '.join(DESTINATIONS)}")
    parser.add_argument("--spans", type=int, help="spans per run, all generators together")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every configuration")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="spans/s all generators together offer (default 0: as fast as "
                             "they can)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="each generator's OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    parser.add_argument("--collector-env", type=name_value, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="an environment variable of the collector (OTELCOL_* of "
                             "otel-collector.yaml, or the Go runtime's GOGC, GOMAXPROCS), "
                             "repeatable")
    parser.add_argument("--overlay", action="append", default=[],
                        help="a `yaml:` --config URI for the collector, repeatable (diagnostics)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    bad = [uri for uri in args.overlay if not uri.startswith("yaml:")]
    if bad:
        parser.error(f"--overlay takes yaml: config URIs, got {bad}")
    args.generator = args.generator or (list(GENERATOR_KINDS) if args.quick
                                        else ["telemetrygen"])
    args.generators = args.generators or ([2] if args.quick else [1, 2])
    args.workers = [1] if args.quick else args.workers
    args.spans = args.spans or (4_000 if args.quick else 300_000)
    args.rounds = args.rounds or (1 if args.quick else 2)
    # Every process (and telemetrygen worker) gets the same whole number of traces.
    if args.spans < 1 or any(args.spans % (10 * s.processes * s.workers) for s in shapes(args)):
        parser.error(f"--spans must split into whole traces of 10 over every process and "
                     f"worker; got {args.spans}")

    build_collector()
    if "telemetrygen" in args.generator:
        build_telemetrygen()
    runs: list[FleetRun] = []
    for round_index in range(args.rounds):
        for shape in shapes(args):
            with workspace("pipeline-load") as space:
                run = run_fleet(space, shape.destination, generator=shape.generator,
                                workers=shape.workers, generators=shape.processes,
                                spans=args.spans, batch=args.batch_size, rate=args.rate,
                                collector_env=COLLECTOR_ENV | dict(args.collector_env),
                                overlays=args.overlay)
            runs.append(run)
            print(f"round {round_index + 1}/{args.rounds}: {summary(run)}", file=sys.stderr)
    problems = [p for run in runs for p in run.problems]
    if problems:
        print("spans were lost:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    # A run with overlays measures a different config: it never replaces the results file.
    default = None if args.quick or args.overlay else RESULTS
    write_results(report(runs, args), args.output or default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
