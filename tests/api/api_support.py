"""Helpers shared by the API tests: request headers and bodies, span lookups."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

SCHEDULER_TOKEN = "test-scheduler-token-0123456789"


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
