"""The results file of bench/pipeline_load.py: rates, CPU per span, collector memory, the limit."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence

from common import command_line, git_revision, machine_line, package_versions, utc_now
from local_stack import collector_version
from pipeline_destination import DESTINATIONS
from pipeline_fleet import FleetRun
from pipeline_settings import collector_settings

__all__ = ["TARGET", "report"]

TARGET = 25_000  # spans/s end to end through the collector (issue 14)
CORES = os.cpu_count() or 1
PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "protobuf", "uvicorn")
Groups = Mapping[tuple[str, int], Sequence[FleetRun]]


def _median(runs: Sequence[FleetRun], value: Callable[[FleetRun], float]) -> float:
    return float(statistics.median(value(run) for run in runs))


def _us(runs: Sequence[FleetRun], part: str) -> float:
    """Median CPU µs per span of one part: generators, collector or destination."""
    return _median(runs, lambda run: run.us_per_span(part))


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def group(runs: Sequence[tuple[int, FleetRun]]) -> dict[tuple[str, int], list[FleetRun]]:
    groups: dict[tuple[str, int], list[FleetRun]] = {}
    for count, run in runs:
        groups.setdefault((run.destination, count), []).append(run)
    return groups


def ceilings(runs: Sequence[FleetRun], count: int) -> dict[str, float]:
    """Spans/s each part could carry with the machine's cores to itself: cores / CPU per span.

    "machine" is every part together on this machine's cores: its ceiling is the rate the
    pipeline can reach here at best, whatever is split how.
    """
    cores = {"generators": min(count, CORES), "collector": CORES, "destination": 1}
    limits = {part: n * 1e6 / _us(runs, part) for part, n in cores.items()}
    everything = _median(runs, lambda r: sum(r.cpu.values()) / r.spans * 1e6)
    return {"machine": CORES * 1e6 / everything} | limits


def rates_table(groups: Groups) -> str:
    lines = [
        "| destination | generators | spans/s end to end: median (min–max) "
        "| CPU µs/span: generators · collector · destination · all "
        "| cores busy: ours · whole machine | collector RSS MiB: median · max sampled · VmHWM |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for (destination, count), runs in groups.items():
        rates = [run.rate for run in runs]
        us = [_us(runs, part) for part in ("generators", "collector", "destination")]
        ours = _median(runs, lambda r: sum(r.cpu.values()) / r.wall)
        machine = _median(runs, lambda r: r.machine_busy / r.wall)
        rss = [s.rss_kib for run in runs for s in run.samples]
        hwm = max(run.collector_kib[1] for run in runs)
        lines.append(
            f"| `{destination}` | {count} | **{statistics.median(rates):,.0f}** "
            f"({min(rates):,.0f}–{max(rates):,.0f}) "
            f"| {us[0]:.1f} · {us[1]:.1f} · {us[2]:.1f} · {sum(us):.1f} "
            f"| {ours:.2f} · {machine:.2f} "
            f"| {_mib(statistics.median(rss))} · {_mib(max(rss))} · {_mib(hwm)} |"
        )
    return "\n".join(lines)


def ceilings_table(groups: Groups) -> str:
    lines = [
        f"| destination | generators | all on {CORES} cores | generators | collector "
        "| destination | lowest |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for (destination, count), runs in groups.items():
        limits = ceilings(runs, count)
        parts = {k: v for k, v in limits.items() if k != "machine"}
        lowest = min(parts, key=parts.__getitem__)
        lines.append(
            f"| `{destination}` | {count} | {limits['machine']:,.0f} "
            + " ".join(f"| {limits[p]:,.0f}" for p in ("generators", "collector", "destination"))
            + f" | {lowest} |"
        )
    return "\n".join(lines)


def verdict(groups: Groups) -> str:
    lines = []
    for destination in DESTINATIONS:
        mine = {count: runs for (d, count), runs in groups.items() if d == destination}
        if not mine:
            continue
        count, runs = max(mine.items(), key=lambda item: _median(item[1], lambda r: r.rate))
        rate = _median(runs, lambda r: r.rate)
        limits = ceilings(runs, count)
        met = "meets" if rate >= TARGET else "does not meet"
        lines.append(
            f"- `{destination}` ({DESTINATIONS[destination]}): best {rate:,.0f} spans/s with "
            f"{count} generator(s); this {met} the {TARGET:,} target. With every process on "
            f"these {CORES} cores the CPU per span allows at most {limits['machine']:,.0f} "
            f"spans/s; the collector alone would carry {limits['collector']:,.0f}."
        )
    return "\n".join(lines)


def zero_loss(runs: Sequence[FleetRun]) -> str:
    spans = sum(run.spans for run in runs)
    peak_queue = max((s.queue_bytes for run in runs for s in run.samples), default=0)
    return (
        f"Zero loss in all {len(runs)} runs ({spans:,} spans): every generator exported all its "
        "spans (none dropped or failed in the SDK); the collector accepted and sent exactly "
        "that many, with 0 failed, 0 refused, 0 failed to enqueue, and its queue empty at the "
        "end; the destination received exactly that many, each once and each with a "
        f"session.id. The largest sending queue seen was {peak_queue / 1024:,.0f} KiB."
    )


def overlays(uris: Sequence[str]) -> str:
    if not uris:
        return "  No config overlays."
    return "  **Config overlays (a diagnostic, not the shipped config):** " + ", ".join(
        f"`{uri}`" for uri in uris
    )


def report(runs: Sequence[tuple[int, FleetRun]], args: argparse.Namespace) -> str:
    groups = group(runs)
    return f"""# Pipeline at full speed: several generators through the collector

`{command_line("pipeline_load.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}. Other sessions' work ran on it at the same time: "whole machine"
  below is every process's CPU (ours and theirs) over the run, out of {CORES} cores. Rates are
  noisy; CPU per span is the steadier figure, and the ceilings come from it.
- Python {platform.python_version()}; {package_versions(PACKAGES)}; collector {collector_version()}
  (bin/otelcol); telemetry/ at {git_revision("telemetry")}; otel-collector.yaml at
  {git_revision("otel-collector.yaml")}
- Per run: {args.spans:,} spans in traces of 10 (a run span, 9 LLM-call spans with 4
  attributes), split evenly over the generator processes, each with 100 sessions of its own,
  released together, creating as fast as they can through the library's tracing setup
  (SessionSpanProcessor, BatchSpanProcessor, DirectOTLPSpanExporter over OTLP/HTTP).
  BatchSpanProcessor: queue = the generator's whole share (the SDK never drops), export batch
  {args.batch_size}. Fresh processes every run; {args.rounds} round(s), configurations
  interleaved; medians.
- Collector: otel-collector.yaml as shipped ({collector_settings()}), but
  `OTELCOL_BATCH_FLUSH_TIMEOUT=200ms`: the 2 s default only delays the last partial batch.
{overlays(args.overlay)}
- End to end: from the first generator's first span to the last span at the destination.

## Throughput, CPU per span, collector memory

{rates_table(groups)}

{zero_loss([run for _, run in runs])}

## Where the limit is

Spans/s each part could carry with the cores it can use to itself (CPU per span from the
table above): Python generators one core each (their GIL), the collector all {CORES}, the
destination one (a Python process). "All on {CORES} cores" is the whole pipeline sharing this
machine, as it does here: the most it can reach.

{ceilings_table(groups)}

{verdict(groups)}
"""
