"""Settings: bad configuration stops start-up with a message naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import Settings, sqlite_path


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


def test_defaults_run_offline_in_development_with_a_database_under_var() -> None:
    defaults = settings()

    assert defaults.deploy_environment == "development"
    assert defaults.llm_base_url is None
    assert sqlite_path(defaults.database_url) == Path("./var/sessiontrace.db")


def test_an_empty_scheduler_token_outside_development_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="SCHEDULER_API_TOKEN"):
        settings(deploy_environment="production")
    with pytest.raises(ValueError, match="SCHEDULER_API_TOKEN"):
        settings(deploy_environment="production", scheduler_api_token=SecretStr("   "))


def test_settings_are_read_from_the_environment_and_secrets_are_not_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULER_API_TOKEN", "very-secret-token")
    monkeypatch.setenv("DEPLOY_ENVIRONMENT", "production")
    monkeypatch.setenv("LLM_BASE_URL", "http://localhost:11434/v1/")
    monkeypatch.setenv("LLM_MODEL", "llama3")

    loaded = settings()

    assert loaded.scheduler_api_token.get_secret_value() == "very-secret-token"
    assert loaded.llm_base_url == "http://localhost:11434/v1"
    assert "very-secret-token" not in repr(loaded)


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"database_url": "postgres://db/x"}, "DATABASE_URL"),
        ({"database_url": "sqlite:///"}, "DATABASE_URL"),
        ({"llm_base_url": "ftp://llm"}, "LLM_BASE_URL"),
        ({"llm_base_url": "http://llm.test/v1"}, "LLM_MODEL"),
    ],
)
def test_malformed_settings_are_refused_naming_the_setting(
    values: dict[str, object], setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        settings(**values)
