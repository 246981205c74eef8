"""Several span generators at once, the real collector, a destination, and what each one counted.

The pieces bench/pipeline_load.py (spans/s end to end) and bench/pipeline_soak.py (a million
spans, collector memory) share. Generators are either bench/span_generator.py processes
(Python, the library's own export path), started together and released at once
(`--wait-for-go`), or telemetrygen processes (bench/pipeline_telemetrygen.py: Go, cheap enough
that the pipeline behind them sets the rate), each with its own share of the spans and its own
sessions. The collector is bin/otelcol with otel-collector.yaml; the destination is either
bench/null_endpoint.py (answers as Langfuse would, counts spans, stores nothing) or the
development sink (decodes every span into SQLite, Langfuse's contract enforced).

Zero loss is checked three ways: every generator sent all its spans (the Python generators count
what their exporter sent and the SDK dropped; telemetrygen sends a fixed number of traces); the
collector accepted and sent exactly that many, failed, refused and failed to enqueue none, and
holds nothing in its queue; the destination received exactly that many, each with a session.id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from devstack.processes import wait_until

from common import cpu_seconds, memory_kib
from local_stack import OTEL_CLEARED, Workspace
from pipeline_collector import (
    CollectorReading,
    CollectorSample,
    CollectorSampler,
    read_collector,
    start_collector,
)
from pipeline_destination import Arrivals, start_destination, wait_for_arrivals
from pipeline_telemetrygen import TelemetrygenFleet
from span_generator import TRACE_SIZE

__all__ = ["GENERATOR_KINDS", "Fleet", "FleetRun", "Generators", "delivery_problems",
           "machine_busy_seconds", "make_fleet", "run_fleet", "shares"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GENERATOR = Path(__file__).resolve().parent / "span_generator.py"
GENERATOR_KINDS = {
    "python": "bench/span_generator.py, the Python SDK",
    "telemetrygen": "bin/telemetrygen, the OpenTelemetry project's load generator in Go",
}


class Fleet(Protocol):
    """Generator processes: prepared by `start()`, sending from `go()`, reporting once done."""

    def start(self) -> None: ...
    def go(self) -> None: ...
    def results(self) -> list[dict[str, Any]]: ...
    def problems(self, reports: Sequence[dict[str, Any]]) -> list[str]: ...
    def stop(self) -> None: ...


def shares(total: int, count: int) -> list[int]:
    """`total` spans split over `count` generators, each a whole number of traces."""
    traces, rest = divmod(total, TRACE_SIZE)
    if rest or traces < count:
        raise ValueError(
            f"--spans must be a multiple of {TRACE_SIZE} with at least one trace per generator, "
            f"got {total} for {count} generators"
        )
    return [(traces // count + (i < traces % count)) * TRACE_SIZE for i in range(count)]


@dataclass
class Generators:
    """span_generator.py processes started together; `go()` releases them all at once."""

    endpoint: str  # the collector's OTLP/HTTP base URL
    spans: Sequence[int]
    log_dir: Path
    queue: int  # OTEL_BSP_MAX_QUEUE_SIZE of each
    batch: int  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE of each
    rate: float = 0.0  # spans/s of all generators together; 0: as fast as they can
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    _logs: list[IO[str]] = field(default_factory=list)

    def start(self) -> None:
        env = dict.fromkeys(OTEL_CLEARED, None) | {
            "OTEL_BSP_MAX_QUEUE_SIZE": str(self.queue),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(self.batch),
        }
        child_env = {k: v for k, v in (os.environ | env).items() if v is not None}
        for index, spans in enumerate(self.spans):
            argv = [sys.executable, str(GENERATOR), "--endpoint", self.endpoint + "/v1/traces",
                    "--spans", str(spans), "--index", str(index), "--wait-for-go"]
            if self.rate:
                argv += ["--rate", str(self.rate * spans / sum(self.spans))]
            log = (self.log_dir / f"generator-{index}.log").open("w")
            self._logs.append(log)
            self.processes.append(subprocess.Popen(
                argv, env=child_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True,
            ))
        for index, process in enumerate(self.processes):
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                self.stop()
                raise RuntimeError(f"span generator {index} failed to start:\n{self._log(index)}")

    def go(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.close()

    def results(self, timeout: float = 3600.0) -> list[dict[str, Any]]:
        """Each generator's JSON report, once it has flushed and exited."""
        results = []
        for index, process in enumerate(self.processes):
            assert process.stdout is not None
            out = process.stdout.read()
            if process.wait(timeout) != 0:
                raise RuntimeError(
                    f"span generator {index} failed ({process.returncode}):\n{self._log(index)}"
                )
            results.append(json.loads(out.strip().splitlines()[-1]))
        for log in self._logs:
            log.close()
        return results

    def problems(self, reports: Sequence[dict[str, Any]]) -> list[str]:
        """Spans a generator's SDK did not export: failed, or dropped from its queue."""
        return [
            f"generator {i}: {g['exported']} of {g['spans']} exported, {g['failed']} failed, "
            f"{g['dropped']} dropped in the BatchSpanProcessor"
            for i, g in enumerate(reports)
            if (g["exported"], g["failed"], g["dropped"]) != (g["spans"], 0, 0)
        ]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def _log(self, index: int) -> str:
        self._logs[index].flush()
        return (self.log_dir / f"generator-{index}.log").read_text()[-3000:]


def delivery_problems(
    expected: int,
    generator_problems: Sequence[str],
    collector: CollectorReading,
    arrivals: Arrivals,
) -> list[str]:
    """Everything that says a span was lost, duplicated or unstamped; empty when none was."""
    problems = [*generator_problems, *collector.problems(expected)]
    got = (arrivals.spans, arrivals.distinct, arrivals.stamped, arrivals.rejected_requests)
    if got != (expected, expected, expected, 0):
        problems.append(
            f"destination: {arrivals.spans} spans ({arrivals.distinct} distinct), "
            f"{arrivals.stamped} with a session.id, {arrivals.rejected_requests} requests "
            f"rejected; expected {expected} spans, each once and stamped"
        )
    return problems


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat): ours and everyone else's."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / _CLOCK_TICKS


@dataclass
class FleetRun:
    """One load through the collector: what each process did and what arrived."""

    destination: str
    generator: str  # a GENERATOR_KINDS key
    workers: int  # per generator process (telemetrygen's goroutines; 1 for Python)
    generators: list[dict[str, Any]]  # each generator's report
    seconds: float  # first generator's first span to the last span at the destination
    cpu: dict[str, float]  # CPU seconds: "generators" (all), "collector", "destination"
    machine_busy: float  # CPU seconds every process on the machine used meanwhile
    wall: float  # seconds over which cpu and machine_busy were read
    samples: list[CollectorSample]  # the collector's memory and queue through the run
    collector_kib: tuple[int, int]  # collector VmRSS just before the load, VmHWM after
    collector: CollectorReading
    problems: list[str]

    @property
    def spans(self) -> int:
        return sum(int(g["spans"]) for g in self.generators)

    @property
    def rate(self) -> float:
        return self.spans / self.seconds

    def us_per_span(self, process: str) -> float:
        return self.cpu[process] / self.spans * 1e6


def make_fleet(
    kind: str, endpoint: str, split: Sequence[int], log_dir: Path, *, queue: int, batch: int,
    rate: float, workers: int,
) -> Fleet:
    """The generator processes of one run: `kind` is a GENERATOR_KINDS key."""
    if kind == "python":
        if workers != 1:
            raise ValueError(f"a Python generator has one thread creating spans, got {workers}")
        return Generators(endpoint, split, log_dir, queue=queue, batch=batch, rate=rate)
    if kind == "telemetrygen":
        return TelemetrygenFleet(endpoint, split, log_dir, queue=queue, batch=batch, rate=rate,
                                 workers=workers)
    raise ValueError(f"generator must be one of {', '.join(GENERATOR_KINDS)}, got {kind!r}")


def run_fleet(
    space: Workspace,
    destination_kind: str,
    *,
    generator: str = "python",
    workers: int = 1,
    generators: int,
    spans: int,
    batch: int,
    queue: int | None = None,
    rate: float = 0.0,
    sample_interval: float = 0.5,
    collector_env: dict[str, str] | None = None,
    overlays: Sequence[str] = (),
) -> FleetRun:
    """Run `spans` from `generators` processes of kind `generator` through the collector;
    count everything.

    `queue`: each generator's OTEL_BSP_MAX_QUEUE_SIZE; None: its whole share, so the SDK never
    drops and what is measured is the pipeline behind it.
    """
    destination = start_destination(space, destination_kind)
    collector = start_collector(space, destination, overlays, **(collector_env or {}))
    split = shares(spans, generators)
    fleet = make_fleet(generator, collector.otlp_http_url, split, space.root,
                       queue=queue or max(split), batch=batch, rate=rate, workers=workers)
    pids = {"collector": collector.process.pid, "destination": destination.pid}
    try:
        fleet.start()
        start_kib = memory_kib(pids["collector"], "VmRSS")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy_before, wall_before = machine_busy_seconds(), time.monotonic()
        with CollectorSampler(collector, sample_interval) as sampler:
            fleet.go()
            reports = fleet.results()
            # What the generators sent is what can arrive; a shortfall there is reported below.
            exported = sum(int(r["exported"]) for r in reports)
            arrivals = wait_for_arrivals(destination, exported)
            wait_until(lambda: read_collector(collector).sent >= exported, 60,
                       message=lambda: f"the collector to count {exported} spans sent")
        wall = time.monotonic() - wall_before
        busy = machine_busy_seconds() - busy_before
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    finally:
        fleet.stop()
    cpu["generators"] = sum(float(r["process_cpu_s"]) for r in reports)
    reading = read_collector(collector)
    return FleetRun(
        destination=destination_kind,
        generator=generator,
        workers=workers,
        generators=reports,
        seconds=arrivals.last_at - min(float(r["started_at"]) for r in reports),
        cpu=cpu,
        machine_busy=busy,
        wall=wall,
        samples=sampler.samples,
        collector_kib=(start_kib, memory_kib(pids["collector"], "VmHWM")),
        collector=reading,
        problems=delivery_problems(spans, fleet.problems(reports), reading, arrivals),
    )
