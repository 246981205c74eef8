"""The HTTP server span's request details: secrets scrubbed from the query, values bounded.

The FastAPI instrumentation records the request as the client sent it (URL,
query, user agent, captured headers) when the server span starts, and calls
the server request hook right after. The hook rewrites what it recorded:

- the query (`url.query`, `http.target`, `http.url`): values of parameters
  named like secrets become `[REDACTED]`, and every value goes through
  `sessiontrace.scrub` (bearer tokens, `sk-` keys, e-mail addresses, card numbers);
- every string value is cut to `limit` characters (a 60 KB User-Agent was
  exported verbatim).

Only these request attributes are cut here, not the whole span: the server
span is also the trace's root, where the service writes the run's input and
output, already capped in bytes by `sessiontrace.encode_payload` (50 KB), which
a span-wide SDK limit of a few KB would cut mid-JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.trace import Span

from sessiontrace import REDACTED, scrub

__all__ = [
    "DEFAULT_REQUEST_ATTRIBUTE_LIMIT",
    "make_server_request_hook",
    "request_attribute_limit",
    "scrub_query",
]

DEFAULT_REQUEST_ATTRIBUTE_LIMIT = 4096
_ADDRESS_MASK = "[EMAIL]"  # what sessiontrace.scrub writes for an e-mail address

# Keys the HTTP instrumentation puts the query in (old and stable semconv).
_QUERY_KEYS = ("url.query",)
_TARGET_KEYS = ("http.target", "http.url", "url.full")
_REWRITTEN_KEYS = frozenset((*_QUERY_KEYS, *_TARGET_KEYS))
# Query parameter names whose value is a secret in itself; payload keys such as
# token, secret, password, api_key are also caught by sessiontrace.scrub's key rule.
_SECRET_PARAMETERS = frozenset({"token", "secret", "password", "api_key", "apikey", "key", "code"})

ServerRequestHook = Callable[[Span, dict[str, Any]], None]


def request_attribute_limit() -> int:
    """The span attribute value length limit of the standard variables, else 4096.

    `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, then `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`,
    as the SDK reads them (the SDK then applies them to every attribute too).
    """
    configured = SpanLimits().max_span_attribute_length
    return DEFAULT_REQUEST_ATTRIBUTE_LIMIT if configured is None else configured


def make_server_request_hook(*, limit: int) -> ServerRequestHook:
    """A `server_request_hook` that scrubs the query and cuts values past `limit` characters."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")

    def server_request_hook(span: Span, scope: dict[str, Any]) -> None:
        if not span.is_recording() or not isinstance(span, ReadableSpan):
            return
        rewritten: dict[str, Any] = {}
        for key, recorded in _recorded_items(span):
            if type(recorded) is str and len(recorded) <= limit and key not in _REWRITTEN_KEYS:
                continue  # most of them: short, and no query in them
            value = recorded
            if key in _QUERY_KEYS and isinstance(value, str):
                value = scrub_query(value)
            elif key in _TARGET_KEYS and isinstance(value, str):
                value = _scrub_target(value)
            value = _bounded(value, limit)
            if value is not recorded and value != recorded:
                rewritten[key] = value
        if rewritten:
            span.set_attributes(rewritten)

    return server_request_hook


def _recorded_items(span: ReadableSpan) -> list[tuple[str, Any]]:
    # The SDK's own dict when it is there: the public `attributes` is a read-only view
    # whose items() makes a Python call per key, on every request.
    store = getattr(getattr(span, "_attributes", None), "_dict", None)
    attributes = store if type(store) is dict else (span.attributes or {})
    return list(attributes.items())


def scrub_query(query: str) -> str:
    """`query` with secret parameter values redacted and secrets inside values masked."""
    parts = []
    for part in query.split("&"):
        name, separator, value = part.partition("=")
        decoded_name = unquote_plus(name)
        if separator and _is_secret_parameter(decoded_name):
            parts.append(f"{name}={REDACTED}")
            continue
        decoded = unquote_plus(part)
        masked = str(scrub(decoded))
        if separator and _looks_like_address(unquote_plus(value)):
            masked = f"{decoded_name}={_ADDRESS_MASK}"
        parts.append(part if masked == decoded else masked)
    return "&".join(parts)


def _looks_like_address(value: str) -> bool:
    # Stricter in free text (sessiontrace.scrub wants a dotted domain with a 2+ letter
    # TLD); a query value with an "@" inside is an address, "a@b.c" included.
    local, at, domain = value.partition("@")
    return bool(at and local.strip() and domain.strip())


def _scrub_target(target: str) -> str:
    path, separator, query = target.partition("?")
    return f"{path}?{scrub_query(query)}" if separator else target


def _is_secret_parameter(name: str) -> bool:
    normalized = name.strip().lower()
    if normalized in _SECRET_PARAMETERS:
        return True
    # The payload scrubber's key rule (access_token, client_secret, X-Api-Key, ...).
    scrubbed: dict[str, Any] = scrub({normalized: "x"})
    return bool(scrubbed[normalized] == REDACTED)


def _bounded(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value[:limit] if len(value) > limit else value
    if isinstance(value, tuple) and any(isinstance(item, str) for item in value):
        return tuple(_bounded(item, limit) for item in value)
    return value
