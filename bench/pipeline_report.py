"""The results file of bench/pipeline_throughput.py: rates, CPU per span, and the bottleneck."""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from common import (
    command_line,
    git_revision,
    machine_line,
    package_versions,
    utc_now,
)
from local_stack import collector_version

PACKAGES = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "protobuf", "uvicorn")
# A Python process runs its Python code on one core at a time (the GIL); the collector is Go.
CORES = {"generator": 1.0, "sink": 1.0, "null": 1.0, "collector": 2.0}


def _median(runs: Sequence[Any], value: Any) -> float:
    return float(statistics.median(value(run) for run in runs))


def _rate(run: Any) -> float:
    return float(run.spans / run.seconds)


def _us(run: Any, process: str) -> float:
    return float(run.cpu.get(process, 0.0) / run.spans * 1e6)


def _by_stage(runs: Sequence[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for run in runs:
        grouped.setdefault(run.stage, []).append(run)
    return grouped


def rates_table(grouped: Mapping[str, list[Any]], labels: Mapping[str, str]) -> str:
    lines = [
        "| stage | spans/s end to end | min–max over rounds | SDK creating, spans/s "
        "| collector RSS after start → peak (VmHWM) |",
        "|---|--:|--:|--:|--:|",
    ]
    for stage, runs in grouped.items():
        rates = [_rate(run) for run in runs]
        creating = _median(runs, lambda r: r.spans / r.generator["create_s"])
        memory = "–"
        if runs[0].collector_kib is not None:
            start = _median(runs, lambda r: r.collector_kib[0]) / 1024
            peak = max(run.collector_kib[1] for run in runs) / 1024
            memory = f"{start:.0f} → {peak:.0f} MiB"
        lines.append(
            f"| `{stage}` {labels[stage]} | {statistics.median(rates):,.0f} "
            f"| {min(rates):,.0f}–{max(rates):,.0f} | {creating:,.0f} | {memory} |"
        )
    return "\n".join(lines)


def cpu_table(grouped: Mapping[str, list[Any]]) -> str:
    lines = [
        "| stage | generator: creating | generator: exporting | generator: process "
        "| collector | sink / null endpoint | busiest process, share of its ceiling |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for stage, runs in grouped.items():
        cells = [f"{_median(runs, lambda r: _us(r, p)):.1f}" for p in
                 ("generator main", "generator export", "generator")]
        cells.append(f"{_median(runs, lambda r: _us(r, 'collector')):.1f}"
                     if "collector" in runs[0].cpu else "–")
        destination = "sink" if "sink" in runs[0].cpu else "null" if "null" in runs[0].cpu else ""
        cells.append(f"{_median(runs, lambda r: _us(r, destination)):.1f}" if destination else "–")
        name, share = busiest(runs)
        lines.append(f"| `{stage}` | {' | '.join(cells)} | {name} {share:.0%} |")
    return "\n".join(lines)


def busiest(runs: Sequence[Any]) -> tuple[str, float]:
    """The process closest to its CPU ceiling: CPU seconds / wall seconds / cores it can use."""
    shares = {
        name: _median(runs, lambda r, n=name: r.cpu[n] / r.seconds / cores)
        for name, cores in CORES.items()
        if name in runs[0].cpu
    }
    name = max(shares, key=shares.__getitem__)
    return name, shares[name]


def ceilings(runs: Sequence[Any]) -> dict[str, float]:
    """Spans/s each process could reach if it had its cores to itself: cores / CPU per span."""
    return {
        name: cores * 1e6 / _median(runs, lambda r, n=name: _us(r, n))
        for name, cores in CORES.items()
        if name in runs[0].cpu and _median(runs, lambda r, n=name: _us(r, n)) > 0
    }


def analysis(grouped: Mapping[str, list[Any]]) -> str:
    rate = {stage: _median(runs, _rate) for stage, runs in grouped.items()}
    us = {stage: {p: _median(runs, lambda r, p=p: _us(r, p)) for p in runs[0].cpu}
          for stage, runs in grouped.items()}
    lines = []
    full = grouped.get("sdk-col-sink")
    if full:
        limits = ceilings(full)
        bottleneck = min(limits, key=limits.__getitem__)
        lines.append(
            "- Ceilings in the full pipeline, from CPU per span (each process alone on the cores "
            "it can use): " + ", ".join(f"{n} {v:,.0f} spans/s" for n, v in limits.items())
            + f". The lowest is the **{bottleneck}**: it is the bottleneck, and the measured "
            f"{rate['sdk-col-sink']:,.0f} spans/s sits below its ceiling because the processes "
            "share 2 cores (and the machine with other work)."
        )
        mine = us["sdk-col-sink"]
        alone = us.get("sdk", {}).get("generator main")
        encode = _median(full, lambda r: r.generator["encode_s_per_span"] * 1e6)
        lines.append(
            f"- Inside the generator, exporting costs {mine['generator export']:.0f} µs of CPU "
            f"per span, creating it {mine['generator main']:.0f} µs"
            + (f" ({alone:.0f} µs with nothing exporting: the export thread takes the GIL from "
               "the thread creating spans, and both pay for the switches)" if alone else "")
            + f". Of the export, {encode:.0f} µs per span is the OTLP encoding "
            "(`sessiontrace._otlp_encoder`, timed alone on one batch after the run; the SDK's own "
            "encoder costs about 4.5 times as much, `bench/encoder_overhead.py`): it runs on the "
            "export thread, under the same GIL as the application."
        )
    if {"sdk-col", "sdk-col-null", "sdk-col-sink"} <= us.keys():
        lines.append(
            f"- The collector spends {us['sdk-col']['collector']:.0f} µs per span receiving "
            f"(debug exporter), {us['sdk-col-null']['collector']:.0f} µs with its real export "
            f"path (file-backed queue, batching, gzip), {us['sdk-col-sink']['collector']:.0f} µs "
            "to the sink; its rate follows the generator's in every stage: not the bottleneck."
        )
    if {"sdk-sink", "sdk-col-sink"} <= rate.keys():
        direct, full_rate = rate["sdk-sink"], rate["sdk-col-sink"]
        why = (
            "slower than through the collector: the SDK's export is synchronous, so without "
            "the collector every batch waits for the sink to store it, while the collector "
            "answers once the batch is in its queue and sends on its own"
            if direct < 0.95 * full_rate else "no faster than through the collector"
        )
        lines.append(
            f"- The sink costs {us['sdk-col-sink']['sink']:.0f} µs per span (decode, SQLite). "
            f"Straight from the SDK ({direct:,.0f} spans/s, against {full_rate:,.0f} through "
            f"the collector) it is {why}."
        )
    return "\n".join(lines)


def drops(probe: Any) -> str:
    gen = probe.generator
    if not gen["dropped"]:
        return (
            f"With the SDK's default queue ({probe.queue} spans) the full pipeline also lost "
            f"nothing ({probe.spans:,} spans fit in it or were exported in time)."
        )
    return (
        f"With the SDK's default queue ({probe.queue} spans) instead, the same burst through the "
        f"full pipeline lost **{gen['dropped']:,} of {probe.spans:,} spans "
        f"({gen['dropped'] / probe.spans:.0%}) in the BatchSpanProcessor** (\"Queue full, "
        f"dropping span\"): creating outran exporting. Everything the SDK did export "
        f"({gen['exported']:,}) reached the sink. Hence the queue above: a process that can "
        "produce bursts faster than its export thread encodes them needs "
        "`OTEL_BSP_MAX_QUEUE_SIZE` at least the burst size (memory: the queued spans)."
    )


def report(
    runs: Sequence[Any], probe: Any, labels: Mapping[str, str], args: argparse.Namespace
) -> str:
    grouped = _by_stage(runs)
    return f"""# Pipeline throughput

`{command_line("pipeline_throughput.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}; other sessions' tests ran on it at the same time, so wall-clock
  rates are noisy: the CPU-per-span table is the steadier cross-check.
- Python {platform.python_version()}; {package_versions(PACKAGES)}; collector {collector_version()}
  (bin/otelcol, otel-collector.yaml); telemetry/ at {git_revision("telemetry")}
- Per run: {args.spans:,} spans in traces of 10 (a run span, 9 LLM-call spans with 4 attributes),
  100 sessions, created by one thread as fast as it can. BatchSpanProcessor: queue
  {args.spans:,} (the whole run: the SDK never drops), export batch {args.batch_size}, other settings
  default. Collector: the production config but `OTELCOL_BATCH_FLUSH_TIMEOUT=200ms`.
  Fresh processes for every run; {args.rounds} round(s), stages interleaved; medians.
- End to end: from the first span's start to the last span at the destination (sink or null
  endpoint: its arrival time; no-op exporter and debug exporter: the SDK's flush returning).
- Checked in every run (the run fails otherwise): the SDK dropped and failed nothing; the
  collector accepted and sent every span and failed none; the sink stored each span exactly once,
  every one with session.id, and rejected no request.

## Throughput

{rates_table(grouped, labels)}

{drops(probe)}

## CPU per span (µs), by process

{cpu_table(grouped)}

## Where the bottleneck is

{analysis(grouped)}
"""
