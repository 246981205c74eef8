"""Service settings, read from the environment (and `.env`) by pydantic-settings."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sessiontrace import DEFAULT_SPOOL_MAX_BYTES, resolve_environment

__all__ = [
    "DEFAULT_DATABASE_POOL_SIZE",
    "DEVELOPMENT",
    "OUTCOME_MARGIN_SECONDS",
    "ModelPrice",
    "Settings",
    "get_settings",
    "is_postgres_url",
    "parse_llm_prices",
    "redacted_url",
    "sqlite_path",
]

DEVELOPMENT = "development"
DEFAULT_DATABASE_POOL_SIZE = 10
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
# What IDEMPOTENCY_PENDING_TIMEOUT_SECONDS must allow past RUN_TIMEOUT_SECONDS:
# claiming the key, then storing the outcome, which retries while the database
# is locked (service.store.idempotency.FINISH_RETRY_SECONDS, 10 s).
OUTCOME_MARGIN_SECONDS = 30.0


class ModelPrice(BaseModel):
    """What a model costs per 1,000 tokens, in one currency of the operator's choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1k: float = Field(ge=0, allow_inf_nan=False)
    output_per_1k: float = Field(ge=0, allow_inf_nan=False)

    def cost(self, *, input_tokens: int, output_tokens: int) -> float:
        """The total cost of one call."""
        return (input_tokens * self.input_per_1k + output_tokens * self.output_per_1k) / 1000


_PRICE_TABLE = TypeAdapter(dict[str, ModelPrice])


class Settings(BaseSettings):
    """Everything the service reads from its environment; secrets stay SecretStr."""

    # hide_input_in_errors: a DATABASE_URL holds a password, and an error must not print it.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    scheduler_api_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the internal governance route; empty only in development.",
    )
    database_url: str = Field(
        default="sqlite:///./var/sessiontrace.db",
        description=(
            "SQLite file as sqlite:///relative/path or sqlite:////absolute/path, or a Postgres "
            "server as postgresql://user:password@host:5432/dbname (postgres:// too)."
        ),
    )
    database_pool_size: int = Field(
        default=DEFAULT_DATABASE_POOL_SIZE,
        ge=1,
        description=(
            "Connections to a Postgres DATABASE_URL one process keeps at most (a pool; each "
            "store call borrows one). SQLite keeps one connection per thread instead."
        ),
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
    run_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Wall-clock deadline of one run, all its LLM calls and tools included; past it "
            "the run fails."
        ),
    )
    deploy_environment: str = Field(
        default=DEVELOPMENT,
        description=(
            "deployment.environment.name of the spans and a tag of every trace: a valid "
            "Langfuse environment, and the same as any in OTEL_RESOURCE_ATTRIBUTES."
        ),
    )
    service_name: str = Field(default="sessiontrace", min_length=1)
    max_inflight_runs: int = Field(
        default=64,
        ge=1,
        description=(
            "Run requests (chat and internal runs) handled at once; past it they answer 503 "
            "`overloaded` with Retry-After, before their body is read. Probes are never limited."
        ),
    )
    llm_prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(
        default_factory=dict,
        description=(
            'Per-model prices as JSON, e.g. {"gpt-4o-mini": {"input_per_1k": 0.00015, '
            '"output_per_1k": 0.0006}}; LLM spans of a listed model get gen_ai.usage.cost.'
        ),
    )
    schedules_file: Path | None = Field(
        default=None, description="YAML file of schedules; unset: no schedules."
    )
    scheduler_enabled: bool = Field(
        default=False, description="Run the embedded scheduler in the service process."
    )
    service_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where the scheduler and `schedules run` reach the service.",
    )
    temporal_address: str | None = Field(
        default=None,
        description=(
            "host:port of the Temporal frontend (e.g. 127.0.0.1:7233); set, schedules live in "
            "Temporal (`schedules sync`, `worker`); unset: Temporal is off."
        ),
    )
    temporal_namespace: str = Field(
        default="default", min_length=1, description="Temporal namespace of the schedules."
    )
    temporal_task_queue: str = Field(
        default="sessiontrace-governance",
        min_length=1,
        description="Task queue the schedules start their firings on and the worker polls.",
    )
    idempotency_pending_timeout_seconds: float = Field(
        default=900.0,
        ge=0,
        description=(
            "After this long a pending idempotency key (its process died mid-run) may run "
            "again; 0 keeps it pending for ever."
        ),
    )
    idempotency_retention_hours: float = Field(
        default=168.0,
        ge=0,
        description=(
            "Finished idempotency keys older than this are pruned (hourly by the service, or "
            "`python -m service idempotency prune`); 0 keeps them for ever. Pending keys are "
            "never pruned."
        ),
    )
    sessiontrace_spool_dir: Path | None = Field(
        default=None,
        description=(
            "Where span batches wait while the collector is down or restarting (one process "
            "per directory); unset: spool/ next to the DATABASE_URL file, or ./var/spool with "
            "a Postgres DATABASE_URL."
        ),
    )
    sessiontrace_spool_max_bytes: int = Field(
        default=DEFAULT_SPOOL_MAX_BYTES,
        ge=0,
        description=(
            "Disk budget of the span spool, in encoded OTLP bytes; past it the oldest batches "
            "are dropped and counted. 0: no spool."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if is_postgres_url(value):
            _check_postgres_url(value)
        else:
            sqlite_path(value)
        return value

    @field_validator("deploy_environment")
    @classmethod
    def _check_deploy_environment(cls, value: str) -> str:
        # The library's rule, named after this setting; configure_tracing applies it again.
        resolve_environment(value, setting="DEPLOY_ENVIRONMENT")
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

    @field_validator("service_url")
    @classmethod
    def _check_service_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"SERVICE_URL must be an http(s) URL, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("temporal_address", mode="before")
    @classmethod
    def _check_temporal_address(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            return value
        address = value.strip()
        host, _, port = address.rpartition(":")
        if "://" in address or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"TEMPORAL_ADDRESS must be host:port of the Temporal frontend (e.g. "
                f"127.0.0.1:7233), got {value!r}"
            )
        return address

    @field_validator("temporal_namespace", "temporal_task_queue")
    @classmethod
    def _check_temporal_name(cls, value: str, info: ValidationInfo) -> str:
        if value != value.strip() or not value.isprintable():
            raise ValueError(
                f"{(info.field_name or '').upper()} must be printable with no surrounding "
                f"spaces, got {value!r}"
            )
        return value

    @field_validator("sessiontrace_spool_dir", mode="before")
    @classmethod
    def _empty_spool_dir_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("schedules_file", mode="before")
    @classmethod
    def _empty_schedules_file_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _parse_llm_prices(cls, value: object) -> dict[str, ModelPrice]:
        return parse_llm_prices(value)

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
        if self.scheduler_enabled and not self.scheduler_api_token.get_secret_value().strip():
            raise ValueError(
                "SCHEDULER_API_TOKEN must be set when SCHEDULER_ENABLED is true "
                "(the scheduler authenticates to the internal route with it)"
            )
        if self.scheduler_enabled and self.temporal_address is not None:
            raise ValueError(
                "SCHEDULER_ENABLED=true and TEMPORAL_ADDRESS are both set: schedules fire either "
                "from the embedded scheduler (one machine) or from Temporal (`python -m service "
                "worker`), never both, or each firing would run twice; unset one of them"
            )
        pending, run = self.idempotency_pending_timeout_seconds, self.run_timeout_seconds
        if 0 < pending <= run + OUTCOME_MARGIN_SECONDS:
            raise ValueError(
                f"IDEMPOTENCY_PENDING_TIMEOUT_SECONDS={pending:g} must exceed "
                f"RUN_TIMEOUT_SECONDS={run:g} plus {OUTCOME_MARGIN_SECONDS:g} s for storing the "
                f"outcome, i.e. be over {run + OUTCOME_MARGIN_SECONDS:g} (or be 0): a run still "
                "going, or whose outcome is being stored, would otherwise be started a second time"
            )
        if self.llm_base_url is not None and not (self.llm_model or "").strip():
            raise ValueError(
                f"LLM_MODEL must be set when LLM_BASE_URL is set (LLM_BASE_URL={self.llm_base_url!r})"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; `create_app(settings)` puts others on app.state."""
    return Settings()


def parse_llm_prices(value: object) -> dict[str, ModelPrice]:
    """The LLM_PRICES table from JSON text or a mapping; ValueError naming LLM_PRICES."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"LLM_PRICES must be a JSON object, got {value!r} ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(
            'LLM_PRICES must map model names to {"input_per_1k": ..., "output_per_1k": ...}, '
            f"got {value!r}"
        )
    if any(not isinstance(model, str) or not model.strip() for model in value):
        raise ValueError(f"LLM_PRICES model names must be non-empty, got {list(value)!r}")
    try:
        return _PRICE_TABLE.validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        raise ValueError(f"LLM_PRICES is invalid: {problems}") from None


def sqlite_path(database_url: str) -> Path:
    """The file path of a `sqlite:///...` URL; ValueError naming DATABASE_URL otherwise."""
    if not database_url.startswith(_SQLITE_PREFIX) or len(database_url) == len(_SQLITE_PREFIX):
        raise ValueError(
            "DATABASE_URL must look like sqlite:///./var/sessiontrace.db "
            "(sqlite:////abs/path for an absolute path) or "
            "postgresql://user:password@host:5432/dbname, "
            f"got {redacted_url(database_url)!r}"
        )
    return Path(database_url[len(_SQLITE_PREFIX):])


def is_postgres_url(database_url: str) -> bool:
    """Whether DATABASE_URL names a Postgres server (postgresql:// or postgres://)."""
    return database_url.startswith(_POSTGRES_PREFIXES)


def redacted_url(database_url: str) -> str:
    """`database_url` with its password replaced by ***, for messages and logs."""
    return _URL_PASSWORD.sub(r"\1***@", database_url)


def _check_postgres_url(database_url: str) -> None:
    # psycopg's (libpq's) own parser: what it accepts is what connecting will use.
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(database_url)
    except ProgrammingError as exc:
        message = str(exc).strip().replace(database_url, redacted_url(database_url))
        raise ValueError(
            f"DATABASE_URL {redacted_url(database_url)!r} is not a valid Postgres URL "
            f"({message}); expected postgresql://user:password@host:5432/dbname"
        ) from None
    port = str(params.get("port", "5432"))
    if not all(part.isdigit() for part in port.split(",")):
        raise ValueError(
            f"DATABASE_URL {redacted_url(database_url)!r} has port {port!r}, not a number"
        )
