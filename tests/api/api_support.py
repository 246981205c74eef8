"""Helpers shared by the API tests: request headers and bodies, span lookups."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

from devstack import processes
from service.callers import user_session_id
from service.llm import ChatMessage, Completion, OfflineProvider

SCHEDULER_TOKEN = "test-scheduler-token-0123456789"
# Parametrize a test with `pytest.mark.parametrize("backend", BACKENDS)` to run it on both stores.
BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class Seed:
    """Accounts, users and grants present in the test database."""

    alice_key: str  # user alice of billing account acme
    bob_key: str  # user bob of billing account globex
    acme_grant: str  # acme/alice: builtin:chat and builtin:governance-review
    globex_grant: str  # globex/bob: builtin:governance-review
    chat_only_grant: str  # acme/alice: builtin:chat only
    expired_grant: str
    revoked_grant: str


def alice_session(state_key: str) -> str:
    """The session of alice's (acme) chats with `state_key`."""
    return user_session_id(billing_account_id="acme", user_id="alice", state_key=state_key)


def scheduler_headers(idempotency_key: str, **extra: str) -> dict[str, str]:
    """Headers of a well-formed governance request."""
    return {
        "Authorization": f"Bearer {SCHEDULER_TOKEN}",
        "Idempotency-Key": idempotency_key,
        **extra,
    }


def user_headers(api_key: str, **extra: str) -> dict[str, str]:
    """Headers of a well-formed chat request."""
    return {"Authorization": f"Bearer {api_key}", **extra}


def spans_of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    """Every finished span of one trace."""
    return [
        span
        for span in exporter.get_finished_spans()
        if span.context is not None and format_trace_id(span.context.trace_id) == trace_id
    ]


def chat_body(text: str = "hello there", **extra: object) -> dict[str, object]:
    """A chat request body."""
    return {"graphId": "builtin:chat", "messages": [{"role": "user", "content": text}], **extra}


def run_body(grant_id: str, **extra: object) -> dict[str, object]:
    """A governance run request body."""
    return {
        "executionGrantId": grant_id,
        "input": {"messages": [{"role": "user", "content": "review last week's activity"}]},
        **extra,
    }


class GatedProvider(OfflineProvider):
    """The offline provider, holding every call until `release` is set, so a run stays pending."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.release = asyncio.Event()

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        self.calls += 1
        await self.release.wait()
        return await super().complete(messages, model=model)


def run_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The `invoke_agent` span of every run so far."""
    return [span for span in exporter.get_finished_spans() if span.name.startswith("invoke_agent")]


def free_port() -> int:
    """A TCP port nothing listens on right now (outside the ephemeral range: devstack's)."""
    return processes.free_port()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


async def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    """Yield to the event loop until `predicate` holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app's ASGI interface, inside the app's lifespan (one event loop)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object a successful CLI command printed on stdout."""
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The error message a failed CLI command printed on stderr (and nothing on stdout)."""
    assert result.returncode != 0
    assert result.stdout == ""
    message: str = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    return message
