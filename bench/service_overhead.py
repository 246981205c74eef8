"""Service overhead: builtin:chat runs over real HTTP with tracing off and on, in one run.

The service (`python -m service serve`: uvicorn, offline LLM provider, SQLite) runs with the
same settings in both modes but one: "off" has OTEL_SDK_DISABLED=true, "on" exports over
OTLP/HTTP to the real collector (otel-collector.yaml), which forwards to the development sink.
Both point at the collector, so "off" is the SDK switch alone; each mode has its own database
and user. Rounds alternate off, on, off, on, ...; every round starts a fresh service process
(so no process keeps a lucky or unlucky place on the shared machine for the whole run), warms
it up untimed, measures, then stops it, which flushes its spans, and waits until the collector
has sent everything, so no round pays for another's export. The load is wrk (C, one event-loop
thread): POST /api/v1/ai/chat as the user, with an API key, at a fixed number of connections.

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
from devstack.stack import CollectorHandle, ServiceHandle, SinkHandle

from common import RESULTS_DIR, cpu_seconds, write_results
from local_stack import Workspace, build_collector, workspace
from service_checks import exported_traces, verify
from service_profile import profile_targets
from service_report import profile_report, report

RESULTS = RESULTS_DIR / "service_overhead.md"
PROFILE = RESULTS_DIR / "service_profile.md"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_chat.lua"
STATE_KEY = "bench-conversation"


@dataclass
class Target:
    """One mode's service: its database and user, and every process started for it."""

    mode: str  # "off" or "on" (or a variant's name)
    database_url: str
    account: DemoAccount
    env: dict[str, str] = field(default_factory=dict)  # the service's extra variables
    session_id: str = ""
    services: list[ServiceHandle] = field(default_factory=list)

    @property
    def exports(self) -> bool:
        return self.env.get("OTEL_SDK_DISABLED") != "true"

    @property
    def service(self) -> ServiceHandle:
        """The process started last."""
        return self.services[-1]

    def logs(self) -> str:
        return "".join(service.log() for service in self.services)


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
    wrk: str, target: Target, stack: Stack, args: argparse.Namespace
) -> Round:
    """A fresh service process: warm-up, a measured wrk run, stop (which flushes), drain."""
    accepted = collector_counters(stack.collector.metrics_url).accepted
    service = launch(target, stack)
    run_wrk(wrk, target, args.warmup, args.connections)
    pids = {"service": service.process.pid, "collector": stack.collector.process.pid,
            "sink": stack.sink.process.pid}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(wrk, target, args.duration, args.connections)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["wrk"] = (after_children.ru_utime + after_children.ru_stime
                  - children.ru_utime - children.ru_stime)
    service.stop()
    if target.exports:
        wait_for_export(stack.collector, timeout=120)
    else:
        time.sleep(1.0)  # the "off" process has exited: anything it sent has arrived by now
    delta = collector_counters(stack.collector.metrics_url).accepted - accepted
    return Round(target.mode, result, cpu, delta)


@dataclass
class Stack:
    """The processes every round shares."""

    space: Workspace
    sink: SinkHandle
    collector: CollectorHandle


def provision(stack: Stack, mode: str, env: dict[str, str], *, user: str = "") -> Target:
    """A database with a billing account and a user for `mode`, made with the service's CLI."""
    database_url = f"sqlite:///{stack.space.path('service.db')}"
    user = user or f"bench-{mode}"
    account = provision_demo(database_url, billing_account=user, user=f"{user}-user")
    return Target(mode, database_url, account, env)


def launch(target: Target, stack: Stack) -> ServiceHandle:
    """Start a service process for `target`; the first one also learns the session id."""
    service = stack.space.service(
        name="service", database_url=target.database_url,
        otlp_endpoint=stack.collector.otlp_http_url, **target.env,
    )
    target.services.append(service)
    if not target.session_id:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            body = {"messages": [{"role": "user", "content": "hello"}], "stateKey": STATE_KEY}
            headers = {"Authorization": f"Bearer {target.account.api_key}"}
            response = client.post("/api/v1/ai/chat", json=body, headers=headers)
            response.raise_for_status()
            target.session_id = response.json()["sessionId"]
    return service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short pair of rounds")
    parser.add_argument("--rounds", type=int, help="pairs of rounds (off, on)")
    parser.add_argument("--duration", type=float, help="seconds per round")
    parser.add_argument("--warmup", type=float, help="seconds of untimed load before each round")
    parser.add_argument("--connections", type=int, default=8, help="wrk's open connections")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    parser.add_argument("--profile", action="store_true",
                        help=f"py-spy both services under load instead (writes {PROFILE})")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 6)
    args.duration = args.duration or (2.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)

    wrk = ensure_wrk()
    build_collector()
    with workspace("service") as space:
        sink = space.sink()
        collector = space.collector(
            destination=sink.url, public_key=sink.public_key, secret_key=sink.secret_key
        )
        stack = Stack(space, sink, collector)
        targets = {
            "off": provision(stack, "off", {"OTEL_SDK_DISABLED": "true"}),
            "on": provision(stack, "on", {}),
        }
        if args.profile:
            for target in targets.values():
                launch(target, stack)
                run_wrk(wrk, target, args.warmup, args.connections)
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
                rounds.append(measure(wrk, targets[mode], stack, args))
                print(f"round {index + 1}/{args.rounds} {mode}: {rounds[-1].rps:,.1f} req/s",
                      file=sys.stderr)
        traces = exported_traces(sink.db)
        counters = collector_counters(collector.metrics_url)
        # Every round has two wrk runs (warm-up, measured), each may abandon requests.
        problems = verify(rounds, targets, traces, counters, connections=args.connections,
                          wrk_runs=2 * len(rounds))
        if problems:
            print("the two modes did not do what they claim:", *problems, sep="\n  ",
                  file=sys.stderr)
            return 1
        text = report(rounds, targets, traces, counters, args)
    write_results(text, args.output or (None if args.quick else RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
