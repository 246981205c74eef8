"""The pytest plugin teams use to test their own apps for spans without a session.

Run through pytest's `pytester`: each test writes a test module that uses the plugin's fixtures,
runs pytest on it, and checks what that run reported. The plugin is found through its `pytest11`
entry point, as in a team's project.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sessiontrace import SpanRecorder, assert_every_span_has_a_session, bind_session

pytest_plugins = ["pytester"]

ORPHAN_AND_BOUND = """
    from sessiontrace import bind_session

    def test_app(sessiontrace_spans):
        tracer = sessiontrace_spans.provider.get_tracer("app")
        with bind_session(session_id="s-1", user_id="alice"):
            tracer.start_span("bound").end()
        tracer.start_span("orphan").end()
        sessiontrace_spans.assert_every_span_has_a_session()
"""


def test_the_plugin_is_a_pytest11_entry_point() -> None:
    [entry_point] = importlib.metadata.entry_points().select(group="pytest11", name="sessiontrace")

    assert entry_point.value == "sessiontrace._pytest_plugin"


def test_a_span_without_a_session_fails_the_test_naming_that_span(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(ORPHAN_AND_BOUND)

    result = pytester.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*1 problem(s) in 2 spans:*", "*span 'orphan' (INTERNAL, id *): no session*"]
    )
    assert "'bound'" not in result.stdout.str()


def test_spans_all_in_their_session_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from sessiontrace import bind_session

        def test_app(sessiontrace_spans):
            tracer = sessiontrace_spans.provider.get_tracer("app")
            with tracer.start_as_current_span("server"):
                with bind_session(session_id="s-1", user_id="alice"):
                    tracer.start_span("work").end()
                tracer.start_span("send").end()
            assert [s.name for s in sessiontrace_spans.spans] == ["work", "send", "server"]
            sessiontrace_spans.assert_every_span_has_a_session(session_id="s-1")
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_the_global_fixture_records_the_global_provider_one_test_at_a_time(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from opentelemetry import trace
        from sessiontrace import bind_session

        def test_first(sessiontrace_global_spans):
            with bind_session(session_id="s-1", user_id="alice"):
                trace.get_tracer("app").start_span("first").end()
            sessiontrace_global_spans.assert_every_span_has_a_session(session_id="s-1")

        def test_second_sees_only_its_own_spans(sessiontrace_global_spans):
            trace.get_tracer("app").start_span("second").end()
            assert [s.name for s in sessiontrace_global_spans.spans] == ["second"]
            sessiontrace_global_spans.assert_every_span_has_a_session()
        """
    )

    # In a process of its own: the fixture sets the process's one global provider.
    result = pytester.runpytest_subprocess()

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*span 'second' (INTERNAL, id *): no session*"])


def test_a_trace_holding_two_sessions_fails_naming_both() -> None:
    recorder = SpanRecorder()
    tracer = recorder.provider.get_tracer("app")
    with tracer.start_as_current_span("server"):
        with bind_session(session_id="s-1", user_id="alice"):
            tracer.start_span("first run").end()
        with bind_session(session_id="s-2", user_id="alice"):
            tracer.start_span("second run").end()

    with pytest.raises(AssertionError, match=r"holds 2 sessions \('s-1': 'first run'.*; 's-2'"):
        recorder.assert_every_span_has_a_session()


def test_a_span_in_another_session_than_expected_is_named() -> None:
    recorder = SpanRecorder()
    with bind_session(session_id="s-2", user_id="alice"):
        recorder.provider.get_tracer("app").start_span("run").end()

    with pytest.raises(AssertionError, match=r"span 'run' .*: session 's-2', not 's-1'"):
        assert_every_span_has_a_session(recorder.spans, session_id="s-1")


def test_no_spans_at_all_fails() -> None:
    with pytest.raises(AssertionError, match="no spans were recorded"):
        assert_every_span_has_a_session([])


def test_a_recorder_on_a_provider_without_the_session_processor_reports_its_spans() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    recorder = SpanRecorder(provider)
    with bind_session(session_id="s-1", user_id="alice"):
        provider.get_tracer("app").start_span("unstamped").end()

    with pytest.raises(AssertionError, match="span 'unstamped' .*: no session"):
        recorder.assert_every_span_has_a_session()


def test_importing_sessiontrace_imports_neither_pytest_nor_opentelemetry_instrumentation() -> None:
    code = (
        "import sys, sessiontrace; "
        "print(sorted(m for m in ('pytest', '_pytest', 'sessiontrace._pytest_plugin', "
        "'sessiontrace._distro', 'opentelemetry.instrumentation') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert found == "[]"
