"""Group what the development sink received the way Langfuse (v4, "direct" path) shows it.

Sessions: Langfuse reads a span's session from its own attributes only (first non-empty of
`langfuse.session.id`, `session.id`, `gen_ai.conversation.id`), so a span without one is left out
of every session: it is counted separately here, and `make run` requires that count to be 0.

Traces: on the v4 path a trace is rolled up from its span rows at query time. Its name is any
row's `langfuse.trace.name`, else the root span's name; its input, output and metadata come from
the root span (the span with no parent) only; and the trace name and tags filters read each
row's own `langfuse.trace.name` and `langfuse.trace.tags`. The traces table shows what Langfuse
would show for each trace, and the report lists as problems whatever would make a run show up
incomplete there (see shared/LANGFUSE_OTLP_CONTRACT.md).

Run: `python -m devstack.report --db var/devsink.sqlite3` (exit 1 when it lists a problem).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "INPUT_KEYS",
    "OUTPUT_KEYS",
    "SESSION_KEYS",
    "STATUS_ERROR",
    "USER_KEYS",
    "SessionSummary",
    "SessionsReport",
    "StoredSpan",
    "TraceSummary",
    "format_report",
    "format_sessions_table",
    "format_traces_table",
    "load_span_attributes",
    "load_spans",
    "sessions_report",
    "summarize_sessions",
    "summarize_spans",
]

SESSION_KEYS = ("langfuse.session.id", "session.id", "gen_ai.conversation.id")
USER_KEYS = ("langfuse.user.id", "user.id")
TRIGGER_KEYS = ("langfuse.trace.metadata.trigger", "sessiontrace.trigger", "trigger")
TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
TRACE_NAME = "langfuse.trace.name"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_METADATA_PREFIX = "langfuse.trace.metadata."
# The root span's observation input/output, else the GenAI conventions' messages.
INPUT_KEYS = ("langfuse.observation.input", "gen_ai.input.messages")
OUTPUT_KEYS = ("langfuse.observation.output", "gen_ai.output.messages")
RUN_ID_METADATA = "run_id"
# OTLP's Status.code, as the sink stores it: 0 unset, 1 ok, 2 error.
STATUS_ERROR = 2
PREVIEW_CHARS = 40
MISSING = "MISSING"


@dataclass(frozen=True)
class StoredSpan:
    """The parts of one stored span that Langfuse's trace roll-up reads."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    status_code: int
    attributes: Mapping[str, Any]


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
class TraceSummary:
    """One trace as Langfuse v4 rolls it up from its span rows."""

    trace_id: str
    sessions: tuple[str, ...]
    name: str | None
    roots: int
    input: str | None
    output: str | None
    failed: bool
    metadata: Mapping[str, Any]

    @property
    def run_id(self) -> str | None:
        """The run id from the root span's trace metadata."""
        value = self.metadata.get(RUN_ID_METADATA)
        return None if value in (None, "") else str(value)


@dataclass(frozen=True)
class SessionsReport:
    """Sessions in order of first appearance, the spans that belong to none, traces, problems.

    `traces` is empty when the report was built from `(trace_id, attributes)` pairs alone
    (`summarize_sessions`), which cannot tell a root span; `problems` is what `make run` and
    `python -m devstack.report` fail on.
    """

    sessions: list[SessionSummary]
    spans_without_session: int
    total_spans: int
    traces: list[TraceSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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
    problems = [f"{without} spans without a session (must be 0)"] if without else []
    return SessionsReport(summaries, without, total, problems=problems)


def summarize_spans(spans: Iterable[StoredSpan]) -> SessionsReport:
    """Sessions and traces of stored spans, with every problem Langfuse v4 would show."""
    spans = list(spans)
    report = summarize_sessions((span.trace_id, span.attributes) for span in spans)
    by_trace: dict[str, list[StoredSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    traces = [_trace(trace_id, rows) for trace_id, rows in by_trace.items()]
    problems = list(report.problems)
    for trace, rows in zip(traces, by_trace.values(), strict=True):
        problems.extend(_trace_problems(trace, rows))
    return replace(report, traces=traces, problems=problems)


def load_spans(db: str | Path) -> list[StoredSpan]:
    """Every span in a sink database, in arrival order."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT trace_id, span_id, parent_span_id, name, status_code, attributes"
            " FROM spans ORDER BY id"
        ).fetchall()
    finally:
        connection.close()
    return [
        StoredSpan(trace_id, span_id, parent or None, name, status_code, json.loads(attributes))
        for trace_id, span_id, parent, name, status_code, attributes in rows
    ]


def load_span_attributes(db: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """`(trace_id, attributes)` of every span in a sink database, in arrival order."""
    return [(span.trace_id, dict(span.attributes)) for span in load_spans(db)]


def sessions_report(db: str | Path) -> SessionsReport:
    """The Sessions view and the traces of everything a sink database holds."""
    return summarize_spans(load_spans(db))


def format_sessions_table(report: SessionsReport) -> str:
    """A plain-text table: one line per session, then the spans without a session."""
    header = ("session", "trigger", "traces", "spans", "users", "tokens")
    rows = [
        (s.session_id, s.trigger, str(s.traces), str(s.spans), ",".join(s.users), str(s.tokens))
        for s in report.sessions
    ]
    lines = _table(header, rows, numeric={2, 3, 5})
    lines.append(
        f"{len(report.sessions)} sessions, {report.total_spans} spans, "
        f"spans without a session: {report.spans_without_session}"
    )
    return "\n".join(lines)


def format_traces_table(report: SessionsReport) -> str:
    """A plain-text table: one line per trace, what Langfuse shows as its name, input, output."""
    header = ("trace", "session", "name", "run", "input", "output")
    rows = [
        (
            t.trace_id,
            ",".join(t.sessions) or "-",
            t.name or MISSING,
            t.run_id or "-",
            _preview(t.input, roots=t.roots),
            _preview(t.output, roots=t.roots, failed=t.failed),
        )
        for t in report.traces
    ]
    lines = _table(header, rows, numeric=set())
    lines.append(f"{len(report.traces)} traces")
    return "\n".join(lines)


def format_report(report: SessionsReport) -> str:
    """The sessions table, the traces table, then the problems, if any."""
    parts = [format_sessions_table(report)]
    if report.traces:
        parts.append(format_traces_table(report))
    if report.problems:
        parts.append("\n".join(["problems:", *(f"  {problem}" for problem in report.problems)]))
    return "\n\n".join(parts)


def _trace(trace_id: str, rows: Sequence[StoredSpan]) -> TraceSummary:
    # Langfuse keeps one row per span id: a span the collector delivered twice is one root.
    roots = list({span.span_id: span for span in rows if span.parent_span_id is None}.values())
    root = roots[0] if roots else None
    sessions = dict.fromkeys(
        session for span in rows if (session := _first(span.attributes, SESSION_KEYS))
    )
    named = next((name for span in rows if (name := _first(span.attributes, (TRACE_NAME,)))), None)
    return TraceSummary(
        trace_id=trace_id,
        sessions=tuple(sessions),
        name=named or (root.name if root is not None and root.name else None),
        roots=len(roots),
        input=None if root is None else _text(root.attributes, INPUT_KEYS),
        output=None if root is None else _text(root.attributes, OUTPUT_KEYS),
        failed=root is not None and root.status_code == STATUS_ERROR,
        metadata={} if root is None else {
            key.removeprefix(TRACE_METADATA_PREFIX): value
            for key, value in root.attributes.items()
            if key.startswith(TRACE_METADATA_PREFIX)
        },
    )


def _trace_problems(trace: TraceSummary, rows: Sequence[StoredSpan]) -> list[str]:
    label = f"trace {trace.trace_id}" + (f" (run {trace.run_id})" if trace.run_id else "")
    problems = []
    if trace.roots == 0:
        problems.append(f"{label} has no root span (every span has a parent)")
    elif trace.roots > 1:
        problems.append(f"{label} has {trace.roots} root spans (spans without a parent)")
    if len(trace.sessions) > 1:
        listed = ", ".join(trace.sessions)
        problems.append(f"{label} holds {len(trace.sessions)} sessions: {listed}")
    in_session = [span for span in rows if _first(span.attributes, SESSION_KEYS) is not None]
    for key in (TRACE_NAME, TRACE_TAGS):
        lacking = [span.name for span in in_session if not _present(span.attributes.get(key))]
        if lacking:
            names = ", ".join(repr(name) for name in dict.fromkeys(lacking))
            problems.append(
                f"{label}: {len(lacking)} of {len(in_session)} spans with a session lack {key} "
                f"on their own row ({names})"
            )
    if trace.roots:
        if trace.input is None:
            problems.append(f"{label}: the root span has no input ({' or '.join(INPUT_KEYS)})")
        if trace.output is None and not trace.failed:
            problems.append(
                f"{label}: the root span has no output ({' or '.join(OUTPUT_KEYS)}) "
                "and its status is not ERROR"
            )
    return problems


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), line(["-" * width for width in widths]), *map(line, rows)]


def _preview(value: str | None, *, roots: int, failed: bool = False) -> str:
    if not roots:
        return "NO ROOT"
    if value is None:
        return "- (status ERROR)" if failed else MISSING
    flat = " ".join(value.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 3] + "..."


def _text(attributes: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    # Payloads are JSON strings; an array attribute (GenAI messages) is shown as JSON too.
    for key in keys:
        value = attributes.get(key)
        if _present(value):
            return value if isinstance(value, str) else json.dumps(value)
    return None


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _trigger_from_session(session_id: str) -> str:
    # Session ids say where a run came from (sessiontrace._session): ba:... user chat, gov:... scheduler
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
    """Print the sessions and traces of a sink database; exit 1 when it lists a problem."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", default="var/devsink.sqlite3")
    args = parser.parse_args(argv)
    report = sessions_report(args.db)
    print(format_report(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
