"""Soak: a million spans through the collector at a steady rate, zero loss, flat collector memory.

`--generators` processes, each paced to its share of `--rate`, send `--spans` spans through the
real collector (bin/otelcol with otel-collector.yaml exactly as shipped, 2 s batch flush
included) to the null endpoint (or `--destination sink`). The processes are telemetrygen
(default; Go, a few µs of CPU a span, bench/pipeline_telemetrygen.py; default rate 25,000
spans/s, issue 14's target) or, with `--generator python`, bench/span_generator.py (default
10,000 spans/s: a Python generator costs ~55 µs a span). telemetrygen paces each worker with
its own limiter, whose sleeps overshoot at more than ~1,000 spans/s a worker: hence 25 workers
a process by default (500 spans/s each at 25,000). Each generator's BatchSpanProcessor queue
is `--queue` spans (default 65,536 for Python, 262,144 for telemetrygen: 13 to 20 s of its
share, so a generator whose exports slow down while other work on a shared machine starves
the pipeline of CPU rides it out; the service's own 8,192 dropped spans that way here). Any loss fails the run: exact counts at the generators (Python: none dropped;
telemetrygen: every worker generated its fixed number of traces), the collector's own counters
(accepted = sent, 0 failed, refused or failed to enqueue, queue empty at the end) and the
destination (each span once, each with session.id).

The collector's VmRSS (and sending-queue bytes) is sampled every second while spans flow.
"Flat" means the RSS over the last half of the run does not trend up: a least-squares line
through the last half's samples may rise by at most `--max-growth-mib` across that half
(default 16 MiB: Go's garbage collector saws the RSS up and down by about ±10 MiB here, which
moved the fitted line by up to ±5 MiB in runs that did not grow). The
report gives the first- and last-quarter medians and the slope. `--quick` runs a few thousand
spans for correctness only (CI: `make bench BENCH_ARGS=--quick`) and judges no trend.

Usage: python bench/pipeline_soak.py [--quick] [--generator telemetrygen|python] [--spans N]
       [--rate R] [--generators G] [--workers W] [--destination null|sink]
       [--max-growth-mib M] [--output FILE]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import RESULTS_DIR, command_line, git_revision, machine_line, utc_now, write_results
from local_stack import build_collector, build_telemetrygen, collector_version, workspace
from pipeline_collector import CollectorSample
from pipeline_destination import DESTINATIONS
from pipeline_fleet import GENERATOR_KINDS, FleetRun, run_fleet
from pipeline_settings import collector_settings
from pipeline_telemetrygen import telemetrygen_version

RESULTS = RESULTS_DIR / "pipeline_soak.md"
SESSIONS = {"telemetrygen": "one session each", "python": "100 sessions each"}
SENT = {  # how each kind of generator shows it sent every span
    "telemetrygen": "every worker generated its fixed number of traces, no export error logged",
    "python": "its exporter sent them all, 0 dropped, 0 failed",
}
GENERATOR_QUEUE = {"telemetrygen": 262_144, "python": 65_536}  # OTEL_BSP_MAX_QUEUE_SIZE
SAMPLE_SECONDS = 1.0
DEFAULT_RATE = {"telemetrygen": 25_000.0, "python": 10_000.0}  # spans/s, all generators
DEFAULT_WORKERS = {"telemetrygen": 25, "python": 1}  # per process


@dataclass(frozen=True)
class Trend:
    """The collector's RSS while spans flowed: quarter medians, and the last half's slope."""

    samples: int
    first_quarter_mib: float
    last_quarter_mib: float
    slope_mib_per_min: float  # least squares over the last half
    growth_mib: float  # the slope across the last half's duration

    @classmethod
    def of(cls, samples: Sequence[CollectorSample]) -> Trend:
        quarter, half = max(1, len(samples) // 4), samples[len(samples) // 2 :]
        times = [s.seconds for s in half]
        mib = [s.rss_kib / 1024 for s in half]
        slope = statistics.linear_regression(times, mib).slope if len(half) > 1 else 0.0
        return cls(
            samples=len(samples),
            first_quarter_mib=statistics.median(s.rss_kib / 1024 for s in samples[:quarter]),
            last_quarter_mib=statistics.median(s.rss_kib / 1024 for s in samples[-quarter:]),
            slope_mib_per_min=slope * 60,
            growth_mib=slope * (times[-1] - times[0]) if len(half) > 1 else 0.0,
        )


def while_flowing(run: FleetRun) -> list[CollectorSample]:
    """The samples taken between the first span created and the last one delivered."""
    return [s for s in run.samples if s.seconds <= run.seconds]


def tenths(values: Sequence[float]) -> list[float]:
    """The median of each tenth of `values` (fewer parts when there are fewer values)."""
    parts = min(10, len(values))
    return [statistics.median(values[i * len(values) // parts : (i + 1) * len(values) // parts])
            for i in range(parts)]


def memory_table(run: FleetRun, trend: Trend, rss: Sequence[float]) -> str:
    cells = [
        str(trend.samples),
        f"{run.collector_kib[0] / 1024:.0f} MiB",
        f"{trend.first_quarter_mib:.1f} MiB",
        f"{trend.last_quarter_mib:.1f} MiB",
        f"{min(rss):.0f}–{max(rss):.0f} MiB",
        f"{trend.slope_mib_per_min:+.2f} MiB/min",
        f"{trend.growth_mib:+.1f} MiB",
        f"{run.collector_kib[1] / 1024:.0f} MiB",
    ]
    return "\n".join([
        "| samples | before the load | first quarter median | last quarter median | min–max "
        "| last half slope | last half growth | VmHWM |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| {' | '.join(cells)} |",
    ])


def report(run: FleetRun, trend: Trend, verdict: str, args: argparse.Namespace) -> str:
    samples = while_flowing(run)
    rss = [s.rss_kib / 1024 for s in samples]
    queue_peak = max(s.queue_bytes for s in samples) / 1024
    created = run.spans / max(float(g["create_s"]) for g in run.generators)
    cores = run.cpu["collector"] / run.wall
    counted = run.collector
    collector = (
        f"the collector accepted {counted.accepted:,} and sent {counted.sent:,}, with "
        f"{counted.failed} failed, {counted.refused} refused, {counted.enqueue_failed} failed "
        f"to enqueue, {counted.queued} bytes left in its queue"
    )
    return f"""# Pipeline soak: {run.spans:,} spans through the collector

`{command_line("pipeline_soak.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}; other sessions' work ran on it at the same time
  ({run.machine_busy / run.wall:.2f} of its cores busy on average during the run, ours included).
- Python {platform.python_version()}; collector {collector_version()} (bin/otelcol);
  telemetrygen {telemetrygen_version()} (bin/telemetrygen);
  telemetry/ at {git_revision("telemetry")}; otel-collector.yaml at
  {git_revision("otel-collector.yaml")}
- Load: {args.generators} {args.generator} processes ({GENERATOR_KINDS[args.generator]}) of
  {args.workers} worker(s), paced to {args.rate:,.0f} spans/s together (traces of 10 spans;
  {SESSIONS[args.generator]}), BatchSpanProcessor queue {args.queue:,} spans each, export
  batch {args.batch_size}; destination `{run.destination}`
  ({DESTINATIONS[run.destination]}).
- Collector: otel-collector.yaml as shipped, no overrides ({collector_settings()}).

## Result

- **{run.spans:,} spans in {run.seconds:,.0f} s: {run.rate:,.0f} spans/s** end to end
  (target rate {args.rate:,.0f}; the generators created {created:,.0f} spans/s together).
- Zero loss: every generator sent all its spans ({SENT[args.generator]}); {collector}; the
  destination received each span once, each with a session.id.
- Collector CPU: {run.us_per_span("collector"):.1f} µs per span ({cores:.2f} cores on average);
  generators {run.us_per_span("generators"):.1f} µs per span.
- Sending queue: at most {queue_peak:,.0f} KiB waiting at any sample.

## Collector memory (VmRSS, sampled every {SAMPLE_SECONDS:.0f} s while spans flowed)

{memory_table(run, trend, rss)}

Median RSS of each tenth of the run, MiB: {", ".join(f"{m:.0f}" for m in tenths(rss))}.

{verdict}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="correctness only: few spans")
    parser.add_argument("--spans", type=int, help="spans in all (default 1,000,000)")
    parser.add_argument("--generator", choices=list(GENERATOR_KINDS), default="telemetrygen")
    parser.add_argument("--rate", type=float,
                        help="spans/s of all generators (default 25,000 telemetrygen, "
                             "10,000 python)")
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--workers", type=int,
                        help="telemetrygen workers a process (default 25)")
    parser.add_argument("--destination", choices=list(DESTINATIONS), default="null")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="each generator's OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    parser.add_argument("--queue", type=int,
                        help="each generator's OTEL_BSP_MAX_QUEUE_SIZE (default 262,144 "
                             "telemetrygen, 65,536 python)")
    parser.add_argument("--max-growth-mib", type=float, default=16.0,
                        help="largest RSS rise over the last half that still counts as flat")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    args.spans = args.spans or (20_000 if args.quick else 1_000_000)
    args.rate = args.rate or (5_000.0 if args.quick else DEFAULT_RATE[args.generator])
    args.workers = args.workers or DEFAULT_WORKERS[args.generator]
    args.queue = args.queue or GENERATOR_QUEUE[args.generator]
    threads = args.generators * args.workers
    if min(args.generators, args.workers) < 1 or args.spans < 1 or args.spans % (10 * threads):
        parser.error("--generators and --workers must be at least 1 and --spans a multiple of "
                     f"10 × generators × workers; got {args.generators}, {args.workers} and "
                     f"{args.spans}")
    if args.rate <= 0:
        parser.error(f"--rate must be above 0, got {args.rate}")
    if not 1 <= args.batch_size <= args.queue:
        parser.error(f"--batch-size must be between 1 and --queue ({args.queue}), "
                     f"got {args.batch_size}")

    build_collector()
    if args.generator == "telemetrygen":
        build_telemetrygen()
    with workspace("pipeline-soak") as space:
        run = run_fleet(space, args.destination, generator=args.generator,
                        workers=args.workers, generators=args.generators, spans=args.spans,
                        batch=args.batch_size, queue=args.queue, rate=args.rate,
                        sample_interval=SAMPLE_SECONDS)
    if run.problems:
        print("spans were lost:", *run.problems, sep="\n  ", file=sys.stderr)
        return 1
    trend = Trend.of(while_flowing(run))
    flat = trend.growth_mib <= args.max_growth_mib
    if args.quick:
        verdict = (f"Quick run: {trend.samples} samples are too few to judge a trend; "
                   "correctness only.")
    else:
        verdict = (
            f"**Flat: {'yes' if flat else 'NO'}.** The bound: the RSS fitted over the last half "
            f"may rise by at most {args.max_growth_mib:g} MiB across it; it rose "
            f"{trend.growth_mib:+.1f} MiB."
        )
    output = args.output or (None if args.quick else RESULTS)
    write_results(report(run, trend, verdict, args), output)
    if not args.quick and not flat:
        print(f"collector memory grew {trend.growth_mib:+.1f} MiB over the last half "
              f"(bound {args.max_growth_mib:g} MiB)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
