"""Pipeline throughput: spans/s from the SDK through the real collector to the capture endpoint.

A separate Python process (bench/span_generator.py: the service's tracing setup, SessionSpanProcessor
then BatchSpanProcessor then the OTLP/HTTP exporter) creates a fixed number of spans as fast as it
can. Its BatchSpanProcessor queue holds the whole run (OTEL_BSP_MAX_QUEUE_SIZE = spans), so the SDK
never drops; the run fails if any span is missing anywhere: every span must reach the destination,
exactly once, with session.id. To say where the bottleneck is, the same run goes through each
stage alone as well as the whole pipeline, with fresh processes each time:

  sdk          SDK alone: BatchSpanProcessor to a no-op exporter (span creation only)
  sdk-sink     SDK straight to the development sink (OTLP/HTTP protobuf, Langfuse's contract)
  sdk-col      SDK to the collector, whose pipeline ends in its debug exporter (no export)
  sdk-col-null SDK to the collector with the real exporter path (persistent queue, batching,
               gzip, Basic auth) to bench/null_endpoint.py, which answers 200 unread
  sdk-col-sink the whole pipeline: SDK to the real collector to the development sink

Each process's CPU time (from /proc) is divided by the spans it handled: on a shared 2-core machine
that is steadier than wall-clock rates, and it gives each process's ceiling (a Python process,
one GIL, cannot pass 1 s / CPU per span; the Go collector can use both cores). Rounds interleave
the stages; figures are medians over rounds. Also reported: the collector's peak RSS (VmHWM).

Usage: python bench/pipeline_throughput.py [--quick] [--spans N] [--rounds R] [--batch-size B]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.delivery import collector_counters
from devstack.processes import WaitTimeout, wait_until
from devstack.stack import CollectorHandle, SinkHandle

from common import RESULTS_DIR, cpu_seconds, memory_kib, write_results
from local_stack import OTEL_CLEARED, Workspace, build_collector, sink_span_counts, workspace
from pipeline_report import report

RESULTS = RESULTS_DIR / "pipeline_throughput.md"
GENERATOR = Path(__file__).resolve().parent / "span_generator.py"
STAGES = {
    "sdk": "SDK → no-op exporter",
    "sdk-sink": "SDK → sink (direct)",
    "sdk-col": "SDK → collector (debug exporter)",
    "sdk-col-null": "SDK → collector → null endpoint",
    "sdk-col-sink": "SDK → collector → sink (full pipeline)",
}
DEBUG_ONLY = "yaml:service::pipelines::traces::exporters: [debug]"
DEFAULT_QUEUE = 2048  # the SDK's OTEL_BSP_MAX_QUEUE_SIZE default
STALL_SECONDS = 60.0  # no progress at the destination for this long fails the run


@dataclass
class Run:
    """One stage's run: the generator's own report, CPU seconds per process, what arrived."""

    stage: str
    generator: dict[str, Any]
    queue: int  # OTEL_BSP_MAX_QUEUE_SIZE
    seconds: float = 0.0  # first span started to last span at the destination
    cpu: dict[str, float] = field(default_factory=dict)
    collector_kib: tuple[int, int] | None = None  # RSS after start-up, peak RSS
    problems: list[str] = field(default_factory=list)

    @property
    def spans(self) -> int:
        return int(self.generator["spans"])

    def summary(self) -> str:
        dropped = self.generator["dropped"]
        return (f"{self.stage} (queue {self.queue}): {self.spans / self.seconds:,.0f} spans/s, "
                f"{dropped} dropped by the SDK; {'; '.join(self.problems) or 'nothing lost after'}")


def generate(
    endpoint: str, spans: int, batch: int, queue: int, headers: dict[str, str]
) -> dict[str, Any]:
    env = dict.fromkeys(OTEL_CLEARED, None) | {
        "OTEL_BSP_MAX_QUEUE_SIZE": str(queue),
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(batch),
    }
    child_env = {k: v for k, v in (os.environ | env).items() if v is not None}
    argv = [sys.executable, str(GENERATOR), "--endpoint", endpoint, "--spans", str(spans)]
    argv += [arg for name, value in headers.items() for arg in ("--header", f"{name}={value}")]
    done = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"span generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sink_arrival(db: Path) -> tuple[int, float]:
    """Spans the sink accepted so far, and when the last accepted request arrived."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        spans, last = connection.execute(
            "SELECT COALESCE(SUM(span_count), 0), COALESCE(MAX(received_at), 0) FROM requests"
            " WHERE status = 200"
        ).fetchone()
    finally:
        connection.close()
    return int(spans), float(last)


def wait_for(count: Any, expected: int, what: str) -> None:
    """Wait until count() reaches `expected`, failing after STALL_SECONDS without progress."""
    state = {"seen": -1, "since": time.monotonic()}

    def arrived() -> bool:
        seen = count()
        if seen != state["seen"]:
            state["seen"], state["since"] = seen, time.monotonic()
        elif time.monotonic() - state["since"] > STALL_SECONDS:
            raise WaitTimeout(f"{what}: stuck at {seen} of {expected} spans")
        return bool(seen >= expected)

    wait_until(arrived, 3600, interval=0.1, message=what)


def run_stage(stage: str, spans: int, batch: int, queue: int, space: Workspace) -> Run:
    """Start the stage's processes, generate, wait for every span, read the counters."""
    sink: SinkHandle | None = None
    collector: CollectorHandle | None = None
    null = None
    headers: dict[str, str] = {}
    if stage.endswith("sink"):
        sink = space.sink()
    if stage.endswith("null"):
        null = space.null_endpoint()
    # The Langfuse pipeline's exporter whose sends count (sdk-col replaces it with debug).
    exporter = "debug" if stage == "sdk-col" else None
    if stage.startswith("sdk-col"):
        destination = sink.url if sink else null.url if null else "http://127.0.0.1:9"
        collector = space.collector(
            destination=destination,
            public_key=sink.public_key if sink else "pk-lf-bench",
            secret_key=sink.secret_key if sink else "sk-lf-bench",
            overlays=[DEBUG_ONLY] if stage == "sdk-col" else [],
            # The production 2 s flush only adds a fixed tail; batches still fill to min_size.
            OTELCOL_BATCH_FLUSH_TIMEOUT="200ms",
        )
        endpoint = collector.otlp_http_url + "/v1/traces"
    elif sink is not None:
        endpoint = sink.url + "/api/public/otel/v1/traces"
        headers = {"Authorization": _basic(sink), "x-langfuse-ingestion-version": "4"}
    else:
        endpoint = "none"
    pids = {
        name: handle.process.pid
        for name, handle in (("collector", collector), ("sink", sink), ("null", null))
        if handle is not None
    }
    start_kib = memory_kib(pids["collector"], "VmRSS") if collector else 0
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}

    run = Run(stage, generate(endpoint, spans, batch, queue, headers), queue)
    started = run.generator["started_at"]
    run.seconds = run.generator["flush_s"]
    exported = run.generator["exported"]
    if sink is not None:
        wait_for(lambda: sink_arrival(sink.db)[0], exported, f"{stage}: spans at the sink")
        run.seconds = sink_arrival(sink.db)[1] - started
    if collector is not None:
        wait_for(lambda: collector_counters(collector.metrics_url, exporter=exporter).sent,
                 exported, stage)
    if null is not None:
        run.seconds = float(null.stats()["last_at"]) - started
    run.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    run.cpu["generator"] = run.generator["process_cpu_s"]
    run.cpu["generator main"] = run.generator["main_cpu_s"]
    run.cpu["generator export"] = run.generator["export_cpu_s"]
    if collector is not None:
        run.collector_kib = (start_kib, memory_kib(collector.process.pid, "VmHWM"))
    run.problems = check(run, collector, sink)
    return run


def measure(stage: str, spans: int, batch: int, queue: int) -> Run:
    with workspace("pipeline") as space:
        return run_stage(stage, spans, batch, queue, space)


def check(run: Run, collector: CollectorHandle | None, sink: SinkHandle | None) -> list[str]:
    """Every span exported by the SDK, taken and sent by the collector, stored once, stamped.

    With a queue smaller than the run (the SDK's default), drops in the SDK are what is being
    measured: then only what the SDK exported must arrive.
    """
    gen, problems = run.generator, []
    n = run.spans if run.queue >= run.spans else gen["exported"]
    if gen["failed"] or gen["exported"] != n:
        problems.append(f"SDK: {gen['exported']} of {n} exported, {gen['failed']} failed, "
                        f"{gen['dropped']} dropped in the BatchSpanProcessor")
    if collector is not None:
        exporter = "debug" if run.stage == "sdk-col" else None
        counters = collector_counters(collector.metrics_url, exporter=exporter)
        if (counters.accepted, counters.sent, counters.failed) != (n, n, 0):
            problems.append(f"collector: {counters} for {n} spans")
    if sink is not None:
        counts = sink_span_counts(sink.db)
        if counts["spans"] != n or counts["distinct_spans"] != n or counts["stamped"] != n:
            problems.append(f"sink: {counts} for {n} spans (each once, each with session.id)")
        if counts["rejected_requests"]:
            problems.append(f"sink rejected {counts['rejected_requests']} export requests")
    return [f"{run.stage}: {p}" for p in problems]


def _basic(sink: SinkHandle) -> str:
    pair = f"{sink.public_key}:{sink.secret_key}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few spans, one round")
    parser.add_argument("--spans", type=int, help="spans per run (a multiple of 10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every stage")
    parser.add_argument("--batch-size", type=int, default=512, help="OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stage keys")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    args.spans = args.spans or (2_000 if args.quick else 100_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    stages = args.stages.split(",")
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")

    build_collector()
    runs: list[Run] = []
    for round_index in range(args.rounds):
        for stage in stages:
            runs.append(measure(stage, args.spans, args.batch_size, args.spans))
            print(f"round {round_index + 1}/{args.rounds}: {runs[-1].summary()}", file=sys.stderr)
    # Once more with the SDK's default queue: what a burst like this loses without the tuning.
    probe = measure("sdk-col-sink", args.spans, args.batch_size, DEFAULT_QUEUE)
    print(f"default queue: {probe.summary()}", file=sys.stderr)
    problems = [p for run in [*runs, probe] for p in run.problems]
    if problems:
        print("spans were lost:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    text = report(runs, probe, STAGES, args)
    write_results(text, args.output or (None if args.quick else RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
