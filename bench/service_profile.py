"""Where the service's CPU goes, tracing off and on: py-spy samples under wrk load, per request.

py-spy (`--gil`: only the thread holding the GIL is sampled, so time spent waiting for it does
not count) records each service while wrk drives it; every figure is milliseconds of GIL-holding
time per answered request: samples of stacks containing the frame × sampling interval / requests.
Used by `python bench/service_overhead.py --profile`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["profile_targets"]

RATE = 250  # samples per second
# py-spy's short paths of opentelemetry-instrumentation-asgi, -fastapi and -util-http.
_INSTRUMENTATION = ("asgi/__init__.py", "fastapi/__init__.py", "http/__init__.py")
# (what, predicate on one stack: thread name first, then frames outermost first)
Stack = list[str]
BREAKDOWN: list[tuple[str, Callable[[Stack], bool]]] = [
    ("whole process", lambda s: True),
    ("main thread (event loop)", lambda s: "MainThread" in s[0]),
    ("export threads (BatchSpanProcessor, span spool sender)", lambda s: _exports(s)),
    ("… OTLP encoding (TraceRequestEncoder.encode, or the SDK's encode_spans)", lambda s: _encodes(s)),
    ("… the rest of exporting (HTTP post, batching)",
     lambda s: _exports(s) and not _encodes(s)),
    ("span start (Tracer.start_span)", lambda s: _calls(s, "Tracer.start_span")),
    ("span end (Span.end, on_end)", lambda s: _calls(s, "Span.end")),
    ("Span.set_attribute(s) outside start/end", lambda s: _set_attribute(s)
     and not _calls(s, "Tracer.start_span")),
    ("OpenTelemetry ASGI/FastAPI instrumentation, its own code (self time)",
     lambda s: any(f"({path}" in s[-1] for path in _INSTRUMENTATION)),
    ("SessionSpanProcessor", lambda s: _has(s, "SessionSpanProcessor.")),
    ("payload scrubbing and encoding (sessiontrace/_payload.py)",
     lambda s: _has(s, "sessiontrace/_payload.py")),
    ("logging (access log)", lambda s: _calls(s, "StreamHandler.emit")),
]


def _has(stack: Stack, text: str) -> bool:
    return any(text in frame for frame in stack[1:])


def _exports(stack: Stack) -> bool:
    # The BatchSpanProcessor's thread encodes; with the spool (the service's default), the
    # spool's sender thread posts.
    return "OtelBatch" in stack[0] or "SpanSpoolSender" in stack[0]


def _encodes(stack: Stack) -> bool:
    return _calls(stack, "TraceRequestEncoder.encode") or _calls(stack, "encode_spans")


def _set_attribute(stack: Stack) -> bool:
    return _calls(stack, "Span.set_attribute") or _calls(stack, "Span.set_attributes")


def _calls(stack: Stack, name: str) -> bool:
    """A frame of exactly this function (`Tracer.start_span`, not `NoOpTracer.start_span`)."""
    return any(frame.startswith(name + " (") for frame in stack[1:])


def _load(path: Path) -> list[tuple[Stack, int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _frame(frame: str) -> str:
    """`name (path:line)` without the line number."""
    return re.sub(r":\d+\)$", ")", frame)


def record(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds) + 2),
            "--rate", str(RATE), "--format", "raw", "--output", str(output),
            "--nonblocking", "--threads", "--gil"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches before the load starts
    return process


def breakdown(profiles: Mapping[str, tuple[list[tuple[Stack, int]], int]]) -> dict[str, dict[str, float]]:
    """ms of GIL time per request, by BREAKDOWN row and mode."""
    ms = 1000 / RATE
    return {
        label: {
            mode: sum(n for s, n in stacks if predicate(s)) * ms / requests
            for mode, (stacks, requests) in profiles.items()
        }
        for label, predicate in BREAKDOWN
    }


def breakdown_table(cells: Mapping[str, Mapping[str, float]]) -> str:
    lines = ["| where | off, ms/request | on, ms/request | on − off |", "|---|--:|--:|--:|"]
    for label, by_mode in cells.items():
        lines.append(f"| {label} | {by_mode['off']:.3f} | {by_mode['on']:.3f} "
                     f"| {by_mode['on'] - by_mode['off']:+.3f} |")
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value >= 0.0005 else "too little to sample"


def findings(cells: Mapping[str, Mapping[str, float]]) -> str:
    def row(prefix: str) -> Mapping[str, float]:
        return next(v for k, v in cells.items() if k.startswith(prefix))

    whole, main, export = row("whole"), row("main thread"), row("export threads")
    encode, start = row("… OTLP encoding"), row("span start")
    added = whole["on"] - whole["off"]
    lines = [
        f"- Tracing adds {added:.2f} ms of GIL time per request ({added / whole['off']:.0%} "
        f"over off). {export['on']:.2f} ms of it is the export threads, "
        f"{encode['on']:.2f} ms of that the OTLP encoding; the event loop's share is "
        f"{main['on'] - main['off']:.2f} ms "
        f"(span start {start['on']:.2f} ms). SessionSpanProcessor itself: "
        f"{_ms(row('SessionSpanProcessor')['on'])}.",
        "- These are samples of one window on a shared VM: rows differ by tens of percent "
        "between runs, and a row under ~0.05 ms is noise. Check a conclusion with an A/B "
        "(`bench/service_variants.py`) before acting on it.",
    ]
    return "\n".join(lines)


def self_table(profiles: Mapping[str, tuple[list[tuple[Stack, int]], int]], top: int) -> str:
    ms = 1000 / RATE
    per_mode: dict[str, Counter[str]] = {}
    for mode, (stacks, requests) in profiles.items():
        counter: Counter[str] = Counter()
        for stack, n in stacks:
            counter[_frame(stack[-1])] += n
        per_mode[mode] = Counter({k: v * ms / requests for k, v in counter.items()})
    off, on = per_mode["off"], per_mode["on"]
    delta = sorted(set(off) | set(on), key=lambda k: off.get(k, 0) - on.get(k, 0))[:top]
    lines = ["| function (self time) | off | on | on − off |", "|---|--:|--:|--:|"]
    for key in delta:
        lines.append(f"| `{key}` | {off.get(key, 0):.3f} | {on.get(key, 0):.3f} "
                     f"| {on.get(key, 0) - off.get(key, 0):+.3f} |")
    return "\n".join(lines)


def profile_targets(
    targets: Mapping[str, Any], run_wrk: Callable[[Any, float], dict[str, Any]],
    seconds: float, workdir: Path,
) -> str:
    """Profile each target under `seconds` of load; the markdown tables."""
    profiles = {}
    for mode, target in targets.items():
        output = workdir / f"pyspy-{mode}.txt"
        recorder = record(target.service.process.pid, seconds, output)
        result = run_wrk(target, seconds)
        recorder.wait(timeout=seconds + 60)
        profiles[mode] = (_load(output), int(result["requests"]))
        print(f"profiled {mode}: {result['requests']} requests", file=sys.stderr)
    cells = breakdown(profiles)
    return (f"{breakdown_table(cells)}\n\n{findings(cells)}\n\nThe functions whose own (self) "
            f"time grows most with tracing on:\n\n{self_table(profiles, 15)}\n")
