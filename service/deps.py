"""FastAPI dependencies and their `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from pydantic import BaseModel, ValidationError

from service.auth import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    bearer_token,
    is_valid_idempotency_key,
    token_matches,
)
from service.config import Settings, get_settings
from service.errors import ApiError
from service.graphs import GraphExecutor, GraphRegistry
from service.idempotency import IdempotencyPolicy
from service.services import Services
from service.store import Database, User, authenticate_user
from service.store.database import in_thread

__all__ = [
    "CurrentUserDep",
    "DatabaseDep",
    "ExecutorDep",
    "IdempotencyKeyDep",
    "IdempotencyPolicyDep",
    "RegistryDep",
    "RequestIdDep",
    "SchedulerAuthDep",
    "SettingsDep",
    "get_app_settings",
    "json_body",
    "openapi_body",
]

_M = TypeVar("_M", bound=BaseModel)
MAX_BODY_BYTES = 1_000_000
_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

# Every dependency is `async def`, even one that never awaits: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop and an event-loop wake-up per dependency per
# request (about 8 a chat request, most of its voluntary context switches) for what is an
# attribute read. tests/api/test_dependencies.py keeps it so.


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (`create_app`), else the process's."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


# Read from app.state rather than through app.dependency_overrides: any
# override makes FastAPI re-analyse every dependency's signature on every
# request (bench/results/service_profile.md: 18% of the service's CPU).
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_services(request: Request) -> Services:
    """The services the lifespan opened."""
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app's lifespan has not run: use it as a context manager")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_database(services: ServicesDep) -> Database:
    """The store."""
    return services.database


async def get_registry(services: ServicesDep) -> GraphRegistry:
    """The graphs."""
    return services.registry


async def get_executor(services: ServicesDep) -> GraphExecutor:
    """The graph executor."""
    return services.executor


async def get_idempotency_policy(services: ServicesDep) -> IdempotencyPolicy:
    """The idempotency rules the settings give (pending timeout, retention)."""
    return services.idempotency


async def get_request_id(request: Request) -> str:
    """The id RequestIdMiddleware gave this request."""
    return str(request.state.request_id)


DatabaseDep = Annotated[Database, Depends(get_database)]
RegistryDep = Annotated[GraphRegistry, Depends(get_registry)]
ExecutorDep = Annotated[GraphExecutor, Depends(get_executor)]
IdempotencyPolicyDep = Annotated[IdempotencyPolicy, Depends(get_idempotency_policy)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


async def current_user(
    database: DatabaseDep, authorization: Annotated[str | None, Header()] = None
) -> User:
    """The user whose API key is the bearer token; 401 otherwise."""
    token = bearer_token(authorization)
    user = None if token is None else await in_thread(authenticate_user, database, token)
    if user is None:
        raise ApiError(401, "unauthorized", "a valid user API key is required as a Bearer token",
                       headers=_BEARER_CHALLENGE)
    return user


async def require_scheduler(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Accept only the scheduler's token (compared in constant time); 401 otherwise."""
    token = bearer_token(authorization)
    expected = settings.scheduler_api_token.get_secret_value()
    if token is None or not token_matches(token, expected):
        raise ApiError(401, "unauthorized", "the scheduler token is required as a Bearer token",
                       headers=_BEARER_CHALLENGE)


async def idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> str:
    """The required Idempotency-Key header; 400 when missing or malformed."""
    if key is None or not key:
        raise ApiError(400, "missing_idempotency_key", "the Idempotency-Key header is required")
    if not is_valid_idempotency_key(key):
        raise ApiError(
            400, "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
        )
    return key


CurrentUserDep = Annotated[User, Depends(current_user)]
SchedulerAuthDep = Annotated[None, Depends(require_scheduler)]
IdempotencyKeyDep = Annotated[str, Depends(idempotency_key)]


def json_body(model: type[_M]) -> Callable[[Request], Awaitable[_M]]:
    """A dependency parsing the JSON body into `model`.

    Declared after the auth dependencies, it runs after them: a client
    without credentials gets 401 whatever it sends, never a parse error.
    """

    async def parse(request: Request) -> _M:
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > MAX_BODY_BYTES:
                raise ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        try:
            return model.model_validate_json(bytes(raw))
        except ValidationError as exc:
            raise _invalid_body(exc) from None

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body that `json_body` parses (FastAPI cannot see it)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}


def _invalid_body(exc: ValidationError) -> ApiError:
    problems = [
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_input=False)
    ]
    return ApiError(400, "invalid_request", "invalid body: " + "; ".join(problems[:5]))
