"""The service's caller, built on the library's session binding."""

from __future__ import annotations

import pytest

from service.caller import CallerContext, MissingCallerError, bind_caller, require_caller
from sessiontrace import current_session, derive_schedule_session_id

META = "langfuse.trace.metadata."


def governance(**overrides: object) -> CallerContext:
    fields: dict[str, object] = {
        "billing_account_id": "acme", "user_id": "alice",
        "session_id": derive_schedule_session_id("acme", "governance:community"),
        "request_id": "req-1", "run_id": "run-1", "trigger": "schedule",
        "graph_id": "builtin:governance-review", "schedule_id": "governance:community",
        "tags": ("schedule",), "metadata": {"grant_id": "g-1"},
    }
    return CallerContext(**{**fields, **overrides})  # type: ignore[arg-type]


def test_the_callers_session_is_named_after_its_graph_with_the_run_as_metadata() -> None:
    session = governance().session

    assert session.trace_name == "builtin:governance-review"
    assert {key.removeprefix(META): value for key, value in session.root_attributes.items()
            if key.startswith(META)} == {
        "run_id": "run-1", "request_id": "req-1", "graph_id": "builtin:governance-review",
        "billing_account_id": "acme", "trigger": "schedule",
        "schedule_id": "governance:community", "grant_id": "g-1",
    }


def test_a_caller_needs_a_known_trigger_and_its_ids() -> None:
    with pytest.raises(ValueError, match="trigger"):
        governance(trigger="cron")
    with pytest.raises(ValueError, match="run_id"):
        governance(run_id="")


def test_bind_caller_binds_the_callers_session_and_require_caller_finds_it() -> None:
    with pytest.raises(MissingCallerError):
        require_caller()
    caller = governance()
    with bind_caller(caller):
        assert require_caller() is caller
        assert current_session() is caller.session
    assert current_session() is None
