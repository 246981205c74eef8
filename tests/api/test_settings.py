"""Settings: bad configuration stops start-up with a message naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.config import Settings, sqlite_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_otel_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


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
        ({"database_url": "mysql://db/x"}, "DATABASE_URL"),
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


@pytest.mark.parametrize("environment", ["production", "staging_eu", "dev-1", "a" * 40])
def test_a_valid_langfuse_environment_is_accepted(environment: str) -> None:
    loaded = settings(deploy_environment=environment, scheduler_api_token=SecretStr("t"))

    assert loaded.deploy_environment == environment


@pytest.mark.parametrize("environment", ["Prod Env!", "langfuse-prod", "a" * 41, ""])
def test_an_invalid_langfuse_environment_is_refused_naming_deploy_environment(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENVIRONMENT", environment)

    with pytest.raises(ValueError, match=rf"DEPLOY_ENVIRONMENT={environment!r} is not a valid"):
        settings(scheduler_api_token=SecretStr("t"))


@pytest.mark.parametrize("key", ["deployment.environment.name", "deployment.environment"])
def test_otel_resource_attributes_naming_another_environment_are_refused_naming_both(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"{key}=production")

    with pytest.raises(ValueError) as refused:
        settings(deploy_environment="development")

    message = str(refused.value)
    assert "DEPLOY_ENVIRONMENT='development'" in message
    assert f"OTEL_RESOURCE_ATTRIBUTES {key}='production'" in message


@pytest.mark.parametrize(
    "resource", ["deployment.environment.name=staging,team=ai", "team=ai", ""]
)
def test_otel_resource_attributes_agreeing_or_silent_on_the_environment_are_accepted(
    resource: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", resource)

    loaded = settings(deploy_environment="staging", scheduler_api_token=SecretStr("t"))

    assert loaded.deploy_environment == "staging"


@pytest.mark.parametrize(
    ("environment", "setting"),
    [
        ({"DEPLOY_ENVIRONMENT": "Prod Env!"}, "DEPLOY_ENVIRONMENT='Prod Env!'"),
        (
            {
                "DEPLOY_ENVIRONMENT": "development",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=production",
            },
            "OTEL_RESOURCE_ATTRIBUTES deployment.environment.name='production'",
        ),
    ],
)
def test_serve_refuses_to_start_with_a_bad_environment_naming_the_setting(
    environment: dict[str, str], setting: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OTEL_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.db'}",
        SCHEDULER_API_TOKEN="test-token",
        OTEL_SDK_DISABLED="true",
        PYTHONPATH=str(REPO),
        **environment,
    )

    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=30, check=False,
    )

    assert result.returncode != 0
    error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    assert "DEPLOY_ENVIRONMENT" in error and setting in error
