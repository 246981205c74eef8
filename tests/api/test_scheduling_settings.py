"""Settings of the scheduler and of idempotent runs: defaults, and bad values stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import OUTCOME_MARGIN_SECONDS, Settings
from service.store.database import BUSY_TIMEOUT_SECONDS
from service.store.idempotency import FINISH_RETRY_SECONDS


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


def test_by_default_there_are_no_schedules_and_no_scheduler() -> None:
    defaults = settings()

    assert defaults.schedules_file is None
    assert defaults.scheduler_enabled is False
    assert defaults.service_url == "http://127.0.0.1:8000"
    assert defaults.idempotency_pending_timeout_seconds == 900
    assert defaults.run_timeout_seconds == 300


def test_scheduling_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULES_FILE", "/etc/sessiontrace/schedules.yaml")
    monkeypatch.setenv("SCHEDULER_ENABLED", "true")
    monkeypatch.setenv("SCHEDULER_API_TOKEN", "token")
    monkeypatch.setenv("SERVICE_URL", "http://service:8000/")
    monkeypatch.setenv("IDEMPOTENCY_PENDING_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("RUN_TIMEOUT_SECONDS", "45")

    loaded = settings()

    assert loaded.schedules_file == Path("/etc/sessiontrace/schedules.yaml")
    assert loaded.scheduler_enabled is True
    assert loaded.service_url == "http://service:8000"
    assert loaded.idempotency_pending_timeout_seconds == 0
    assert loaded.run_timeout_seconds == 45


def test_an_empty_schedules_file_setting_means_no_schedules() -> None:
    assert settings(schedules_file="").schedules_file is None


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"scheduler_enabled": True}, "SCHEDULER_API_TOKEN"),
        ({"service_url": "127.0.0.1:8000"}, "SERVICE_URL"),
        ({"idempotency_pending_timeout_seconds": -1}, "idempotency_pending_timeout_seconds"),
        ({"idempotency_pending_timeout_seconds": 30}, "IDEMPOTENCY_PENDING_TIMEOUT_SECONDS"),
        ({"run_timeout_seconds": 0}, "run_timeout_seconds"),
    ],
    ids=["scheduler-without-token", "service-url", "negative-timeout", "timeout-below-run",
         "zero-run-timeout"],
)
def test_bad_scheduling_settings_are_refused_naming_the_setting(
    values: dict[str, object], setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        settings(**values)


def test_an_enabled_scheduler_with_its_token_is_accepted() -> None:
    assert settings(scheduler_enabled=True, scheduler_api_token=SecretStr("t")).scheduler_enabled


@pytest.mark.parametrize(
    ("run", "pending"),
    [(300, 300), (300, 330), (60, 80), (5, 6)],
    ids=["equal", "no-margin-left", "within-the-margin", "measured-llm-5-pending-6"],
)
def test_a_pending_timeout_not_past_the_run_deadline_and_its_margin_is_refused_naming_both(
    run: float, pending: float
) -> None:
    with pytest.raises(ValueError) as refused:
        settings(run_timeout_seconds=run, idempotency_pending_timeout_seconds=pending)

    message = str(refused.value)
    assert f"IDEMPOTENCY_PENDING_TIMEOUT_SECONDS={pending:g}" in message
    assert f"RUN_TIMEOUT_SECONDS={run:g}" in message
    assert f"over {run + OUTCOME_MARGIN_SECONDS:g}" in message


def test_the_pending_timeout_is_checked_against_the_run_deadline_not_one_llm_read() -> None:
    # One LLM read may wait longer than the pending timeout: the run deadline still ends the run.
    accepted = settings(llm_timeout_seconds=120, run_timeout_seconds=60,
                        idempotency_pending_timeout_seconds=60 + OUTCOME_MARGIN_SECONDS + 1)
    with pytest.raises(ValueError, match="RUN_TIMEOUT_SECONDS"):
        # Past the LLM timeout, yet not past the (default 300 s) run deadline.
        settings(llm_timeout_seconds=5, idempotency_pending_timeout_seconds=6)

    assert accepted.run_timeout_seconds == 60
    assert settings(run_timeout_seconds=10_000, idempotency_pending_timeout_seconds=0)


def test_storing_an_outcome_gives_up_within_the_margin_the_settings_allow() -> None:
    assert FINISH_RETRY_SECONDS + BUSY_TIMEOUT_SECONDS < OUTCOME_MARGIN_SECONDS
