"""SessionSpanProcessor: stamps the bound caller's session and user on every span."""

from __future__ import annotations

import logging
import threading

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from telemetry.attributes import SESSION_ID
from telemetry.context import caller_from_context

__all__ = ["SessionSpanProcessor"]

logger = logging.getLogger(__name__)


class SessionSpanProcessor(SpanProcessor):
    """Sets `session.id` and `user.id` from the caller bound in the span's context.

    The caller is read from the parent context handed to `on_start`, falling
    back to the current context when that carries none (a span started with
    `context=extract(headers)` still belongs to the run that started it).
    Identity never comes from baggage or headers. A span with no caller gets
    no invented session. Spans that *end* without a session are counted and a
    warning is logged once: counting at the end, not the start, leaves out the
    HTTP server span, which starts before the route binds the caller and is
    stamped by `bind_caller` while still open.

    Args:
        strict: re-raise failures instead of logging them (for tests); in
            production telemetry must never break a request.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self._strict = strict
        self._lock = threading.Lock()
        self._without_caller = 0

    @property
    def spans_without_caller(self) -> int:
        """How many spans ended with no session (no caller was ever bound to them)."""
        return self._without_caller

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            caller = caller_from_context(parent_context) if parent_context is not None else None
            if caller is None:
                caller = caller_from_context()
            if caller is not None:
                span.set_attributes(caller.span_attributes)
        except Exception:
            if self._strict:
                raise
            logger.exception("SessionSpanProcessor failed on span %r", span.name)

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes
        if attributes is None or SESSION_ID not in attributes:
            self._count_missing(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _count_missing(self, span: ReadableSpan) -> None:
        with self._lock:
            self._without_caller += 1
            first = self._without_caller == 1
        if first:
            logger.warning(
                "span %r ended with no caller bound: it has no session.id and will not "
                "appear in Langfuse's Sessions view (further such spans are only counted)",
                span.name,
            )
