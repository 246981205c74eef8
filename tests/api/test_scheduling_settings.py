"""Settings of the scheduler and of idempotent runs: defaults, and bad values stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


def test_by_default_there_are_no_schedules_and_no_scheduler() -> None:
    defaults = settings()

    assert defaults.schedules_file is None
    assert defaults.scheduler_enabled is False
    assert defaults.service_url == "http://127.0.0.1:8000"
    assert defaults.idempotency_pending_timeout_seconds == 900


def test_scheduling_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULES_FILE", "/etc/sessiontrace/schedules.yaml")
    monkeypatch.setenv("SCHEDULER_ENABLED", "true")
    monkeypatch.setenv("SCHEDULER_API_TOKEN", "token")
    monkeypatch.setenv("SERVICE_URL", "http://service:8000/")
    monkeypatch.setenv("IDEMPOTENCY_PENDING_TIMEOUT_SECONDS", "0")

    loaded = settings()

    assert loaded.schedules_file == Path("/etc/sessiontrace/schedules.yaml")
    assert loaded.scheduler_enabled is True
    assert loaded.service_url == "http://service:8000"
    assert loaded.idempotency_pending_timeout_seconds == 0


def test_an_empty_schedules_file_setting_means_no_schedules() -> None:
    assert settings(schedules_file="").schedules_file is None


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"scheduler_enabled": True}, "SCHEDULER_API_TOKEN"),
        ({"service_url": "127.0.0.1:8000"}, "SERVICE_URL"),
        ({"idempotency_pending_timeout_seconds": -1}, "idempotency_pending_timeout_seconds"),
        ({"idempotency_pending_timeout_seconds": 30}, "IDEMPOTENCY_PENDING_TIMEOUT_SECONDS"),
    ],
    ids=["scheduler-without-token", "service-url", "negative-timeout", "timeout-below-llm"],
)
def test_bad_scheduling_settings_are_refused_naming_the_setting(
    values: dict[str, object], setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        settings(**values)


def test_an_enabled_scheduler_with_its_token_is_accepted() -> None:
    assert settings(scheduler_enabled=True, scheduler_api_token=SecretStr("t")).scheduler_enabled
