"""The results file of bench/pipeline_load.py: rates, CPU per span, collector memory, the limit."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from common import command_line, git_revision, machine_line, package_versions, utc_now
from local_stack import collector_version
from pipeline_telemetrygen import telemetrygen_version
from pipeline_destination import DESTINATIONS
from pipeline_fleet import GENERATOR_KINDS, FleetRun
from pipeline_settings import collector_settings

__all__ = ["TARGET", "Shape", "report"]

TARGET = 25_000  # spans/s end to end through the collector (issue 14)
CORES = os.cpu_count() or 1
PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "protobuf", "uvicorn")


class Shape(NamedTuple):
    """One configuration of a run: what generated the load, how many, and where it went."""

    generator: str
    destination: str
    processes: int
    workers: int

    @classmethod
    def of(cls, run: FleetRun) -> Shape:
        return cls(run.generator, run.destination, len(run.generators), run.workers)

    def cells(self) -> str:
        return f"{self.generator} | `{self.destination}` | {self.processes} | {self.workers}"


Groups = Mapping[Shape, Sequence[FleetRun]]
HEAD = "| generator | destination | processes | workers each "


def _median(runs: Sequence[FleetRun], value: Callable[[FleetRun], float]) -> float:
    return float(statistics.median(value(run) for run in runs))


def _us(runs: Sequence[FleetRun], part: str) -> float:
    """Median CPU µs per span of one part: generators, collector or destination."""
    return _median(runs, lambda run: run.us_per_span(part))


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def group(runs: Sequence[FleetRun]) -> dict[Shape, list[FleetRun]]:
    groups: dict[Shape, list[FleetRun]] = {}
    for run in runs:
        groups.setdefault(Shape.of(run), []).append(run)
    return groups


def ceilings(runs: Sequence[FleetRun], shape: Shape) -> dict[str, float]:
    """Spans/s each part could carry with the machine's cores to itself: cores / CPU per span.

    "machine" is every part together on this machine's cores: its ceiling is the rate the
    pipeline can reach here at best, whatever is split how. A Python generator uses one core
    (its GIL); telemetrygen's goroutines use them all.
    """
    threads = shape.processes if shape.generator == "python" else CORES
    cores = {"generators": min(threads, CORES), "collector": CORES, "destination": 1}
    limits = {part: n * 1e6 / _us(runs, part) for part, n in cores.items()}
    everything = _median(runs, lambda r: sum(r.cpu.values()) / r.spans * 1e6)
    return {"machine": CORES * 1e6 / everything} | limits


def rates_table(groups: Groups) -> str:
    lines = [
        HEAD + "| spans/s end to end: median (min–max) "
        "| CPU µs/span: generators · collector · destination · all "
        "| cores busy: ours · whole machine | collector RSS MiB: median · max sampled · VmHWM |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for shape, runs in groups.items():
        rates = [run.rate for run in runs]
        us = [_us(runs, part) for part in ("generators", "collector", "destination")]
        ours = _median(runs, lambda r: sum(r.cpu.values()) / r.wall)
        machine = _median(runs, lambda r: r.machine_busy / r.wall)
        rss = [s.rss_kib for run in runs for s in run.samples]
        hwm = max(run.collector_kib[1] for run in runs)
        lines.append(
            f"| {shape.cells()} | **{statistics.median(rates):,.0f}** "
            f"({min(rates):,.0f}–{max(rates):,.0f}) "
            f"| {us[0]:.1f} · {us[1]:.1f} · {us[2]:.1f} · {sum(us):.1f} "
            f"| {ours:.2f} · {machine:.2f} "
            f"| {_mib(statistics.median(rss))} · {_mib(max(rss))} · {_mib(hwm)} |"
        )
    return "\n".join(lines)


def ceilings_table(groups: Groups) -> str:
    lines = [
        HEAD + f"| all on {CORES} cores | generators | collector | destination | lowest |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for shape, runs in groups.items():
        limits = ceilings(runs, shape)
        parts = {k: v for k, v in limits.items() if k != "machine"}
        lowest = min(parts, key=parts.__getitem__)
        lines.append(
            f"| {shape.cells()} | {limits['machine']:,.0f} "
            + " ".join(f"| {limits[p]:,.0f}" for p in ("generators", "collector", "destination"))
            + f" | {lowest} |"
        )
    return "\n".join(lines)


def verdict(groups: Groups) -> str:
    """For each generator and destination, the best configuration against the target."""
    lines = []
    for generator, destination in sorted({(k.generator, k.destination) for k in groups}):
        mine = {k: runs for k, runs in groups.items()
                if (k.generator, k.destination) == (generator, destination)}
        shape, runs = max(mine.items(), key=lambda item: _median(item[1], lambda r: r.rate))
        rate = _median(runs, lambda r: r.rate)
        limits = ceilings(runs, shape)
        met = "meets" if rate >= TARGET else "does not meet"
        lines.append(
            f"- {generator} → `{destination}` ({DESTINATIONS[destination]}): best {rate:,.0f} "
            f"spans/s with {shape.processes} process(es) of {shape.workers} worker(s); this "
            f"{met} the {TARGET:,} target. With every process on these {CORES} cores the CPU "
            f"per span allows at most {limits['machine']:,.0f} spans/s; the collector alone "
            f"would carry {limits['collector']:,.0f}."
        )
    return "\n".join(lines)


def zero_loss(runs: Sequence[FleetRun]) -> str:
    spans = sum(run.spans for run in runs)
    peak_queue = max((s.queue_bytes for run in runs for s in run.samples), default=0)
    return (
        f"Zero loss in all {len(runs)} runs ({spans:,} spans): every generator sent all its "
        "spans (Python: none dropped or failed in the SDK; telemetrygen: every worker generated "
        "its traces, no export error logged); the collector accepted and sent exactly "
        "that many, with 0 failed, 0 refused, 0 failed to enqueue, and its queue empty at the "
        "end; the destination received exactly that many, each once and each with a "
        f"session.id. The largest sending queue seen was {peak_queue / 1024:,.0f} KiB."
    )


def environment(variables: Sequence[tuple[str, str]]) -> str:
    if not variables:
        return "No other collector environment."
    return "Collector environment: " + ", ".join(f"`{k}={v}`" for k, v in variables) + "."


def overlays(uris: Sequence[str]) -> str:
    if not uris:
        return "  No config overlays."
    return "  **Config overlays (a diagnostic, not the shipped config):** " + ", ".join(
        f"`{uri}`" for uri in uris
    )


def generators(kinds: Sequence[str], batch: int) -> str:
    """What each generator kind in the run is and how it sends, for the report's header."""
    how = {
        "python": "each with 100 sessions of its own, released together, creating as fast as "
        "they can through the library's tracing setup (SessionSpanProcessor, "
        "BatchSpanProcessor, DirectOTLPSpanExporter over OTLP/HTTP)",
        "telemetrygen": "one session each (the library's session attributes and the LLM-call "
        "attributes on every span), `--rate 0`, a fixed `--traces` count per worker, the Go "
        "SDK's BatchSpanProcessor and OTLP/HTTP exporter",
    }
    return "\n".join(
        f"  - {kind}: {GENERATOR_KINDS[kind]}; {how[kind]}." for kind in kinds
    ) + (f"\n  BatchSpanProcessor: queue = the process's whole share (the SDK never drops), "
         f"export batch {batch}.")


def report(runs: Sequence[FleetRun], args: argparse.Namespace) -> str:
    groups = group(runs)
    return f"""# Pipeline at full speed: several generators through the collector

`{command_line("pipeline_load.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}. Other sessions' work ran on it at the same time: "whole machine"
  below is every process's CPU (ours and theirs) over the run, out of {CORES} cores. Rates are
  noisy; CPU per span is the steadier figure, and the ceilings come from it.
- Python {platform.python_version()}; {package_versions(PACKAGES)}; collector {collector_version()}
  (bin/otelcol); telemetrygen {telemetrygen_version()}
  (bin/telemetrygen); telemetry/ at
  {git_revision("telemetry")}; otel-collector.yaml at {git_revision("otel-collector.yaml")}
- Per run: {args.spans:,} spans in traces of 10 (a run span, 9 LLM-call spans with 4
  attributes), split evenly over the generator processes (and their workers):
{generators(args.generator, args.batch_size)}
  Fresh processes every run; {args.rounds} round(s), configurations interleaved; medians.
- Collector: otel-collector.yaml as shipped ({collector_settings()}), but
  `OTELCOL_BATCH_FLUSH_TIMEOUT=200ms`: the 2 s default only delays the last partial batch.
  {environment(args.collector_env)}
{overlays(args.overlay)}
- End to end: from the first generator's start to the last span at the destination.

## Throughput, CPU per span, collector memory

{rates_table(groups)}

{zero_loss(runs)}

## Where the limit is

Spans/s each part could carry with the cores it can use to itself (CPU per span from the
table above): a Python generator one core (its GIL), telemetrygen and the collector all
{CORES}, the destination one (a Python process). "All on {CORES} cores" is the whole pipeline
sharing this machine, as it does here: the most it can reach.

{ceilings_table(groups)}

{verdict(groups)}
"""
