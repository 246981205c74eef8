"""Group what the development sink received the way Langfuse's Sessions view groups it.

Langfuse reads a span's session from its own attributes only (first non-empty of
`langfuse.session.id`, `session.id`, `gen_ai.conversation.id`), so a span without one is left out
of every session: it is counted separately here, and `make run` requires that count to be 0.

Run: `python -m devstack.report --db var/devsink.sqlite3`.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SESSION_KEYS",
    "USER_KEYS",
    "SessionSummary",
    "SessionsReport",
    "format_sessions_table",
    "load_span_attributes",
    "sessions_report",
    "summarize_sessions",
]

SESSION_KEYS = ("langfuse.session.id", "session.id", "gen_ai.conversation.id")
USER_KEYS = ("langfuse.user.id", "user.id")
TRIGGER_KEYS = ("langfuse.trace.metadata.trigger", "sessiontrace.trigger", "trigger")
TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")


@dataclass(frozen=True)
class SessionSummary:
    """One row of the Sessions view."""

    session_id: str
    trigger: str
    traces: int
    spans: int
    users: tuple[str, ...]
    tokens: int


@dataclass(frozen=True)
class SessionsReport:
    """Sessions in order of first appearance, and the spans that belong to none."""

    sessions: list[SessionSummary]
    spans_without_session: int
    total_spans: int


@dataclass
class _Accumulator:
    traces: set[str] = field(default_factory=set)
    spans: int = 0
    users: set[str] = field(default_factory=set)
    triggers: set[str] = field(default_factory=set)
    tokens: int = 0


def summarize_sessions(spans: Iterable[tuple[str, Mapping[str, Any]]]) -> SessionsReport:
    """Group `(trace_id, span attributes)` pairs by session, as Langfuse does."""
    sessions: dict[str, _Accumulator] = {}
    without = total = 0
    for trace_id, attributes in spans:
        total += 1
        session_id = _first(attributes, SESSION_KEYS)
        if session_id is None:
            without += 1
            continue
        acc = sessions.setdefault(session_id, _Accumulator())
        acc.traces.add(trace_id)
        acc.spans += 1
        user = _first(attributes, USER_KEYS)
        if user is not None:
            acc.users.add(user)
        acc.triggers.add(_first(attributes, TRIGGER_KEYS) or _trigger_from_session(session_id))
        acc.tokens += sum(_int(attributes.get(key)) for key in TOKEN_KEYS)
    summaries = [
        SessionSummary(
            session_id=session_id,
            trigger=",".join(sorted(acc.triggers)),
            traces=len(acc.traces),
            spans=acc.spans,
            users=tuple(sorted(acc.users)),
            tokens=acc.tokens,
        )
        for session_id, acc in sessions.items()
    ]
    return SessionsReport(summaries, without, total)


def load_span_attributes(db: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """`(trace_id, attributes)` of every span in a sink database, in arrival order."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT trace_id, attributes FROM spans ORDER BY id").fetchall()
    finally:
        connection.close()
    return [(trace_id, json.loads(attributes)) for trace_id, attributes in rows]


def sessions_report(db: str | Path) -> SessionsReport:
    """The Sessions view of everything a sink database holds."""
    return summarize_sessions(load_span_attributes(db))


def format_sessions_table(report: SessionsReport) -> str:
    """A plain-text table: one line per session, then the spans without a session."""
    header = ("session", "trigger", "traces", "spans", "users", "tokens")
    rows = [
        (s.session_id, s.trigger, str(s.traces), str(s.spans), ",".join(s.users), str(s.tokens))
        for s in report.sessions
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3, 5}

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    lines = [line(header), line(["-" * width for width in widths]), *map(line, rows)]
    lines.append(
        f"{len(report.sessions)} sessions, {report.total_spans} spans, "
        f"spans without a session: {report.spans_without_session}"
    )
    return "\n".join(lines)


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _trigger_from_session(session_id: str) -> str:
    # Session ids say where a run came from (telemetry.session): ba:... user chat, gov:... scheduler
    # or internal run.
    if session_id.startswith("ba:"):
        return "user"
    if session_id.startswith("gov:"):
        return "schedule"
    return "unknown"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Sessions table of a sink database; exit 1 when some span has no session."""
    parser = argparse.ArgumentParser(prog="python -m devstack.report", description=__doc__)
    parser.add_argument("--db", default="var/devsink.sqlite3")
    args = parser.parse_args(argv)
    report = sessions_report(args.db)
    print(format_sessions_table(report))
    return 1 if report.spans_without_session else 0


if __name__ == "__main__":
    raise SystemExit(main())
