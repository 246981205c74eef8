"""Service settings, read from the environment (and `.env`) by pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEVELOPMENT", "Settings", "get_settings", "sqlite_path"]

DEVELOPMENT = "development"
_SQLITE_PREFIX = "sqlite:///"


class Settings(BaseSettings):
    """Everything the service reads from its environment; secrets stay SecretStr."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    scheduler_api_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the internal governance route; empty only in development.",
    )
    database_url: str = Field(
        default="sqlite:///./var/sessiontrace.db",
        description="SQLite file as sqlite:///relative/path or sqlite:////absolute/path.",
    )
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (e.g. https://api.openai.com/v1); unset: offline.",
    )
    llm_api_key: SecretStr | None = Field(default=None, description="Bearer key for LLM_BASE_URL.")
    llm_model: str | None = Field(
        default=None, description="Default model; required with LLM_BASE_URL."
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0, description="LLM request timeout.")
    deploy_environment: str = Field(
        default=DEVELOPMENT, description="deployment.environment.name of the spans."
    )
    service_name: str = Field(default="sessiontrace", min_length=1)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        sqlite_path(value)
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _check_llm_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"LLM_BASE_URL must be an http(s) URL, got {value!r}")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if (
            self.deploy_environment != DEVELOPMENT
            and not self.scheduler_api_token.get_secret_value().strip()
        ):
            raise ValueError(
                "SCHEDULER_API_TOKEN must be set when DEPLOY_ENVIRONMENT is "
                f"{self.deploy_environment!r} (only 'development' may run without it)"
            )
        if self.llm_base_url is not None and not (self.llm_model or "").strip():
            raise ValueError(
                f"LLM_MODEL must be set when LLM_BASE_URL is set (LLM_BASE_URL={self.llm_base_url!r})"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; tests override with app.dependency_overrides."""
    return Settings()


def sqlite_path(database_url: str) -> Path:
    """The file path of a `sqlite:///...` URL; ValueError naming DATABASE_URL otherwise."""
    if not database_url.startswith(_SQLITE_PREFIX) or len(database_url) == len(_SQLITE_PREFIX):
        raise ValueError(
            "DATABASE_URL must look like sqlite:///./var/sessiontrace.db "
            f"(sqlite:////abs/path for an absolute path), got {database_url!r}"
        )
    return Path(database_url[len(_SQLITE_PREFIX):])
