"""The session binding: which session and user a block's spans belong to, in the OTel Context.

The binding lives under a private context key, never in baggage: baggage is
propagated from (and to) clients, and a client must not choose its own
session or user.
"""

from __future__ import annotations

import contextvars
import functools
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from sessiontrace._session import validate_session_id
from sessiontrace._span_store import longest_value, stamp_open_span
from sessiontrace._trace_attributes import io_attributes, metadata_attributes, span_attributes

__all__ = [
    "ContextPropagatingExecutor",
    "MissingSessionError",
    "SessionContext",
    "bind_session",
    "binding",
    "current_session",
    "require_session",
    "session_from_context",
    "set_trace_io",
]

# Private to this package: the processor reads it directly on its hot path.
SESSION_KEY = otel_context.create_key("sessiontrace.session")
# The span that was open when the session was bound: the root of the run's trace.
_ROOT_SPAN_KEY = otel_context.create_key("sessiontrace.root_span")

_P = ParamSpec("_P")
_R = TypeVar("_R")


class MissingSessionError(RuntimeError):
    """Work that must belong to a session was about to start with none bound."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionContext:
    """The session and user a block's spans belong to, and how their trace is named; immutable.

    `trace_name`, `tags` and `metadata` are optional: without a trace name,
    Langfuse names the trace after its root span. With `mask_content`, what
    other libraries record as content on the block's spans (prompts,
    completions) leaves as its size and sha256 only; without, it is scrubbed
    and capped (sessiontrace._content).
    """

    session_id: str
    user_id: str
    trace_name: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    mask_content: bool = False
    # What every span of the block carries (sessiontrace._trace_attributes).
    span_attributes: Mapping[str, AttributeValue] = field(init=False, repr=False, compare=False)
    # What the root span carries: the above plus the trace metadata.
    root_attributes: Mapping[str, AttributeValue] = field(init=False, repr=False, compare=False)
    # The trace metadata alone (`langfuse.trace.metadata.<key>`): for a span started in the
    # block that is to carry the root set too, the processor stamps the rest.
    metadata_attributes: Mapping[str, AttributeValue] = field(
        init=False, repr=False, compare=False
    )
    # The span pairs as a plain dict: dict.update from a dict is the fastest
    # copy there is, and the processor does it on every span.
    _span_items: dict[str, str | tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )
    # The longest of those values (a tag counts alone): under an attribute
    # value length limit at least this long, the SDK would store them as is.
    _longest_value: int = field(init=False, repr=False, compare=False)
    # The same two for the root attributes, which `binding` writes on the open span.
    _root_items: dict[str, AttributeValue] = field(init=False, repr=False, compare=False)
    _root_longest_value: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        if not isinstance(self.user_id, str) or not self.user_id:
            raise ValueError(f"user_id must be a non-empty string, got {self.user_id!r}")
        if self.trace_name is not None and (
            not isinstance(self.trace_name, str) or not self.trace_name
        ):
            raise ValueError(f"trace_name must be None or a non-empty string, got "
                             f"{self.trace_name!r}")
        tags = (self.tags,) if isinstance(self.tags, str) else tuple(self.tags)
        for tag in tags:
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"tags must be non-empty strings, got {tag!r}")
        metadata = dict(self.metadata)
        for key, value in metadata.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise ValueError(f"metadata must map non-empty strings to strings, got "
                                 f"{key!r}: {value!r}")
        # Frozen views: nobody can alter a binding after it is made, and the
        # processor reuses one prebuilt attribute mapping for every span.
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "metadata", types.MappingProxyType(metadata))
        items = span_attributes(
            session_id=self.session_id, user_id=self.user_id, trace_name=self.trace_name,
            tags=tags, mask_content=self.mask_content,
        )
        object.__setattr__(self, "_span_items", items)
        object.__setattr__(self, "span_attributes", types.MappingProxyType(items))
        object.__setattr__(self, "_longest_value", longest_value(items))
        trace_metadata = metadata_attributes(metadata)
        object.__setattr__(self, "metadata_attributes", types.MappingProxyType(trace_metadata))
        root: dict[str, AttributeValue] = {**items, **trace_metadata}
        object.__setattr__(self, "_root_items", root)
        object.__setattr__(self, "root_attributes", types.MappingProxyType(root))
        object.__setattr__(
            self, "_root_longest_value", max(self._longest_value, longest_value(metadata))
        )


def session_from_context(context: otel_context.Context | None = None) -> SessionContext | None:
    """The session bound in `context` (the current context when None)."""
    value = otel_context.get_value(SESSION_KEY, context)
    return value if isinstance(value, SessionContext) else None


def current_session() -> SessionContext | None:
    """The session bound in the current context, if any."""
    return session_from_context()


def require_session() -> SessionContext:
    """The bound session; raises MissingSessionError when there is none."""
    session = session_from_context()
    if session is None:
        raise MissingSessionError(
            "no session is bound: wrap the work in sessiontrace.bind_session(...) so its "
            "spans carry a session id"
        )
    return session


@contextmanager
def bind_session(
    *,
    session_id: str,
    user_id: str,
    trace_name: str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, str] | None = None,
    mask_content: bool = False,
) -> Iterator[SessionContext]:
    """Bind a session and user for the block and stamp the span that is already open.

    Every span started in the block gets `session.id`, `user.id`, their
    `langfuse.*` twins, and the trace name and tags (SessionSpanProcessor).
    The span open at bind time (an HTTP server span starts before the route
    knows the session) is stamped here, with the trace metadata too: it is
    the trace's root, where Langfuse reads metadata, input and output
    (`set_trace_io`). Binding another session inside a bound block raises
    ValueError: one trace must never hold two sessions. ValueError also for
    a session id Langfuse cannot keep, or an empty user id. With
    `mask_content`, content other libraries record on the block's spans is
    reduced to its size and sha256 (`SessionContext`).
    """
    session = SessionContext(
        session_id=session_id, user_id=user_id, trace_name=trace_name, tags=tuple(tags),
        metadata=metadata or {}, mask_content=mask_content,
    )
    with binding(session):
        yield session


@contextmanager
def binding(session: SessionContext) -> Iterator[SessionContext]:
    """`bind_session` for a SessionContext already built (an application reuses one)."""
    if not isinstance(session, SessionContext):
        raise TypeError(f"binding expects a SessionContext, got {type(session).__name__}")
    bound = current_session()
    if bound is not None and bound.session_id != session.session_id:
        raise ValueError(
            f"session {bound.session_id!r} is already bound; refusing to bind "
            f"session {session.session_id!r} in the same trace"
        )
    span = trace.get_current_span()
    context = otel_context.set_value(SESSION_KEY, session)
    if span.is_recording():
        stamp_open_span(span, session._root_items, session._root_longest_value)  # noqa: SLF001
        context = otel_context.set_value(_ROOT_SPAN_KEY, span, context)
    token = otel_context.attach(context)
    try:
        yield session
    finally:
        otel_context.detach(token)


def set_trace_io(
    *,
    input: str | None = None,  # noqa: A002
    output: str | None = None,
    span: trace.Span | None = None,
) -> None:
    """Record the run's input or output on its trace's root span, and on `span` if given.

    The root is the span that was open when the session was bound (the HTTP
    server span). Langfuse's current ingestion path takes a trace's input and
    output from its root span only, so they go there as observation input and
    output, and as trace input and output for its legacy path (see
    `io_attributes`). `span`, the run's own span, gets the same: its own input
    and output, and the trace's should it be the root. Without a span open at
    bind time the run's own span is the root: pass it as `span`. Values are
    written as given: scrub and cap them first (`encode_payload`). Spans that
    do not record are left alone.
    """
    root = otel_context.get_value(_ROOT_SPAN_KEY)
    targets = [target for target in ((root, span) if span is not root else (root,))
               if isinstance(target, trace.Span) and target.is_recording()]
    if not targets:
        return
    attributes = io_attributes(input=input, output=output)
    texts = [value for value in (input, output) if value is not None]
    text_only = all(isinstance(text, str) for text in texts)
    for target in targets:
        if text_only:
            # Text, which the SDK would store as it is: written as the binding writes.
            stamp_open_span(target, attributes, max(map(len, texts), default=0))
        else:
            target.set_attributes(attributes)


class ContextPropagatingExecutor(ThreadPoolExecutor):
    """A thread pool that runs each task in a copy of the submitter's context.

    `loop.run_in_executor` does not copy context variables (unlike
    `asyncio.to_thread`); installed with `loop.set_default_executor`, this pool
    keeps the bound session and the current span in executor threads.
    """

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_R]:
        ctx = contextvars.copy_context()
        return super().submit(functools.partial(ctx.run, fn, *args, **kwargs))


