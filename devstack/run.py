"""`make run`: the collector and the service as local processes, demo runs, the Sessions view.

Without LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY all set, the collector
exports to the development sink (`python -m devstack.sink`), a local capture endpoint that
enforces Langfuse's OTLP contract: it is NOT Langfuse. The run then prints what reached the
sink grouped as Langfuse's Sessions view groups it, and fails when a span has no session. With
all three set, the collector exports to that Langfuse instead, and the run prints the session
ids to look for there (it cannot read them back).

Everything lives under var/ (or --var-dir): logs in var/log/, the collector's persistent queue
in var/otelcol/ (one per destination, so development spans never reach a real Langfuse), the
sink's database var/devsink.sqlite3, and the demo database var/demo/service.db. Both databases
are recreated on every run: a fresh billing account, user, API key and grant each time, so a
rerun never depends on an earlier one and the report shows this run only. The demo user's API
key and the scheduler token are written to var/demo/credentials.json (never printed), to try
requests by hand while the stack runs.

Ports (flag, else environment variable, else default):
  --service-port    SERVICE_PORT            8000
  --otlp-grpc-port  OTELCOL_OTLP_GRPC_PORT  4317
  --otlp-http-port  OTELCOL_OTLP_HTTP_PORT  4318
  --health-port     OTELCOL_HEALTH_PORT     13133
  --metrics-port    OTELCOL_METRICS_PORT    8888
  --sink-port       DEVSINK_PORT            4319

By default the processes keep running until Ctrl-C (or SIGTERM), then stop in order: service
(flushing its spans), collector, sink. --once (or RUN_ONCE=1) stops after the report.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from devstack.delivery import DeliveryError, wait_for_export, wait_for_sink
from devstack.demo import DemoError, RunResult, fire_demo_runs, provision_demo
from devstack.ports import PORTS, PortError, check_ports_free, read_ports
from devstack.processes import REPO_ROOT, WaitTimeout
from devstack.report import format_sessions_table, format_traces_table, sessions_report
from devstack.runstate import RunState, StackError, write_credentials
from devstack.sink import DEV_PUBLIC_KEY, DEV_SECRET_KEY, TRACES_PATH
from devstack.stack import (
    COLLECTOR_BINARY,
    collector_env,
    service_env,
    start_collector,
    start_service,
    start_sink,
)

__all__ = ["main"]

LANGFUSE_VARIABLES = ("LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")
DEV_SINK_LABEL = "development sink (not Langfuse)"
START_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    """Start the stack, run the demo, report; 0 when every span reached a session."""
    args = _parser().parse_args(argv)
    try:
        ports = read_ports(args, os.environ)
    except PortError as exc:
        print(f"devstack.run: {exc}", file=sys.stderr)
        return 2
    once = args.once or os.environ.get("RUN_ONCE", "").strip().lower() in ("1", "true", "yes")
    state = RunState(Path(args.var_dir).resolve())
    # Installed, not inherited: a shell may start background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = _run(state, ports, once=once)
    except KeyboardInterrupt as stop:
        _say(f"\n{stop or 'SIGINT'} before the stack was up: stopping")
        code = 130
    except (StackError, PortError, WaitTimeout, DeliveryError, DemoError, httpx.HTTPError) as exc:
        print(f"\ndevstack.run: FAILED: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not cut the ordered stop short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        state.stop_all(_say)
    return code


def _run(state: RunState, ports: dict[str, int], *, once: bool) -> int:
    langfuse = _langfuse_destination()
    if not COLLECTOR_BINARY.is_file():
        raise StackError(f"{COLLECTOR_BINARY} is missing: build it with `make collector`")
    check_ports_free(ports, skip=("sink",) if langfuse else ())
    state.prepare()
    _print_plan(state, ports, langfuse)

    if langfuse is None:
        sink = start_sink(
            db=state.sink_db, log_path=state.log("devsink"), port=ports["sink"],
            public_key=DEV_PUBLIC_KEY, secret_key=DEV_SECRET_KEY, timeout=START_TIMEOUT,
            own_process_group=True,
        )
        state.sink = sink
        host, public_key, secret_key = sink.url, sink.public_key, sink.secret_key
        _say(f"started the sink: {DEV_SINK_LABEL}, pid {sink.process.pid}")
    else:
        host, public_key, secret_key = langfuse
    state.collector = start_collector(
        env=collector_env(
            langfuse_host=host, public_key=public_key, secret_key=secret_key,
            queue_dir=state.queue_dir("devsink" if langfuse is None else "langfuse"),
            OTELCOL_OTLP_GRPC_PORT=str(ports["otlp_grpc"]),
            OTELCOL_OTLP_HTTP_PORT=str(ports["otlp_http"]),
            OTELCOL_HEALTH_PORT=str(ports["health"]),
            OTELCOL_METRICS_PORT=str(ports["metrics"]),
        ),
        log_path=state.log("otelcol"), timeout=START_TIMEOUT, own_process_group=True,
    )
    _say(f"started the collector: bin/otelcol, pid {state.collector.process.pid}")

    account = provision_demo(state.database_url)
    token = os.environ.get("SCHEDULER_API_TOKEN", "").strip() or state.new_scheduler_token()
    state.service = start_service(
        env=service_env(
            database_url=state.database_url, scheduler_token=token,
            otlp_endpoint=state.collector.otlp_http_url,
        ),
        log_path=state.log("service"), port=ports["service"], timeout=START_TIMEOUT,
        own_process_group=True,
    )
    _say(f"started the service: pid {state.service.process.pid}")
    credentials = write_credentials(state, account, token, state.service.url)
    _say(
        f"demo: billing account {account.billing_account_id!r}, user {account.user_id!r}, "
        f"grant {account.grant_id} (fresh database {_rel(state.demo_db)}; "
        f"API key and scheduler token in {_rel(credentials)})"
    )

    with httpx.Client(base_url=state.service.url, timeout=30) as client:
        runs = fire_demo_runs(client, account, scheduler_token=token)
    _say("\nruns:")
    for run in runs:
        _say(f"  {run.label:<18} 200  trace {run.trace_id}  session {run.session_id}")

    code = _report_sink(state, runs) if langfuse is None else _report_langfuse(state, runs)
    if once or code != 0:
        return code
    return _serve_until_interrupted(state)


def _report_sink(state: RunState, runs: list[RunResult]) -> int:
    assert state.sink is not None and state.collector is not None
    _say(f"\nwaiting for the spans to reach the {DEV_SINK_LABEL} ...")
    started = time.monotonic()
    by_trace = wait_for_sink(
        state.sink, state.collector, [run.trace_id for run in runs], timeout=DELIVERY_TIMEOUT
    )
    spans = sum(len(spans) for spans in by_trace.values())
    _say(f"{spans} spans of {len(runs)} traces arrived in {time.monotonic() - started:.1f}s")
    report = sessions_report(state.sink_db)
    _say("\nSessions and traces, as Langfuse (v4) shows them:\n")
    _say(format_sessions_table(report))
    _say("")
    _say(format_traces_table(report))
    # The report's problems are printed once: below, with the run's own, as why it failed.
    problems = _session_problems(runs, by_trace) + report.problems
    for problem in problems:
        print(f"devstack.run: FAILED: {problem}", file=sys.stderr, flush=True)
    return 1 if problems else 0


def _session_problems(
    runs: list[RunResult], by_trace: dict[str, list[Mapping[str, Any]]]
) -> list[str]:
    problems = []
    for run in runs:
        sessions = {span["attributes"].get("session.id") for span in by_trace[run.trace_id]}
        if sessions != {run.session_id}:
            problems.append(f"{run.label}: trace {run.trace_id} holds sessions {sessions}")
    governance = {run.session_id for run in runs if run.trigger == "schedule"}
    users = {run.session_id for run in runs if run.trigger == "user"}
    if len(governance) != 1:
        problems.append(f"the governance runs of one schedule are in {len(governance)} sessions")
    if governance & users:
        problems.append("the user chat shares a session with the governance runs")
    return problems


def _report_langfuse(state: RunState, runs: list[RunResult]) -> int:
    assert state.collector is not None
    host = os.environ["LANGFUSE_HOST"].strip().rstrip("/")
    _say(f"\nwaiting for the collector to deliver the spans to {host} ...")
    counters = wait_for_export(state.collector, timeout=DELIVERY_TIMEOUT)
    _say(f"the collector sent {counters.sent} spans to Langfuse (accepted {counters.accepted})")
    _say(f"\nLook for these sessions in Langfuse at {host} (Sessions view, development):")
    for session_id in dict.fromkeys(run.session_id for run in runs):
        labels = ", ".join(run.label for run in runs if run.session_id == session_id)
        traces = ", ".join(run.trace_id for run in runs if run.session_id == session_id)
        _say(f"  {session_id}  ({labels}; traces {traces})")
    return 0


def _serve_until_interrupted(state: RunState) -> int:
    _say("\nThe stack keeps running; Ctrl-C stops it (use --once to exit after the report).")
    try:
        while True:
            for process in state.processes():
                if not process.running():
                    raise StackError(f"{process.name} exited unexpectedly\n{process.describe()}")
            time.sleep(0.5)
    except KeyboardInterrupt as stop:
        _say(f"\n{stop or 'SIGINT'}: stopping")
        return 0


def _langfuse_destination() -> tuple[str, str, str] | None:
    values = [os.environ.get(name, "").strip() for name in LANGFUSE_VARIABLES]
    if all(values):
        return values[0].rstrip("/"), values[1], values[2]
    missing = [name for name, value in zip(LANGFUSE_VARIABLES, values, strict=True) if not value]
    if len(missing) < len(LANGFUSE_VARIABLES):
        _say(f"note: {', '.join(missing)} not set: exporting to the {DEV_SINK_LABEL} instead")
    return None


def _print_plan(state: RunState, ports: dict[str, int], langfuse: tuple[str, ...] | None) -> None:
    _say("sessiontrace local stack")
    _say(f"  service         http://127.0.0.1:{ports['service']}")
    _say(
        f"  collector OTLP  http://127.0.0.1:{ports['otlp_http']} (HTTP), "
        f"127.0.0.1:{ports['otlp_grpc']} (gRPC); health http://127.0.0.1:{ports['health']}/, "
        f"metrics http://127.0.0.1:{ports['metrics']}/metrics"
    )
    if langfuse is None:
        _say(f"  exporting to    {DEV_SINK_LABEL}: http://127.0.0.1:{ports['sink']}{TRACES_PATH}")
        _say(f"  sink            http://127.0.0.1:{ports['sink']}/_dev/spans")
    else:
        _say(f"  exporting to    Langfuse at {langfuse[0]}")
    _say(f"  logs            {_rel(state.log_dir)}/")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true", help="exit after the report (RUN_ONCE=1)")
    parser.add_argument(
        "--var-dir", default=str(REPO_ROOT / "var"), help="state, logs and databases (var/)"
    )
    for port in PORTS:
        parser.add_argument(
            port.flag, type=str, default=None, help=f"{port.role} port (${port.variable})"
        )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the Ctrl-C path: children are stopped in order by main's `finally`.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _say(text: str) -> None:
    print(text, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
