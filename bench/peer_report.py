"""The results file of bench/service_peers.py: CPU and added latency per way, the margin, and
what each way put on the spans that reached the endpoint."""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common import command_line, git_revision, machine_line, package_versions, utc_now
from peer_checks import ROOT_KEYS, SPAN_KEYS, WindowTraces

__all__ = ["report"]

PACKAGES = ("fastapi", "uvicorn", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
            "opentelemetry-instrumentation-fastapi", "langfuse",
            "opentelemetry-processor-baggage")
BASELINE, OURS = "off", "sessiontrace"
Metric = Callable[[Any], float]


def cpu_ms(r: Any) -> float:
    return float(r.cpu["service"] / r.wrk["requests"] * 1e3)


def p50_ms(r: Any) -> float:
    return float(r.wrk["p50_us"] / 1e3)


def p99_ms(r: Any) -> float:
    return float(r.wrk["p99_us"] / 1e3)


METRICS: dict[str, tuple[str, Metric]] = {
    "CPU": ("service CPU per request", cpu_ms),
    "p50": ("p50 latency", p50_ms),
    "p99": ("p99 latency", p99_ms),
}


def _of(rounds: Sequence[Any], name: str) -> dict[int, Any]:
    return {r.index: r for r in rounds if r.mode == name}


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def added(rounds: Sequence[Any], name: str, metric: Metric, against: str = BASELINE) -> list[float]:
    """`metric` of `name` minus that of `against`, round by round."""
    mine, base = _of(rounds, name), _of(rounds, against)
    return [metric(mine[i]) - metric(base[i]) for i in sorted(mine)]


def _spread(values: Sequence[float]) -> str:
    return f"{_med(values):+.2f} ({min(values):+.2f} to {max(values):+.2f})"


def headline(rounds: Sequence[Any], names: Sequence[str]) -> str:
    lines = ["| way | req/s | service CPU ms/request | added, ms | × off | p50 ms | added, ms "
             "| p99 ms | added, ms | endpoint CPU ms/request |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    base_cpu = _med([cpu_ms(r) for r in _of(rounds, BASELINE).values()])
    for name in names:
        mine = list(_of(rounds, name).values())
        cpu = _med([cpu_ms(r) for r in mine])
        cells = [f"{_med([r.rps for r in mine]):,.1f}", f"{cpu:.2f}"]
        if name == BASELINE:
            cells += ["", "1.000", f"{_med([p50_ms(r) for r in mine]):.2f}", "",
                      f"{_med([p99_ms(r) for r in mine]):.2f}", ""]
        else:
            cells += [_spread(added(rounds, name, cpu_ms)), f"{cpu / base_cpu:.3f}",
                      f"{_med([p50_ms(r) for r in mine]):.2f}",
                      _spread(added(rounds, name, p50_ms)),
                      f"{_med([p99_ms(r) for r in mine]):.2f}",
                      _spread(added(rounds, name, p99_ms))]
        sink = _med([r.cpu["sink"] / r.wrk["requests"] * 1e3 for r in mine])
        lines.append(f"| {name} | " + " | ".join([*cells, f"{sink:.2f}"]) + " |")
    return "\n".join(lines)


def margins(rounds: Sequence[Any], peers: Sequence[str]) -> str:
    """Per metric: what each way adds, and sessiontrace against each peer in the same rounds."""
    lines = []
    for key, (label, metric) in METRICS.items():
        costs = {name: _med(added(rounds, name, metric)) for name in (OURS, *peers)}
        cheapest = min(costs, key=costs.__getitem__)
        runner_up = min((n for n in costs if n != cheapest), key=costs.__getitem__)
        verdict = (f"**sessiontrace is the cheapest, by {costs[runner_up] - costs[OURS]:.2f} ms "
                   f"over {runner_up}**" if cheapest == OURS else
                   f"**sessiontrace is not the cheapest: {cheapest} adds "
                   f"{costs[OURS] - costs[cheapest]:.2f} ms less**")
        paired = []
        for peer in peers:
            diff = added(rounds, peer, metric, against=OURS)
            wins = sum(1 for d in diff if d > 0)
            paired.append(f"{peer} − sessiontrace {_spread(diff)} ms, sessiontrace lower in "
                          f"{wins} of {len(diff)} rounds")
        shares = ", ".join(f"{name} {cost:+.2f} ms" for name, cost in costs.items())
        lines.append(f"- {key} ({label}), added over off: {shares}: {verdict}. "
                     f"Same rounds: {'; '.join(paired)}.")
    return "\n".join(lines)


def rounds_table(rounds: Sequence[Any]) -> str:
    lines = ["| round | way | requests | req/s | service CPU ms/request | p50 ms | p99 ms |",
             "|--:|---|--:|--:|--:|--:|--:|"]
    for r in rounds:
        lines.append(f"| {r.index + 1} | {r.mode} | {r.wrk['requests']:,} | {r.rps:,.1f} "
                     f"| {cpu_ms(r):.2f} | {p50_ms(r):.2f} | {p99_ms(r):.2f} |")
    return "\n".join(lines)


def keys_table(totals: Mapping[str, WindowTraces], names: Sequence[str]) -> str:
    """The share of root spans and of the other spans carrying each Langfuse key."""
    keys = [*SPAN_KEYS, *ROOT_KEYS]
    lines = ["| key | " + " | ".join(f"{n}: root | {n}: others" for n in names) + " |",
             "|---|" + "--:|--:|" * len(names)]
    for key in keys:
        cells = []
        for name in names:
            t = totals[name]
            cells.append(f"{t.root_keys[key] / t.roots:.0%}" if t.roots else "–")
            cells.append(f"{t.child_keys[key] / t.children:.0%}"
                         if t.children and key in SPAN_KEYS else "–")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delivered(totals: Mapping[str, WindowTraces], names: Sequence[str]) -> str:
    lines = []
    for name in names:
        t = totals[name]
        shapes = ", ".join(f"{n:,} × {size}" for size, n in sorted(t.shapes.items()))
        lines.append(f"- {name}: {t.full:,} traces ({shapes} spans) with the way's session.id "
                     f"and user.id on every span, {t.bare} without a session (requests wrk "
                     f"abandoned before their body was read); {t.spans:,} spans in "
                     f"{t.requests:,} export requests, none refused, none mixed or foreign.")
    return "\n".join(lines)


def report(
    rounds: Sequence[Any],
    names: Sequence[str],
    totals: Mapping[str, WindowTraces],
    targets: Mapping[str, Any],
    args: argparse.Namespace,
) -> str:
    ways = [n for n in names if n != BASELINE]
    peers = [n for n in ways if n != OURS]
    queueing = (": one request at a time, so latency is the request's own, without queueing"
                if args.connections == 1 else
                ": latency includes queueing behind the other connections")
    return f"""# The chat route traced three ways, side by side

`{command_line("service_peers.py")}` (`make bench`), {utc_now()}.

- Machine: {machine_line()}; shared with other sessions' work, so the figures are
  noisy: compare ways within this run only.
- Python {platform.python_version()}; {package_versions(PACKAGES)};
  service/ and telemetry/ at {git_revision("service", "telemetry")}
- One service (`create_app`, one uvicorn worker, offline LLM provider, SQLite), four ways:
  **off** = `python -m service serve` with `OTEL_SDK_DISABLED=true`; **sessiontrace** =
  `python -m service serve` as shipped (SessionSpanProcessor, BatchSpanProcessor, its direct OTLP
  encoder, span spool); **langfuse** = `bench/peer_service.py langfuse`: LangfuseSpanProcessor
  with its own exporter (gzip, its default; `should_export_span` keeps every span, where its
  default keeps LLM spans only) and `propagate_attributes(session_id=, user_id=)` around each
  request; **baggage** = `bench/peer_service.py baggage`: contrib's
  `BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS)`, the SDK's BatchSpanProcessor and plain
  `OTLPSpanExporter`, `session.id`/`user.id` in each request's baggage and set on the server
  span by hand (the processor stamps spans only as they start).
- Fair by construction: the same app code, settings, logging and uvicorn options; each way
  on its own database and user; the SDK's default batch settings (queue 8,192 for sessiontrace,
  as it ships; 2,048 for the peers); every exporting way posts OTLP/HTTP protobuf to the same
  endpoint, the development sink's Langfuse route (Basic auth), with no collector in the run.
  The peers' middleware runs inside the HTTP server span and is handed each request's session
  and user from a table keyed by the Authorization header, so it authenticates and parses
  nothing (cheaper than any real resolution); the route resolves them itself in every way.
  The service's own sessiontrace calls run in every traced way, the same code at the same
  cost: `bind_caller` stamps the HTTP server span (the root) with the session and trace
  attributes, the executor starts its run span (`invoke_agent`) with them, `set_trace_io`
  and the payload encoding write input and output. So in each trace the node and LLM spans
  get the session from the way's own mechanism alone; the check below covers them.
- Load: `wrk -t1 -c{args.connections}` on `POST /api/v1/ai/chat` (`builtin:chat`, one user and
  conversation per way){queueing}. Rounds: {args.rounds}; each runs every way once in an order
  rotating by one from round to round, each in a fresh process: {args.warmup:g} s warm-up,
  {args.duration:g} s measured, stop (flushing its spans). CPU is the service process's own
  (/proc); "added" is a way's figure minus off's in the same round, median (min to max) over
  rounds.

{headline(rounds, names)}

{margins(rounds, peers)}

Rounds in the order they ran:

{rounds_table(rounds)}

## What reached the endpoint (checked; the run fails otherwise)

{delivered(totals, ways)}

Share of spans carrying each key, roots (the HTTP server span) and the other spans (the run
span, stamped by the service's own code in every way, and the node and LLM spans):

{keys_table(totals, ways)}

## What each peer does not deliver

- Both peers put `session.id` and `user.id` on every span, which Langfuse maps; nothing else.
  sessiontrace also stamps, on every span, `langfuse.session.id`/`langfuse.user.id` (read first
  by Langfuse, and not overwritten by instrumentations that write their own `session.id`), the
  trace name and tags; it rewrites third-party content attributes (scrub, cap, or hash when
  the account masks content), counts spans that end without a session, spools batches the
  endpoint cannot take, and refuses a second session in one trace.
- The `langfuse.*` keys, trace name, tags, metadata, input and output on the peers' root and
  run spans are there only because the service's own code writes them (`bind_caller`, the
  executor, `set_trace_io`: sessiontrace's API) in every way. A peer's user writes them with
  the peer's API: for Langfuse, `propagate_attributes(trace_name=, tags=, metadata=)` copies
  them to every span; for baggage, by hand. That work is not measured here.
- Langfuse also marks its application root span (`langfuse.internal.is_app_root`) and, by
  default, exports LLM spans only. Baggage travels on every outgoing HTTP request's headers
  (the offline provider makes none here), and the server span must be stamped by hand.
"""
