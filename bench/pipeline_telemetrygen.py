"""telemetrygen processes as the load of a pipeline benchmark: the collector at its capacity.

A Python generator (bench/span_generator.py) costs ~55 µs of CPU a span, more than the collector
itself, so on a small machine it, not the pipeline, sets the rate. telemetrygen (the
OpenTelemetry project's load generator, Go; bin/telemetrygen, built by
scripts/build-telemetrygen.sh) costs a few µs a span. Each process sends a fixed number of
traces (`--traces` per worker, `--child-spans 9`: a root and 9 children, the Python generator's
shape) over OTLP/HTTP to the collector's receiver, as the service does, and exits once its
BatchSpanProcessor has flushed: how many spans it sent is exact by construction.

The spans carry what the collector's Langfuse pipeline and Langfuse need, built by the library
itself (`SessionContext.span_attributes`: session.id, user.id, their langfuse.* twins, trace
name and tags; one session per process) and the Python generator's LLM-call attributes, on
every span. telemetrygen adds `network.peer.address` and `peer.service`, which the collector's
privacy processor deletes, as it deletes the service's client and peer attributes.

The Go SDK's BatchSpanProcessor drops spans silently when its queue is full (it logs the count
at debug level only), so the queue (`OTEL_BSP_MAX_QUEUE_SIZE`, which the Go SDK reads) is
sized by the caller; a dropped span shows as a shortfall in the collector's and the
destination's exact counts. Its CPU time comes from the kernel when it is reaped (os.wait4).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.util.types import AttributeValue

from local_stack import OTEL_CLEARED, TELEMETRYGEN_BINARY
from span_generator import LLM_ATTRIBUTES, TRACE_SIZE, callers

__all__ = ["TelemetrygenFleet", "flag_value", "span_flags", "telemetrygen_version"]

# "2026-12-04T23:33:38.039Z	INFO	traces/worker.go:180	traces generated	{"worker": 0, ...}"
_GENERATED = re.compile(r"^(\S+)\s+INFO\s+\S+\s+traces generated\s+(\{.*\})$", re.MULTILINE)
_TROUBLE = re.compile(r"^\S+\s+(?:WARN|ERROR|FATAL|PANIC)\b|export.*(?:fail|error)",
                      re.MULTILINE | re.IGNORECASE)


def flag_value(value: AttributeValue) -> str:
    """One attribute value as telemetrygen's `key=value` flags spell it (strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    raise ValueError(f"telemetrygen cannot send the attribute value {value!r}")


def span_flags(index: int) -> list[str]:
    """`--telemetry-attributes` for process `index`: its session's keys and the LLM ones."""
    attributes: Mapping[str, AttributeValue] = {
        **callers(index)[0].span_attributes, **LLM_ATTRIBUTES,
    }
    return [flag for key, value in attributes.items()
            for flag in ("--telemetry-attributes", f"{key}={flag_value(value)}")]


@dataclass
class TelemetrygenFleet:
    """telemetrygen processes started together by `go()`; the same protocol as `Generators`."""

    endpoint: str  # the collector's OTLP/HTTP base URL
    spans: Sequence[int]  # per process
    log_dir: Path
    queue: int  # OTEL_BSP_MAX_QUEUE_SIZE of each
    batch: int  # --batch-size: spans per export request
    rate: float = 0.0  # spans/s of all processes together; 0: as fast as they can
    workers: int = 1  # goroutines per process, each with its share of the traces
    started_at: float = 0.0  # epoch seconds when `go()` started the first process
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _argv: list[list[str]] = field(default_factory=list)

    def start(self) -> None:
        """Check the shares and build every command line; nothing runs until `go()`."""
        for index, spans in enumerate(self.spans):
            traces, rest = divmod(spans, TRACE_SIZE * self.workers)
            if rest or not traces:
                raise ValueError(f"telemetrygen {index}: {spans} spans do not split into whole "
                                 f"traces of {TRACE_SIZE} over {self.workers} workers")
            rate = self.rate * spans / sum(self.spans) / self.workers
            self._argv.append([
                str(TELEMETRYGEN_BINARY), "traces", "--otlp-http", "--otlp-insecure",
                "--otlp-endpoint", self.endpoint.removeprefix("http://"),
                "--service", "bench-pipeline", "--workers", str(self.workers),
                "--traces", str(traces), "--child-spans", str(TRACE_SIZE - 1),
                "--rate", f"{rate:.3f}", "--batch-size", str(self.batch), "--timeout", "60s",
                *span_flags(index),
            ])

    def go(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in OTEL_CLEARED}
        env["OTEL_BSP_MAX_QUEUE_SIZE"] = str(self.queue)
        self.started_at = time.time()
        for index, argv in enumerate(self._argv):
            with self._log_path(index).open("wb") as log:
                self.processes.append(subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log))

    def results(self) -> list[dict[str, Any]]:
        """Each process's report (the keys span_generator.py prints), once it has exited."""
        return [self._reap(index, process) for index, process in enumerate(self.processes)]

    def problems(self, reports: Sequence[dict[str, Any]]) -> list[str]:
        """Traces a worker did not generate, and any export error a process logged."""
        problems = []
        for index, report in enumerate(reports):
            if report["exported"] != report["spans"]:
                problems.append(f"telemetrygen {index}: generated {report['exported']} of "
                                f"{report['spans']} spans")
            if report["trouble"]:
                problems.append(f"telemetrygen {index} logged: {report['trouble']}")
        return problems

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def _reap(self, index: int, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        # os.wait4 instead of Popen.wait: the child's CPU time is readable only while reaping.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log = self._log_path(index).read_text(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"telemetrygen {index} failed ({process.returncode}):\n"
                               f"{log[-3000:]}")
        generated = [(line_time, json.loads(fields)) for line_time, fields in
                     _GENERATED.findall(log)]
        done = max((_log_time(t) for t, _ in generated), default=time.time())
        return {
            "spans": self.spans[index],
            "exported": sum(int(f["traces"]) for _, f in generated) * TRACE_SIZE,
            "trouble": "; ".join(m.group(0) for m in _TROUBLE.finditer(log))[:500],
            "started_at": self.started_at,
            "create_s": done - self.started_at,
            "process_cpu_s": usage.ru_utime + usage.ru_stime,
        }

    def _log_path(self, index: int) -> Path:
        return self.log_dir / f"telemetrygen-{index}.log"


def telemetrygen_version() -> str:
    """The module version Go stamped into bin/telemetrygen (it has no --version flag)."""
    try:
        out = subprocess.run(["go", "version", "-m", str(TELEMETRYGEN_BINARY)],
                             capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    found = re.search(r"^\s+mod\s+\S+/cmd/telemetrygen\s+(\S+)", out, re.MULTILINE)
    return found.group(1) if found else "unknown"


def _log_time(text: str) -> float:
    """A telemetrygen (zap) log timestamp, e.g. 2026-12-04T23:33:38.039Z, as epoch seconds."""
    return datetime.datetime.fromisoformat(text).timestamp()
