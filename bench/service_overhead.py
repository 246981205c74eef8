"""Service overhead: builtin:chat runs over real HTTP with tracing off and on, in one run.

Two service processes (`python -m service serve`, uvicorn, offline LLM provider, each its own
SQLite database and user) run side by side with the same settings but one: the first has
OTEL_SDK_DISABLED=true, the second exports over OTLP/HTTP to the real collector
(otel-collector.yaml), which forwards to the development sink. Both are pointed at the collector,
so "off" is the SDK switch alone. wrk (C, event loop, one thread) sends POST /api/v1/ai/chat as
a user with an API key, at a fixed number of connections, in rounds off, on, off, on, ...
after an untimed warm-up of each. After every "on" round the run waits until the collector has
sent everything, so no round pays for the previous one's export.

Checked (also in --quick), the run fails otherwise: wrk saw no error; the collector's span count
did not move during any "off" round and no span of the "off" user reached the sink; every
request the "on" service answered 200 is a trace at the sink whose every span carries the
expected session.id; no trace mixes spans with and without a session; the collector sent all it
accepted and failed none; the service's BatchSpanProcessor dropped nothing.

Usage: python bench/service_overhead.py [--quick] [--rounds R] [--duration S] [--connections C]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack.delivery import collector_counters, wait_for_export
from devstack.demo import DemoAccount, provision_demo
from devstack.stack import CollectorHandle, ServiceHandle

from common import RESULTS_DIR, cpu_seconds, write_results
from local_stack import build_collector, workspace
from service_checks import exported_traces, verify
from service_profile import profile_targets
from service_report import profile_report, report

RESULTS = RESULTS_DIR / "service_overhead.md"
PROFILE = RESULTS_DIR / "service_profile.md"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_chat.lua"
STATE_KEY = "bench-conversation"
SETTLE_SECONDS = 6.0  # longer than the SDK's 5 s export delay: the last partial batch is out


@dataclass
class Target:
    """One service under test and what the benchmark knows about it."""

    mode: str  # "off" or "on"
    service: ServiceHandle
    account: DemoAccount
    session_id: str = ""


@dataclass
class Round:
    """One wrk run against one target, with the CPU each process used meanwhile."""

    mode: str
    wrk: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)
    accepted_delta: int = 0  # spans the collector accepted during the round

    @property
    def rps(self) -> float:
        return float(self.wrk["requests"] / (self.wrk["duration_us"] / 1e6))

    @property
    def errors(self) -> int:
        keys = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        return sum(int(self.wrk[k]) for k in keys)


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return found


def run_wrk(wrk: str, target: Target, seconds: float, connections: int) -> dict[str, Any]:
    env = os.environ | {"BENCH_API_KEY": target.account.api_key, "BENCH_STATE_KEY": STATE_KEY}
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), target.service.url + "/api/v1/ai/chat"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(
    wrk: str, target: Target, pids: dict[str, int], seconds: float, connections: int,
    collector: CollectorHandle,
) -> Round:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    accepted = collector_counters(collector.metrics_url).accepted
    result = run_wrk(wrk, target, seconds, connections)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["wrk"] = (after_children.ru_utime + after_children.ru_stime
                  - children.ru_utime - children.ru_stime)
    if target.mode == "on":
        wait_for_export(collector, settle=SETTLE_SECONDS, timeout=120)
    else:
        time.sleep(1.0)  # an "off" service exporting anyway would show within the round + 1 s
    delta = collector_counters(collector.metrics_url).accepted - accepted
    return Round(target.mode, result, cpu, delta)


def start_target(space: Any, mode: str, collector: CollectorHandle) -> Target:
    overrides = {"OTEL_SDK_DISABLED": "true"} if mode == "off" else {}
    service = space.service(name=f"service-{mode}", otlp_endpoint=collector.otlp_http_url,
                            **overrides)
    account = provision_demo(service.database_url, billing_account=f"bench-{mode}",
                             user=f"bench-{mode}-user")
    target = Target(mode, service, account)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        body = {"messages": [{"role": "user", "content": "hello"}], "stateKey": STATE_KEY}
        headers = {"Authorization": f"Bearer {account.api_key}"}
        response = client.post("/api/v1/ai/chat", json=body, headers=headers)
        response.raise_for_status()
        target.session_id = response.json()["sessionId"]
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short pair of rounds")
    parser.add_argument("--rounds", type=int, help="pairs of rounds (off, on)")
    parser.add_argument("--duration", type=float, help="seconds per round")
    parser.add_argument("--warmup", type=float, help="seconds of untimed load per service first")
    parser.add_argument("--connections", type=int, default=8, help="wrk's open connections")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    parser.add_argument("--profile", action="store_true",
                        help=f"py-spy both services under load instead (writes {PROFILE})")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 6)
    args.duration = args.duration or (2.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0)

    wrk = ensure_wrk()
    build_collector()
    with workspace("service") as space:
        sink = space.sink()
        collector = space.collector(
            destination=sink.url, public_key=sink.public_key, secret_key=sink.secret_key
        )
        targets = {mode: start_target(space, mode, collector) for mode in ("off", "on")}
        pids = {
            "service": 0,
            "collector": collector.process.pid,
            "sink": sink.process.pid,
        }
        for target in targets.values():
            run_wrk(wrk, target, args.warmup, args.connections)
        wait_for_export(collector, settle=SETTLE_SECONDS, timeout=120)
        if args.profile:
            tables = profile_targets(
                targets, lambda t, s: run_wrk(wrk, t, s, args.connections),
                args.duration, space.root,
            )
            text = profile_report(tables, args)
            write_results(text, args.output or (None if args.quick else PROFILE))
            return 0
        rounds: list[Round] = []
        for index in range(args.rounds):
            for mode in ("off", "on"):
                target = targets[mode]
                pids["service"] = target.service.process.pid
                rounds.append(measure(wrk, target, pids, args.duration, args.connections,
                                      collector))
                print(f"round {index + 1}/{args.rounds} {mode}: {rounds[-1].rps:,.1f} req/s",
                      file=sys.stderr)
        traces = exported_traces(sink.db)
        counters = collector_counters(collector.metrics_url)
        problems = verify(rounds, targets, traces, counters, connections=args.connections,
                          wrk_runs=len(rounds) + len(targets))
        if problems:
            print("the two modes did not do what they claim:", *problems, sep="\n  ",
                  file=sys.stderr)
            return 1
        text = report(rounds, targets, traces, counters, args)
    write_results(text, args.output or (None if args.quick else RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
