"""The sink report groups spans the way Langfuse's Sessions view does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.otlp import SpanRecord
from devstack.report import (
    STATUS_ERROR,
    StoredSpan,
    format_sessions_table,
    format_traces_table,
    load_span_attributes,
    sessions_report,
    summarize_sessions,
    summarize_spans,
)
from devstack.report import main as report_main
from devstack.store import RequestRecord, SinkStore


def test_sessions_come_from_span_attributes_in_langfuse_precedence_order() -> None:
    spans: list[tuple[str, dict[str, Any]]] = [
        ("t1", {"session.id": "ba:acme:s:1", "user.id": "u1", "gen_ai.usage.input_tokens": 10}),
        ("t1", {"session.id": "ba:acme:s:1", "user.id": "u1", "gen_ai.usage.output_tokens": 5}),
        ("t2", {"langfuse.session.id": "ba:acme:s:1", "session.id": "other", "user.id": "u2"}),
        ("t3", {"gen_ai.conversation.id": "gov:acme:s:9", "langfuse.user.id": "u3"}),
        ("t3", {"session.id": "", "user.id": "u3"}),
        ("t4", {"user.id": "u4"}),
    ]

    report = summarize_sessions(spans)

    user, governance = report.sessions
    assert (user.session_id, user.trigger, user.traces, user.spans) == ("ba:acme:s:1", "user", 2, 3)
    assert (user.users, user.tokens) == (("u1", "u2"), 15)
    assert (governance.session_id, governance.trigger, governance.users) == (
        "gov:acme:s:9",
        "schedule",
        ("u3",),
    )
    assert report.spans_without_session == 2
    assert report.total_spans == 6


def test_an_explicit_trigger_attribute_wins_over_the_session_prefix() -> None:
    report = summarize_sessions([("t", {"session.id": "gov:a:k:1", "trigger": "manual"})])

    assert report.sessions[0].trigger == "manual"


def test_table_lists_each_session_and_the_spans_without_one() -> None:
    report = summarize_sessions(
        [("t1", {"session.id": "ba:acme:s:1", "user.id": "u1", "gen_ai.usage.input_tokens": 7}),
         ("t2", {})]
    )

    table = format_sessions_table(report)

    header, _, row, summary = table.splitlines()
    assert header.split() == ["session", "trigger", "traces", "spans", "users", "tokens"]
    assert row.split() == ["ba:acme:s:1", "user", "1", "1", "u1", "7"]
    assert summary.endswith("spans without a session: 1")



TRACE = "a" * 32
SESSION = {"session.id": "gov:acme:s:1"}
RUN_KEYS: dict[str, Any] = {
    **SESSION,
    "user.id": "u1",
    "langfuse.trace.name": "builtin:governance-review",
    "langfuse.trace.tags": ["schedule"],
}
ROOT_KEYS: dict[str, Any] = {
    **RUN_KEYS,
    "langfuse.observation.input": '{"role": "user", "content": "review"}',
    "langfuse.observation.output": '{"role": "assistant", "content": "done"}',
    "langfuse.trace.metadata.run_id": "run-1",
}


def stored(
    span_id: str, parent: str | None = None, attributes: dict[str, Any] | None = None, *,
    trace: str = TRACE, name: str = "span", status: int = 0,
) -> StoredSpan:
    return StoredSpan(trace, span_id, parent, name, status, attributes or {})


def run_root(
    span_id: str = "r1", changes: dict[str, Any] | None = None, *,
    trace: str = TRACE, status: int = 0,
) -> StoredSpan:
    attributes = {**ROOT_KEYS, **(changes or {})}
    return stored(span_id, None, attributes, trace=trace, name="POST /runs", status=status)


def test_a_complete_run_has_no_problems_and_shows_its_root_input_output_and_run_id() -> None:
    report = summarize_spans([stored("c1", "r1", RUN_KEYS), run_root()])

    (trace,) = report.traces
    assert report.problems == []
    assert (trace.trace_id, trace.sessions, trace.name, trace.roots) == (
        TRACE, ("gov:acme:s:1",), "builtin:governance-review", 1,
    )
    assert trace.input == '{"role": "user", "content": "review"}'
    assert trace.run_id == "run-1"


def test_trace_input_output_and_metadata_come_from_the_root_span_only() -> None:
    child = stored("c1", "r1", {
        **RUN_KEYS, "langfuse.observation.input": "child in", "langfuse.trace.input": "trace in",
        "langfuse.trace.output": "trace out", "langfuse.trace.metadata.run_id": "child-run",
    })
    root = stored("r1", None, RUN_KEYS, name="POST /runs")

    report = summarize_spans([child, root])

    (trace,) = report.traces
    assert (trace.input, trace.output, trace.run_id, dict(trace.metadata)) == (None, None, None, {})
    assert any("root span has no input" in problem for problem in report.problems)
    assert any("root span has no output" in problem for problem in report.problems)


def test_genai_messages_on_the_root_stand_in_for_observation_input_and_output() -> None:
    root = stored("r1", None, {
        **RUN_KEYS, "gen_ai.input.messages": '[{"role": "user"}]',
        "gen_ai.output.messages": ["a", "b"],
    })

    (trace,) = summarize_spans([root]).traces

    assert (trace.input, trace.output) == ('[{"role": "user"}]', '["a", "b"]')


def test_the_trace_name_is_any_rows_langfuse_trace_name_else_the_root_span_name() -> None:
    named_child = summarize_spans([
        stored("r1", None, SESSION, name="POST /chat"),
        stored("c1", "r1", {**SESSION, "langfuse.trace.name": "builtin:chat"}),
    ])
    unnamed = summarize_spans([stored("r1", None, SESSION, name="POST /chat")])

    assert named_child.traces[0].name == "builtin:chat"
    assert unnamed.traces[0].name == "POST /chat"


def test_spans_with_a_session_lacking_trace_name_or_tags_on_their_own_row_are_problems() -> None:
    report = summarize_spans([
        run_root(),
        stored("c1", "r1", SESSION, name="chat offline-echo"),
        stored("c2", "r1", {**SESSION, "langfuse.trace.name": "x", "langfuse.trace.tags": []},
               name="node plan"),
    ])

    name_problem, tags_problem = report.problems
    assert "1 of 3 spans with a session lack langfuse.trace.name" in name_problem
    assert "(run run-1)" in name_problem
    assert "2 of 3 spans with a session lack langfuse.trace.tags" in tags_problem
    assert "'chat offline-echo', 'node plan'" in tags_problem


def test_a_failed_run_may_lack_output_but_not_input() -> None:
    failed = summarize_spans([run_root(changes={"langfuse.observation.output": ""},
                                       status=STATUS_ERROR)])
    unset = summarize_spans([run_root(changes={"langfuse.observation.output": ""})])
    no_input = summarize_spans([run_root(changes={"langfuse.observation.input": ""},
                                         status=STATUS_ERROR)])

    assert failed.problems == []
    assert [p for p in unset.problems if "no output" in p and "status is not ERROR" in p]
    assert [p for p in no_input.problems if "root span has no input" in p]


def test_traces_without_a_root_or_with_two_roots_are_problems() -> None:
    report = summarize_spans([
        stored("c1", "gone", RUN_KEYS, trace="b" * 32),
        run_root("r1"),
        run_root("r2"),
        run_root("r2"),  # delivered twice: still one span for Langfuse
    ])

    assert report.problems == [
        f"trace {'b' * 32} has no root span (every span has a parent)",
        f"trace {TRACE} (run run-1) has 2 root spans (spans without a parent)",
    ]


def test_a_trace_holding_two_sessions_is_a_problem() -> None:
    report = summarize_spans([
        run_root(),
        stored("c1", "r1", {**RUN_KEYS, "langfuse.session.id": "gov:acme:s:2"}),
    ])

    assert report.traces[0].sessions == ("gov:acme:s:1", "gov:acme:s:2")
    assert report.problems == [
        f"trace {TRACE} (run run-1) holds 2 sessions: gov:acme:s:1, gov:acme:s:2"
    ]


def test_spans_without_a_session_are_a_problem() -> None:
    report = summarize_spans([run_root(), stored("c1", "r1", name="orphan")])

    assert report.spans_without_session == 1
    assert report.problems == ["1 spans without a session (must be 0)"]


def test_traces_table_previews_input_and_output_and_shows_what_is_missing() -> None:
    report = summarize_spans([
        run_root(changes={"langfuse.observation.input": "x" * 100}),
        stored("c1", "gone", RUN_KEYS, trace="b" * 32),
        stored("r9", None, {"session.id": "ba:acme:s:1"}, trace="c" * 32, name="POST /chat"),
        run_root("r8", {"langfuse.observation.output": ""}, trace="d" * 32, status=STATUS_ERROR),
    ])

    header, _, complete, rootless, bare, failed, summary = format_traces_table(
        report
    ).splitlines()
    assert header.split() == ["trace", "session", "name", "run", "input", "output"]
    assert complete.split()[:4] == [TRACE, "gov:acme:s:1", "builtin:governance-review", "run-1"]
    assert "x" * 37 + "..." in complete and "x" * 38 not in complete
    assert '{"role": "assistant", "content": "done"}' in complete
    assert rootless.split()[-4:] == ["NO", "ROOT", "NO", "ROOT"]
    assert bare.split() == ["c" * 32, "ba:acme:s:1", "POST", "/chat", "-", "MISSING", "MISSING"]
    assert failed.endswith("- (status ERROR)")
    assert summary == "4 traces"


def test_the_report_reads_roots_and_status_from_a_sink_database(tmp_path: Path) -> None:
    store = SinkStore(tmp_path / "sink.sqlite3")
    store.record(
        RequestRecord(200, "application/x-protobuf", "gzip", "4", True, 10),
        [
            span_record("r1", None, {**RUN_KEYS, "langfuse.observation.input": "in",
                                     "langfuse.trace.metadata.run_id": "run-7"},
                        status=STATUS_ERROR),
            span_record("c1", "r1", RUN_KEYS),
        ],
    )
    store.close()

    report = sessions_report(tmp_path / "sink.sqlite3")

    (trace,) = report.traces
    assert (trace.roots, trace.failed, trace.run_id, trace.input) == (1, True, "run-7", "in")
    assert report.problems == []
    assert len(load_span_attributes(tmp_path / "sink.sqlite3")) == 2


def test_the_report_command_exits_1_when_it_lists_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean, broken = tmp_path / "clean.sqlite3", tmp_path / "broken.sqlite3"
    for path, changes in ((clean, {}), (broken, {"langfuse.observation.input": ""})):
        store = SinkStore(path)
        store.record(
            RequestRecord(200, "application/x-protobuf", None, "4", True, 10),
            [span_record("r1", None, {**ROOT_KEYS, **changes})],
        )
        store.close()

    assert report_main(["--db", str(clean)]) == 0
    assert "problems:" not in capsys.readouterr().out
    assert report_main(["--db", str(broken)]) == 1
    printed = capsys.readouterr().out
    assert "1 traces" in printed
    assert "problems:" in printed and "root span has no input" in printed


def span_record(
    span_id: str, parent: str | None, attributes: dict[str, Any], *, status: int = 0
) -> SpanRecord:
    return SpanRecord(
        trace_id=TRACE, span_id=span_id.ljust(16, "0"),
        parent_span_id=None if parent is None else parent.ljust(16, "0"),
        name=span_id, kind=1, start_time_unix_nano=1, end_time_unix_nano=2,
        status_code=status, attributes=attributes, resource_attributes={}, scope_name="t",
    )
