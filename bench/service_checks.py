"""What bench/service_overhead.py checks: "off" exported nothing, "on" exported every run, stamped."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.delivery import CollectorCounters

__all__ = ["ExportedTraces", "answered_runs", "exported_traces", "verify"]

_ANSWERED = re.compile(r'"POST /api/v1/ai/chat HTTP/1\.1" 200\b')
_DISCONNECT = "starlette.requests.ClientDisconnect"


@dataclass
class ExportedTraces:
    """The sink's traces, by whether their spans carry a session.id."""

    spans: int = 0
    stamped: int = 0  # traces whose every span has a session.id
    unstamped: int = 0  # traces with no span carrying one
    mixed: int = 0  # traces with some of each: a run that lost its session part-way
    sessions: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    spans_per_trace: Counter[int] = field(default_factory=Counter)


def exported_traces(db: Path) -> ExportedTraces:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute(
            "SELECT trace_id, COUNT(*),"
            " SUM(COALESCE(json_extract(attributes, '$.\"session.id\"'), '') != ''),"
            " GROUP_CONCAT(DISTINCT json_extract(attributes, '$.\"session.id\"')),"
            " GROUP_CONCAT(DISTINCT json_extract(attributes, '$.\"user.id\"'))"
            " FROM spans GROUP BY trace_id"
        ).fetchall()
    finally:
        connection.close()
    traces = ExportedTraces()
    for _, spans, stamped, sessions, users in rows:
        traces.spans += spans
        if stamped == spans:
            traces.stamped += 1
            traces.spans_per_trace[spans] += 1
        elif stamped == 0:
            traces.unstamped += 1
        else:
            traces.mixed += 1
        traces.sessions.update((sessions or "").split(",") if sessions else ())
        traces.users.update((users or "").split(",") if users else ())
    return traces


def answered_runs(log: str) -> tuple[int, int]:
    """Chat requests the service answered 200 (its access log), and client disconnects."""
    return len(_ANSWERED.findall(log)), log.count(_DISCONNECT)


def verify(
    rounds: Sequence[Any],
    targets: Mapping[str, Any],
    traces: ExportedTraces,
    counters: CollectorCounters,
    *,
    connections: int,
    wrk_runs: int,
) -> list[str]:
    """Everything that would make "off" and "on" not mean what they say; empty when fine."""
    problems = []
    for index, measured in enumerate(rounds):
        if measured.errors:
            problems.append(f"round {index + 1} ({measured.mode}): wrk saw errors {measured.wrk}")
        if measured.mode == "off" and measured.accepted_delta:
            problems.append(f"round {index + 1} (off): the collector accepted "
                            f"{measured.accepted_delta} spans: tracing was not off")
        if measured.mode == "on" and not measured.accepted_delta:
            problems.append(f"round {index + 1} (on): the collector accepted nothing")
    on, off = targets["on"], targets["off"]
    if off.account.user_id in traces.users:
        problems.append("spans of the 'off' service's user reached the sink")
    if traces.sessions != {on.session_id} or traces.users != {on.account.user_id}:
        problems.append(f"sessions {traces.sessions} and users {traces.users} at the sink; "
                        f"expected only {on.session_id} of {on.account.user_id}")
    log = on.logs()
    answered, _ = answered_runs(log)
    # A request in flight when a round's time is up is abandoned by wrk: if its run completed,
    # its trace is there but no 200 was logged; if its body was not read yet, there is only a
    # server span and no session. Each wrk run abandons at most `connections` requests.
    abandoned = connections * wrk_runs
    if not answered <= traces.stamped <= answered + abandoned:
        problems.append(f"the 'on' service answered {answered} chat runs (and at most "
                        f"{abandoned} were abandoned), but the sink holds {traces.stamped} "
                        "traces with session.id on every span")
    if traces.mixed:
        problems.append(f"{traces.mixed} traces mix spans with and without session.id")
    if traces.unstamped > abandoned:
        problems.append(f"{traces.unstamped} traces without a session, more than the "
                        f"{abandoned} requests wrk can have abandoned")
    # The collector keeps spans of requests that started no run out of Langfuse: only the
    # server spans of requests wrk abandoned before their body was read.
    if counters.filtered > abandoned:
        problems.append(f"the collector kept {counters.filtered} spans out of Langfuse, more than "
                        f"the {abandoned} requests wrk can have abandoned")
    if (counters.failed or counters.sent + counters.filtered != counters.accepted
            or counters.sent != traces.spans):
        problems.append(f"collector {counters}, sink {traces.spans} spans: spans were lost")
    if "Queue full" in log:
        problems.append("the 'on' service's BatchSpanProcessor dropped spans (Queue full)")
    return problems
