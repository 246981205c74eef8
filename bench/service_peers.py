"""The chat route traced three ways, side by side in one run: service CPU and added latency.

One service (`service.main.create_app`: uvicorn, offline LLM provider, SQLite) under the same
load in four variants, each on its own database and user:

- off: `python -m service serve` with OTEL_SDK_DISABLED=true, the untraced baseline;
- sessiontrace: `python -m service serve` as shipped (SessionSpanProcessor, BatchSpanProcessor,
  the direct OTLP encoder, the span spool);
- langfuse: `bench/peer_service.py langfuse`: LangfuseSpanProcessor with its own OTLP exporter
  (gzip, its default), `propagate_attributes(session_id=, user_id=)` around each request;
- baggage: `bench/peer_service.py baggage`: contrib's BaggageSpanProcessor, then the SDK's
  BatchSpanProcessor with the plain OTLPSpanExporter; session.id and user.id in the baggage.

Each round runs every variant once, in an order rotating from round to round; each run is a
fresh process: started, warmed up untimed, measured with wrk (`POST /api/v1/ai/chat` as the
variant's user, one conversation), stopped, which flushes its spans. Every exporting variant
posts OTLP/HTTP protobuf to the same local endpoint, the development sink's Langfuse route
(`devstack.sink`, Basic auth); no collector runs, so no variant's rounds carry a process that
the others' do not. Figures: the service process's own CPU per request (/proc, over the
measured run) and wrk's p50 and p99; "added" is a variant's figure minus the baseline's of the
same round, median over rounds.

Checked for every round (also in --quick), the run fails otherwise: wrk saw no error; the
service exited with 0 and logged no lost span or traceback; "off" sent nothing; for the others,
among the spans the endpoint stored during the round, every chat run the service answered is a
trace whose every span carries the variant's session.id and user.id (the session the service
derives and returns, checked on the first answer), no trace mixes spans with and without them,
no span carries another session or user, and the endpoint refused no export request.

Usage: python bench/service_peers.py [--quick] [--rounds R] [--duration S] [--warmup S]
                                     [--connections C]
  --quick: one short round of each variant, checks only (no timings, no results file).
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from devstack.demo import provision_demo
from devstack.processes import free_port, start_ready
from devstack.sink import TRACES_PATH
from devstack.stack import ServiceHandle, SinkHandle, service_env
from service.callers import user_session_id

from common import RESULTS_DIR, cpu_seconds, write_results
from local_stack import Workspace, workspace
from peer_checks import SinkMark, WindowTraces, combined, sink_mark, verify_round, window_traces
from peer_report import report
from service_overhead import STATE_KEY, Round, Target, ensure_wrk, run_wrk

RESULTS = RESULTS_DIR / "service_peers.md"
PEER_LAUNCHER = Path(__file__).resolve().parent / "peer_service.py"
SCHEDULER_TOKEN = "bench-scheduler-token-0123456789"


@dataclass(frozen=True)
class Variant:
    """How to start the service one way: the command before --host/--port, extra variables."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    peer: bool = False  # started by bench/peer_service.py, which needs the caller table


SERVE = ("-m", "service", "serve")
VARIANTS = (
    Variant("off", SERVE, {"OTEL_SDK_DISABLED": "true"}),
    Variant("sessiontrace", SERVE),
    Variant("langfuse", (str(PEER_LAUNCHER), "langfuse"), peer=True),
    Variant("baggage", (str(PEER_LAUNCHER), "baggage"), peer=True),
)


@dataclass
class PeerRound(Round):
    """One measured run, and the spans the endpoint stored from its process."""

    index: int = 0
    start: SinkMark = SinkMark(0, 0)
    end: SinkMark = SinkMark(0, 0)
    log: str = ""
    exit_code: int = 0
    traces: WindowTraces = field(default_factory=WindowTraces)


def endpoint_env(sink: SinkHandle) -> dict[str, str]:
    """The sink as every variant's OTLP endpoint: standard OTEL_* for the SDK's exporters,
    LANGFUSE_* for the Langfuse SDK (which appends the same path itself)."""
    basic = base64.b64encode(f"{sink.public_key}:{sink.secret_key}".encode()).decode()
    return {
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=" + quote(f"Basic {basic}", safe=""),
        "LANGFUSE_BASE_URL": sink.url,
        "LANGFUSE_PUBLIC_KEY": sink.public_key,
        "LANGFUSE_SECRET_KEY": sink.secret_key,
    }


def provision(space: Workspace, variant: Variant) -> Target:
    """A database with a billing account and user; the session its conversation gets."""
    database_url = f"sqlite:///{space.path(f'{variant.name}.db')}"
    user = f"bench-{variant.name}"
    account = provision_demo(database_url, billing_account=user, user=f"{user}-user")
    session_id = user_session_id(billing_account_id=account.billing_account_id,
                                 user_id=account.user_id, state_key=STATE_KEY)
    env = dict(variant.env)
    if variant.peer:
        callers = {f"Bearer {account.api_key}": [session_id, account.user_id]}
        env["BENCH_PEER_CALLERS"] = json.dumps(callers)
    return Target(variant.name, database_url, account, env, session_id)


def start(variant: Variant, target: Target, space: Workspace, sink: SinkHandle) -> ServiceHandle:
    """A fresh service process; the first of a target must answer with the expected session."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The SDK's exporters append /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT, as the collector does.
    env = service_env(database_url=target.database_url, scheduler_token=SCHEDULER_TOKEN,
                      otlp_endpoint=sink.url + TRACES_PATH.removesuffix("/v1/traces"),
                      LLM_BASE_URL="", **endpoint_env(sink), **target.env)
    env["OTEL_BSP_SCHEDULE_DELAY"] = None  # the SDK's default, as a deployment has it
    argv = [sys.executable, *variant.argv, "--host", "127.0.0.1", "--port", str(port)]
    process = start_ready(variant.name, argv, ready_url=url + "/readyz",
                          log_path=space.path(f"{variant.name}.log"), env=env, timeout=60)
    service = ServiceHandle(process, url, env)
    space.adopt(service)
    target.services.append(service)
    if len(target.services) == 1:
        body = {"messages": [{"role": "user", "content": "hello"}], "stateKey": STATE_KEY}
        headers = {"Authorization": f"Bearer {target.account.api_key}"}
        response = httpx.post(url + "/api/v1/ai/chat", json=body, headers=headers, timeout=30)
        response.raise_for_status()
        if response.json()["sessionId"] != target.session_id:
            raise SystemExit(f"{variant.name}: the service answered session "
                             f"{response.json()['sessionId']}, the bench expects "
                             f"{target.session_id}: service.callers changed")
    return service


def measure(variant: Variant, target: Target, space: Workspace, sink: SinkHandle,
            wrk: str, args: argparse.Namespace, index: int) -> PeerRound:
    """Start, warm up, measure, stop (which flushes): one round of one variant."""
    before_mark = sink_mark(sink.db)
    service = start(variant, target, space, sink)
    run_wrk(wrk, target, args.warmup, args.connections)
    pids = {"service": service.process.pid, "sink": sink.process.pid}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(wrk, target, args.duration, args.connections)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["wrk"] = (after_children.ru_utime + after_children.ru_stime
                  - children.ru_utime - children.ru_stime)
    exit_code = service.stop()
    # The exporters answer only once the sink has stored the batch: all of it is there now.
    return PeerRound(variant.name, result, cpu, index=index, start=before_mark,
                     end=sink_mark(sink.db), log=service.log(), exit_code=exit_code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short round of each variant: the checks only, no timings")
    parser.add_argument("--rounds", type=int, help="rounds; each runs every variant once")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, help="untimed seconds of load before each run")
    parser.add_argument("--connections", type=int, default=1,
                        help="wrk's open connections (1: latency without queueing)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)

    wrk = ensure_wrk()
    with workspace("peers") as space:
        sink = space.sink()
        targets = {variant.name: provision(space, variant) for variant in VARIANTS}
        rounds: list[PeerRound] = []
        for index in range(args.rounds):
            shift = index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                measured = measure(variant, targets[variant.name], space, sink, wrk, args, index)
                rounds.append(measured)
                print(f"round {index + 1}/{args.rounds} {variant.name}: {measured.rps:,.1f} "
                      f"req/s", file=sys.stderr)
        problems = []
        for measured in rounds:
            target = targets[measured.mode]
            measured.traces = window_traces(sink.db, measured.start, measured.end,
                                            session_id=target.session_id,
                                            user_id=target.account.user_id)
            problems += verify_round(
                f"round {measured.index + 1} {measured.mode}", exports=target.exports,
                wrk=measured.wrk, log=measured.log, exit_code=measured.exit_code,
                traces=measured.traces, connections=args.connections,
            )
        if problems:
            print("the variants did not deliver what they claim:", *problems, sep="\n  ",
                  file=sys.stderr)
            return 1
    totals = {v.name: combined([r.traces for r in rounds if r.mode == v.name])
              for v in VARIANTS}
    if args.quick:
        lines = [f"{name}: {t.full:,} traces with session.id and user.id on every span "
                 f"({t.spans:,} spans, {t.requests} export requests); {t.bare} without a session"
                 for name, t in totals.items()]
        print("checks passed (no timings in --quick):", *lines, sep="\n  ")
        return 0
    names = [v.name for v in VARIANTS]
    write_results(report(rounds, names, totals, targets, args), args.output or RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
