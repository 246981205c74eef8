"""The sink report groups spans the way Langfuse's Sessions view does."""

from __future__ import annotations

from typing import Any

from devstack.report import format_sessions_table, summarize_sessions


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
