"""SessionSpanProcessor: stamps the bound session and user on every span."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import INVALID_SPAN, SpanKind, set_span_in_context

from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)
from sessiontrace._content import CONTENT_KEYS, content_keys, rewrite_content
from sessiontrace._context import SESSION_KEY, SessionContext
from sessiontrace._span_store import stamp_starting_span
from sessiontrace._trace_attributes import CONTENT_MASKED, SESSIONTRACE_CONTENT

__all__ = ["SessionSpanProcessor"]

logger = logging.getLogger(__name__)

# The key a context holds its span under (opentelemetry.trace.propagation's private
# _SPAN_KEY), found through the public API: a plain get costs ~50 ns where
# get_current_span costs 170-260 ns, on every span started with no session bound.
_SPAN_KEY = next(iter(set_span_in_context(INVALID_SPAN, Context())))


def _current_context_reader() -> Callable[[], Context]:
    """`get_current`, or what it calls: the default runtime context's ContextVar.get.

    get_current is two Python calls around that C call, on every span (a tenth of what
    this processor costs a span, bench/processor_overhead.py). Another runtime context
    (OTEL_PYTHON_CONTEXT) is read through get_current.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    current = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(current, ContextVar):
        read: Callable[[], Context] = current.get
        return read
    return get_current


_get_current = _current_context_reader()


class SessionSpanProcessor(SpanProcessor):
    """Stamps every span with the session, user, trace name and tags of its bound session.

    The session is read from the parent context handed to `on_start`, falling
    back to the current context when that carries none (a span started with
    `context=extract(headers)` still belongs to the run that started it).
    Identity never comes from baggage or headers. A span with no session bound gets
    no invented session. What is stamped is `SessionContext.span_attributes`:
    `session.id`, `user.id`, their `langfuse.*` twins, `langfuse.trace.name`
    and `langfuse.trace.tags` (sessiontrace._trace_attributes says why each).

    Two things are counted, each with a warning logged once:

    - `spans_without_session`: spans that *end* with no session, the bug this
      library exists to prevent. Counting at the end leaves out the HTTP
      server span, which starts before the route binds the session and is
      stamped by `bind_session` while still open; and a SERVER span that ends
      unbound is a request that started no run (a 401, a health probe, a
      replay), not a run without a session;
    - `session_conflicts`: spans whose `session.id` another library changed
      after the stamp (OpenInference writes its own, e.g. a LangGraph
      `thread_id`). Langfuse still files them under `langfuse.session.id`.

    Args:
        strict: re-raise failures instead of logging them (for tests); in
            production telemetry must never break a request.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self._strict = strict
        self._lock = threading.Lock()
        self._without_caller = 0
        self._conflicts = 0
        # Span ids of spans that started with no session: only they can end
        # without a session, so on_end is a single emptiness test otherwise.
        self._unstamped: set[int] = set()

    @property
    def spans_without_session(self) -> int:
        """How many spans ended with no session (none was ever bound to them)."""
        return self._without_caller

    @property
    def spans_without_caller(self) -> int:
        """The same count, by its name before sessions were bound with `bind_session`."""
        return self._without_caller

    @property
    def session_conflicts(self) -> int:
        """How many spans ended with a `session.id` other than the one stamped."""
        return self._conflicts

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            # Inlined session_from_context: this runs on every span. Only
            # binding() writes the private key, always a SessionContext.
            session: Any = None
            if parent_context is not None:
                session = parent_context.get(SESSION_KEY)
            if session is None:
                current = _get_current()
                session = current.get(SESSION_KEY)
                if session is None:
                    # Started after its run's bind_session block exited (an ASGI `http
                    # send` span), it still belongs to the session its parent span carries.
                    parent = (current if parent_context is None else parent_context).get(
                        _SPAN_KEY
                    )
                    if parent is None or not _inherit(span, parent):
                        self._unstamped.add(span.context.span_id)
                    return
            stamp_starting_span(
                span, session._span_items, session._longest_value  # noqa: SLF001
            )
        except Exception:
            if self._strict:
                raise
            logger.exception("SessionSpanProcessor failed on span %r", span.name)

    def on_end(self, span: ReadableSpan) -> None:
        # Runs on every span: the SDK's own attribute dict when it is there (the
        # public `attributes` wraps it in a new MappingProxyType each call, ~175
        # ns, most of what this costs); the span has ended, nothing writes to it.
        store = getattr(span, "_attributes", None)
        store = getattr(store, "_dict", store)
        attributes: Mapping[str, Any] = store if type(store) is dict else span.attributes or {}
        stamped = attributes.get(LANGFUSE_SESSION_ID)
        if stamped is not None:
            # Identity first: a span stamped here holds the very same object.
            found = attributes.get(SESSION_ID)
            if found is not stamped and found != stamped:
                self._count_conflict(span, stamped, found)
            if self._unstamped:  # the server span, stamped by bind_session after it started
                self._unstamped.discard(span.context.span_id if span.context else 0)
            # What other libraries recorded as content; a few dict lookups when none.
            if not attributes.keys().isdisjoint(CONTENT_KEYS):
                self._rewrite_content(span, attributes)
            return
        unstamped = self._unstamped
        if unstamped and span.context is not None and span.context.span_id in unstamped:
            unstamped.discard(span.context.span_id)
            if span.kind is not SpanKind.SERVER:
                self._count_missing(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _rewrite_content(self, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
        # Before the exporting processors see the span (configure_tracing adds this one
        # first): they read the same dict. Masked when the span's session says so, by the
        # key stamped with it, so it holds wherever and whenever the span ends.
        mask_content = attributes.get(SESSIONTRACE_CONTENT) == CONTENT_MASKED
        keys = content_keys(attributes, mask_content=mask_content)
        if not keys:
            return  # only the application's own payloads, encoded already
        try:
            if type(attributes) is not dict:
                raise TypeError(f"span attributes kept in a {type(attributes).__name__}")
            bounded = getattr(span, "_attributes", None)
            rewrite_content(
                attributes, keys,
                mask_content=mask_content,
                max_value_len=(
                    bounded.max_value_len if isinstance(bounded, BoundedAttributes) else None
                ),
            )
        except Exception:
            if self._strict:
                raise
            logger.exception("SessionSpanProcessor could not rewrite the content of span %r; "
                             "dropping %s", span.name, ", ".join(keys))
            # Content that could not be scrubbed never leaves.
            if type(attributes) is dict:
                for key in keys:
                    attributes.pop(key, None)

    def _count_conflict(self, span: ReadableSpan, stamped: object, found: object) -> None:
        with self._lock:
            self._conflicts += 1
            first = self._conflicts == 1
        if first:
            logger.warning(
                "span %r: session.id was changed from %r to %r after it was stamped, by "
                "another instrumentation; Langfuse keeps it in the stamped session through "
                "langfuse.session.id (further such spans are only counted)",
                span.name, stamped, found,
            )

    def _count_missing(self, span: ReadableSpan) -> None:
        with self._lock:
            self._without_caller += 1
            first = self._without_caller == 1
        if first:
            logger.warning(
                "span %r ended with no session bound: it has no session.id and will not "
                "appear in Langfuse's Sessions view (further such spans are only counted)",
                span.name,
            )


def _inherit(span: Span, parent: object) -> bool:
    """Stamp `span` with the session its local parent span carries; False when it has none.

    Spans that start after the route's `bind_session` block has exited, such as the ASGI
    `http send` spans under the HTTP server span that `bind_session` stamped, are still
    the run's. Only a local SDK span is read: a remote parent is a client's word. The
    parent is in the span's own trace, so no second session can come in this way. The
    `langfuse.*` keys are the source, since other libraries overwrite `session.id` and
    `user.id`; the span gets the same keys, in the same order, as a bound session writes.
    """
    if type(parent) is not Span and not isinstance(parent, Span):  # a remote parent
        return False
    # The SDK's own dict, as on_end reads it: the public `attributes` copies.
    store = getattr(parent, "_attributes", None)
    store = getattr(store, "_dict", store)
    attributes: Mapping[str, Any] = store if type(store) is dict else parent.attributes or {}
    session_id = attributes.get(LANGFUSE_SESSION_ID)
    if not session_id:
        return False
    user_id = attributes.get(LANGFUSE_USER_ID)
    items: dict[str, Any] = (
        {SESSION_ID: session_id, USER_ID: user_id,
         LANGFUSE_SESSION_ID: session_id, LANGFUSE_USER_ID: user_id}
        if user_id else {SESSION_ID: session_id, LANGFUSE_SESSION_ID: session_id}
    )
    # The masking marker too: a span of a masking session stays masked (on_end reads it).
    for key in (LANGFUSE_TRACE_NAME, LANGFUSE_TRACE_TAGS, SESSIONTRACE_CONTENT):
        value = attributes.get(key)
        if value is not None:
            items[key] = value
    stamp_starting_span(span, items, None)
    return True
