"""What bench/service_peers.py checks at the endpoint, round by round: every span of every run
carries the variant's session.id and user.id, nothing was rejected, dropped or sent when off."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_INPUT,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_OUTPUT,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

from service_checks import answered_runs

__all__ = ["ROOT_KEYS", "SPAN_KEYS", "SinkMark", "WindowTraces", "combined", "sink_mark",
           "verify_round", "window_traces"]

# What Langfuse needs on every span of a run (sessiontrace._trace_attributes), and on its root.
SPAN_KEYS = (SESSION_ID, USER_ID, LANGFUSE_SESSION_ID, LANGFUSE_USER_ID, LANGFUSE_TRACE_NAME,
             LANGFUSE_TRACE_TAGS)
ROOT_KEYS = (LANGFUSE_TRACE_INPUT, LANGFUSE_TRACE_OUTPUT)
# uvicorn shuts down gracefully on SIGTERM, then raises the signal again to exit by it.
CLEAN_EXITS = (0, -signal.SIGTERM)
_DISCONNECT = "starlette.requests.ClientDisconnect"
_RECORD = re.compile(r"\d{4}-\d\d-\d\d ")  # a new line of the service's logging format
# Log lines of an exporter or batch processor that lost spans, or of a failure in the service.
_LOSS_MARKERS = ("Queue full", "Failed to export", "Exception while exporting", "Traceback")


@dataclass(frozen=True)
class SinkMark:
    """The last span and export request the sink had stored at one moment."""

    span_id: int
    request_id: int


@dataclass
class WindowTraces:
    """The spans the sink stored between two marks, by trace."""

    spans: int = 0
    requests: int = 0
    rejected: int = 0  # export requests the sink refused (auth, encoding, ...)
    full: int = 0  # traces whose every span carries the expected session.id and user.id
    bare: int = 0  # traces with neither on any span
    mixed: int = 0  # traces with some of each: a run that lost its session part-way
    foreign: int = 0  # spans carrying another session or user
    shapes: Counter[int] = field(default_factory=Counter)  # spans per full trace
    roots: int = 0
    children: int = 0
    root_keys: Counter[str] = field(default_factory=Counter)  # roots carrying each key
    child_keys: Counter[str] = field(default_factory=Counter)  # other spans carrying each key


def _read(db: Path, query: str, *args: int) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(query, args).fetchall()
    finally:
        connection.close()


def sink_mark(db: Path) -> SinkMark:
    ((spans, requests),) = _read(
        db, "SELECT (SELECT COALESCE(MAX(id), 0) FROM spans),"
        " (SELECT COALESCE(MAX(id), 0) FROM requests)"
    )
    return SinkMark(int(str(spans)), int(str(requests)))


def window_traces(
    db: Path, start: SinkMark, end: SinkMark, *, session_id: str, user_id: str
) -> WindowTraces:
    """What arrived after `start` up to `end`, against the session and user expected."""
    found = WindowTraces()
    statuses = _read(db, "SELECT status FROM requests WHERE id > ? AND id <= ?",
                     start.request_id, end.request_id)
    found.requests = len(statuses)
    found.rejected = sum(1 for (status,) in statuses if status != 200)
    rows = _read(db, "SELECT trace_id, parent_span_id, attributes FROM spans"
                 " WHERE id > ? AND id <= ?", start.span_id, end.span_id)
    stamped: Counter[object] = Counter()
    sizes: Counter[object] = Counter()
    for trace_id, parent, text in rows:
        attributes = json.loads(str(text))
        session, user = attributes.get(SESSION_ID), attributes.get(USER_ID)
        sizes[trace_id] += 1
        if session == session_id and user == user_id:
            stamped[trace_id] += 1
        elif session or user:
            found.foreign += 1
        keys = found.child_keys if parent else found.root_keys
        if parent:
            found.children += 1
        else:
            found.roots += 1
        keys.update(key for key in (*SPAN_KEYS, *ROOT_KEYS) if attributes.get(key))
    found.spans = len(rows)
    for trace_id, size in sizes.items():
        if stamped[trace_id] == size:
            found.full += 1
            found.shapes[size] += 1
        elif stamped[trace_id] == 0:
            found.bare += 1
        else:
            found.mixed += 1
    return found


def verify_round(
    label: str, *, exports: bool, wrk: dict[str, int], log: str, exit_code: int,
    traces: WindowTraces, connections: int, wrk_runs: int = 2,
) -> list[str]:
    """Everything that would make one round not mean what it says; empty when fine."""
    problems = []
    errors = {k: wrk[k] for k in ("connect_errors", "read_errors", "write_errors",
                                  "status_errors", "timeouts") if wrk[k]}
    if errors:
        problems.append(f"{label}: wrk saw errors {errors}")
    if exit_code not in CLEAN_EXITS:
        problems.append(f"{label}: the service exited with {exit_code}")
    if not exports:
        if traces.spans or traces.requests:
            problems.append(f"{label}: tracing is off, yet the endpoint got {traces.requests} "
                            f"export requests with {traces.spans} spans")
        return problems
    answered, _ = answered_runs(log)
    # A request in flight when wrk's time is up is abandoned: its run may still complete (a
    # trace, no 200 logged), or, with its body unread, it is a server span with no run.
    abandoned = connections * wrk_runs
    if not answered <= traces.full <= answered + abandoned:
        problems.append(f"{label}: the service answered {answered} chat runs (at most "
                        f"{abandoned} more abandoned), but the endpoint holds {traces.full} traces "
                        "with session.id and user.id on every span")
    if traces.mixed:
        problems.append(f"{label}: {traces.mixed} traces mix spans with and without the session")
    if traces.foreign:
        problems.append(f"{label}: {traces.foreign} spans carry another session or user")
    if traces.bare > abandoned:
        problems.append(f"{label}: {traces.bare} traces without a session, more than the "
                        f"{abandoned} requests wrk can have abandoned")
    if traces.rejected:
        problems.append(f"{label}: the endpoint refused {traces.rejected} of "
                        f"{traces.requests} export requests")
    for marker in _LOSS_MARKERS:
        for block in (_block(part) for part in log.split(marker)[1:]):
            # wrk abandoning a request when its time is up (see `abandoned`) is not a failure.
            if not any(line.startswith(_DISCONNECT) for line in block):
                shown = [marker + block[0], *block[1:]]
                shown = shown if len(shown) <= 8 else [*shown[:2], "...", *shown[-5:]]
                problems.append(f"{label}: {marker!r} in the service log:\n    "
                                + "\n    ".join(shown))
                break
    return problems


def _block(text: str) -> list[str]:
    """The rest of one log record: its lines up to the next record (a traceback's too)."""
    lines = text.splitlines() or [""]
    end = next((i for i, line in enumerate(lines[1:], 1) if _RECORD.match(line)), len(lines))
    return lines[:end]


def combined(parts: Sequence[WindowTraces]) -> WindowTraces:
    """Several rounds' windows as one."""
    total = WindowTraces()
    for part in parts:
        for name in ("spans", "requests", "rejected", "full", "bare", "mixed", "foreign",
                     "roots", "children"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.shapes.update(part.shapes)
        total.root_keys.update(part.root_keys)
        total.child_keys.update(part.child_keys)
    return total
