"""Load limits: runs in flight past MAX_INFLIGHT_RUNS answer 503, oversized bodies 413 unread."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from api_support import (
    GatedProvider,
    Seed,
    app_client,
    chat_body,
    run_body,
    scheduler_headers,
    user_headers,
    wait_for,
)
from service.config import Settings
from service.deps import MAX_BODY_BYTES
from service.limits import InFlightLimitMiddleware
from service.main import create_app

CHAT = "/api/v1/ai/chat"


def test_past_the_limit_runs_answer_503_with_retry_after_and_probes_still_answer(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed
) -> None:
    provider = GatedProvider()
    limited = settings.model_copy(update={"max_inflight_runs": 1})
    app = create_app(limited, tracer_provider=tracer_provider, llm_provider=provider)

    async def scenario() -> None:
        async with app_client(app) as client:
            first = asyncio.create_task(
                client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key))
            )
            await wait_for(lambda: provider.calls == 1, timeout=10)

            # A bounded wait: without the limit these would wait for the gated run.
            chat = await asyncio.wait_for(
                client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key)), 10
            )
            run = await asyncio.wait_for(client.post(
                "/api/internal/graphs/builtin:chat/runs", json=run_body(seed.acme_grant),
                headers=scheduler_headers("overloaded-1"),
            ), 10)
            health = await client.get("/healthz")
            ready = await client.get("/readyz")

            for refused in (chat, run):
                assert refused.status_code == 503
                assert refused.json()["error"] == "overloaded"
                assert refused.headers["Retry-After"] == "1"
                assert refused.headers["X-Request-ID"]
            assert health.status_code == 200 and ready.status_code == 200
            assert provider.calls == 1  # neither refused request started a run

            provider.release.set()
            assert (await first).status_code == 200
            again = await client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key))
            assert again.status_code == 200  # the place is free again

    asyncio.run(scenario())


def test_the_limit_is_refused_below_one(settings: Settings) -> None:
    with pytest.raises(ValueError, match="max_inflight_runs"):
        Settings(**{**settings.model_dump(), "max_inflight_runs": 0})


async def _never_called_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the request reached the app")


def test_a_body_declaring_more_than_the_cap_is_refused_before_a_byte_is_read() -> None:
    middleware = InFlightLimitMiddleware(_never_called_app, limit=4)
    received: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("read")
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "method": "POST", "path": CHAT, "query_string": b"",
        "headers": [(b"content-length", str(MAX_BODY_BYTES + 1).encode())],
    }
    asyncio.run(middleware(scope, receive, send))

    assert sent[0]["status"] == 413 and b"body_too_large" in sent[1]["body"]
    assert received == []
    assert middleware.in_flight == 0


def test_a_body_of_unknown_size_is_cut_off_while_it_is_read(
    settings: Settings, tracer_provider: TracerProvider, seed: Seed
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider)
    chunk = b" " * 65536
    pulled = 0

    async def body() -> Any:  # no Content-Length: sent chunked, 6.5 MB if read to the end
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield chunk

    async def scenario() -> int:
        async with app_client(app) as client:
            response = await client.post(CHAT, content=body(), headers=user_headers(
                seed.alice_key, **{"Content-Type": "application/json"}
            ))
            return response.status_code

    assert asyncio.run(scenario()) == 413
    assert pulled <= MAX_BODY_BYTES // len(chunk) + 2
