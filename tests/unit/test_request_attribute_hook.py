"""The server request hook: the query's secrets scrubbed, request details bounded."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.request_attributes import (
    DEFAULT_REQUEST_ATTRIBUTE_LIMIT,
    make_server_request_hook,
    request_attribute_limit,
    scrub_query,
)
from sessiontrace import CONTENT_ATTRIBUTE_CAP, configure_tracing

LIMIT_VARIABLES = ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")


@pytest.fixture(autouse=True)
def _no_limit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def hooked_span(attributes: dict[str, object], *, limit: int = 16) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("POST /x", attributes=attributes)  # type: ignore[arg-type]
    make_server_request_hook(limit=limit)(span, {"type": "http"})
    span.end()
    (finished,) = exporter.get_finished_spans()
    return finished


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("token=abc&email=a@b.c", "token=[REDACTED]&email=[EMAIL]"),
        ("Password=x&key=k&code=c&API_KEY=z", "Password=[REDACTED]&key=[REDACTED]&code=[REDACTED]&API_KEY=[REDACTED]"),
        ("access_token=t&client_secret=s", "access_token=[REDACTED]&client_secret=[REDACTED]"),
        ("email=a%40b.c&q=sk-abcdefghijklmnopqrstu", "email=[EMAIL]&q=[REDACTED]"),
        ("page=2&max_tokens=5&flag", "page=2&max_tokens=5&flag"),
    ],
)
def test_secret_parameters_are_redacted_and_secrets_in_values_masked(
    query: str, expected: str
) -> None:
    assert scrub_query(query) == expected


def test_the_hook_scrubs_every_key_holding_the_query_and_keeps_the_path() -> None:
    span = hooked_span(
        {
            "url.query": "token=abc&page=2",
            "http.target": "/api/v1/ai/chat?token=abc&page=2",
            "http.url": "http://testserver/api/v1/ai/chat?email=a@b.c",
            "url.path": "/api/v1/ai/chat",
        },
        limit=1000,
    )

    assert dict(span.attributes or {}) == {
        "url.query": "token=[REDACTED]&page=2",
        "http.target": "/api/v1/ai/chat?token=[REDACTED]&page=2",
        "http.url": "http://testserver/api/v1/ai/chat?email=[EMAIL]",
        "url.path": "/api/v1/ai/chat",
    }


def test_the_hook_cuts_long_strings_and_header_lists_and_leaves_the_rest() -> None:
    span = hooked_span(
        {
            "user_agent.original": "A" * 100,
            "http.request.header.x_forwarded_for": ("B" * 100, "short"),
            "http.status_code": 200,
        },
        limit=16,
    )

    assert dict(span.attributes or {}) == {
        "user_agent.original": "A" * 16,
        "http.request.header.x_forwarded_for": ("B" * 16, "short"),
        "http.status_code": 200,
    }


def test_the_limit_is_the_standard_variables_else_4096(monkeypatch: pytest.MonkeyPatch) -> None:
    assert request_attribute_limit() == DEFAULT_REQUEST_ATTRIBUTE_LIMIT == 4096
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "300")
    assert request_attribute_limit() == 300
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "200")
    assert request_attribute_limit() == 200


def test_configure_tracing_sets_no_span_wide_limit_so_payloads_are_never_cut() -> None:
    provider = configure_tracing(service_name="t", exporter=InMemorySpanExporter(), batch=False)
    span = provider.get_tracer("t").start_span("s", attributes={"payload": "p" * CONTENT_ATTRIBUTE_CAP})
    span.end()
    assert isinstance(span, ReadableSpan)
    assert len(str((span.attributes or {})["payload"])) == CONTENT_ATTRIBUTE_CAP


def test_a_standard_limit_under_the_payload_caps_is_honoured_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4096")
    with caplog.at_level(logging.WARNING, logger="sessiontrace._setup"):
        provider = configure_tracing(service_name="t", exporter=InMemorySpanExporter(), batch=False)
    span = provider.get_tracer("t").start_span("s", attributes={"payload": "p" * 5000})
    span.end()

    assert isinstance(span, ReadableSpan)
    assert len(str((span.attributes or {})["payload"])) == 4096
    assert "4096" in caplog.text and "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT" in caplog.text
