"""The results file of bench/service_overhead.py: throughput, latency, CPU, and the checks."""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from devstack.delivery import CollectorCounters

from common import command_line, git_revision, machine_line, package_versions, utc_now
from local_stack import collector_version
from service_checks import ExportedTraces, answered_runs

PACKAGES = ("fastapi", "uvicorn", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
            "opentelemetry-instrumentation-fastapi")
GOAL = 0.90


def _of(rounds: Sequence[Any], mode: str) -> list[Any]:
    return [r for r in rounds if r.mode == mode]


def _ms_per_request(r: Any, process: str = "service") -> float:
    return float(r.cpu[process] / r.wrk["requests"] * 1e3)


def _share(r: Any, process: str) -> float:
    return float(r.cpu[process] / (r.wrk["duration_us"] / 1e6))


def summary_table(rounds: Sequence[Any]) -> str:
    lines = [
        "| tracing | req/s | min–max | p50 ms | p99 ms | service CPU ms/request "
        "| service CPU, cores | collector CPU, cores | sink CPU, cores | wrk CPU, cores |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in ("off", "on"):
        mine = _of(rounds, mode)
        rps = [r.rps for r in mine]

        def med(value: Any, rounds: list[Any] = mine) -> float:
            return float(statistics.median(value(r) for r in rounds))

        lines.append(
            f"| {mode} | {statistics.median(rps):,.1f} | {min(rps):,.1f}–{max(rps):,.1f} "
            f"| {med(lambda r: r.wrk['p50_us'] / 1e3):.1f} "
            f"| {med(lambda r: r.wrk['p99_us'] / 1e3):.1f} | {med(_ms_per_request):.2f} | "
            + " | ".join(f"{med(lambda r, p=p: _share(r, p)):.2f}"
                         for p in ("service", "collector", "sink", "wrk"))
            + " |"
        )
    return "\n".join(lines)


def rounds_table(rounds: Sequence[Any]) -> str:
    lines = ["| round | tracing | requests | req/s | p50 ms | p99 ms | service CPU ms/request |",
             "|--:|---|--:|--:|--:|--:|--:|"]
    for index, r in enumerate(rounds):
        lines.append(
            f"| {index // 2 + 1} | {r.mode} | {r.wrk['requests']:,} | {r.rps:,.1f} "
            f"| {r.wrk['p50_us'] / 1e3:.1f} | {r.wrk['p99_us'] / 1e3:.1f} "
            f"| {_ms_per_request(r):.2f} |"
        )
    return "\n".join(lines)


def ratios(rounds: Sequence[Any]) -> tuple[float, float, float, float]:
    """Median, min and max of each pair's on/off throughput, and the CPU-per-request ratio."""
    paired = [on.rps / off.rps for off, on in zip(_of(rounds, "off"), _of(rounds, "on"), strict=True)]
    cpu_off = statistics.median(_ms_per_request(r) for r in _of(rounds, "off"))
    cpu_on = statistics.median(_ms_per_request(r) for r in _of(rounds, "on"))
    return statistics.median(paired), min(paired), max(paired), cpu_off / cpu_on


def checks(
    targets: Mapping[str, Any], traces: ExportedTraces, counters: CollectorCounters
) -> str:
    on = targets["on"]
    answered, disconnects = answered_runs(on.logs())
    shapes = ", ".join(f"{n} × {size} spans" for size, n in sorted(traces.spans_per_trace.items()))
    lines = [
        f"- on: the service answered {answered:,} chat runs (warm-ups and rounds); the sink holds "
        f"{traces.stamped:,} traces ({shapes}) in which every span carries session.id "
        f"`{on.session_id}` and user.id `{on.account.user_id}`; {traces.spans:,} spans in all, "
        f"what the collector sent ({counters.sent:,}) of what it accepted "
        f"({counters.accepted:,}; {counters.filtered:,} kept out of Langfuse as spans of "
        "requests that started no run), none failed; no "
        "\"Queue full\" from the service's BatchSpanProcessor.",
        "- off: the collector accepted 0 spans during every off round, and no span of the off "
        f"service's user (`{targets['off'].account.user_id}`) is at the sink.",
    ]
    extra = traces.stamped - answered
    if extra or counters.filtered:
        lines.append(
            f"- Requests wrk abandoned when a round's time was up ({disconnects} "
            f"ClientDisconnect in the service log): {extra} ran to the end (their trace is at "
            f"the sink, fully stamped, with no 200 logged) and {counters.filtered} spans were "
            "HTTP server spans of requests that had not sent their body yet, so no run started: "
            "the collector kept them out of Langfuse. No trace mixes spans with and without a "
            "session."
        )
    return "\n".join(lines)


def report(
    rounds: Sequence[Any],
    targets: Mapping[str, Any],
    traces: ExportedTraces,
    counters: CollectorCounters,
    args: argparse.Namespace,
) -> str:
    ratio, low, high, cpu_ratio = ratios(rounds)
    verdict = "met" if ratio >= GOAL else "missed"
    return f"""# Service overhead: tracing off and on

`{command_line("service_overhead.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}; other sessions' tests ran on it at the same time, so
  wall-clock figures are noisy: the CPU per request is the steadier cross-check.
- Python {platform.python_version()}; {package_versions(PACKAGES)};
  collector {collector_version()} (bin/otelcol, otel-collector.yaml, production settings);
  service/ and telemetry/ at {git_revision("service", "telemetry")}
- `python -m service serve` (one uvicorn worker, offline LLM provider, SQLite), identical in
  both modes but for `OTEL_SDK_DISABLED=true` when off; on, it exports with the SDK's default
  BatchSpanProcessor settings to the real collector, which sends to the development sink
  (Langfuse's contract). Load: `wrk -t1 -c{args.connections}`, `POST /api/v1/ai/chat`
  (`builtin:chat`, one user, one stateKey). {args.rounds} pairs of rounds off, on, off, on, ...;
  each round starts a fresh service process, warms it up for {args.warmup:g} s untimed, measures
  {args.duration:g} s, stops it (flushing its spans) and waits for the collector to send them;
  medians over rounds.
- wrk is a closed loop at a fixed {args.connections} connections: it measures the most the service
  can serve, and latency there is mostly queueing (p50 ≈ connections / throughput). Being C
  with one event-loop thread, it uses a fraction of a core (last column), leaving the service
  its own core; a Python load generator would need about as much CPU per request as the
  service. Limits: no fixed-rate mode (no coordinated-omission correction, as wrk2 has),
  and the collector and sink share the machine's two cores with the service when tracing is on.

| | |
|---|---|
| throughput on / off (median of paired rounds) | **{ratio:.3f}** (range {low:.3f}–{high:.3f}) |
| service CPU per request, off / on | {cpu_ratio:.3f} |
| goal: on keeps ≥ {GOAL:.0%} of the throughput | **{verdict}** |

{summary_table(rounds)}

"Cores" is CPU seconds per second of the round: the service is CPU-bound near 1.0 (one
Python process); with tracing on, the collector and sink work in the same rounds.

Rounds in the order they ran:

{rounds_table(rounds)}

Checked in this run:

{checks(targets, traces, counters)}
"""


def profile_report(tables: str, args: argparse.Namespace) -> str:
    return f"""# Service profile: where the CPU goes, tracing off and on

`{command_line("service_overhead.py")}`, {utc_now()}.

- Machine: {machine_line()}; shared with other sessions' tests.
- Python {platform.python_version()}; {package_versions([*PACKAGES, "py-spy"])};
  service/ and telemetry/ at {git_revision("service", "telemetry")}
- The two services of `bench/service_overhead.py` (same settings but `OTEL_SDK_DISABLED`),
  each recorded by `py-spy record --gil --threads --rate 250` while `wrk -t1 -c{args.connections}`
  drives it for {args.duration:g} s. Only the thread holding the GIL is sampled, so the figures
  are the CPU the interpreter spends, not time waiting for the GIL: ms of GIL time per answered
  request. A row counts every sample whose stack contains the function (inclusive).

{tables}"""
