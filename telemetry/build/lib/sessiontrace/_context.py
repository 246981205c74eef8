"""The caller context: who a run acts for, carried in the OpenTelemetry Context.

The caller lives under a private context key, never in baggage: baggage is
propagated from (and to) clients, and a client must not choose its own
session or user.
"""

from __future__ import annotations

import contextvars
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from sessiontrace._session import validate_session_id
from sessiontrace._trace_attributes import io_attributes, metadata_attributes, span_attributes

__all__ = [
    "CallerContext",
    "ContextPropagatingExecutor",
    "MissingCallerError",
    "Trigger",
    "bind_caller",
    "caller_from_context",
    "current_caller",
    "require_caller",
    "set_trace_io",
]

Trigger = Literal["user", "schedule"]
_TRIGGERS = ("user", "schedule")
# Private to this package: the processor reads it directly on its hot path.
CALLER_KEY = otel_context.create_key("sessiontrace.caller")
# The span that was open when the caller was bound: the root of the run's trace.
_ROOT_SPAN_KEY = otel_context.create_key("sessiontrace.root_span")

_P = ParamSpec("_P")
_R = TypeVar("_R")


class MissingCallerError(RuntimeError):
    """A run was about to start without a bound caller and session."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerContext:
    """Identity of the party a graph run acts for, and how its trace is named; immutable.

    `trace_name` defaults to the graph id. `tags` and `metadata` are the
    run's own; the standard metadata (run, request, graph, billing account,
    trigger, schedule) is added from the fields.
    """

    billing_account_id: str
    user_id: str
    session_id: str
    request_id: str
    run_id: str
    trigger: Trigger
    graph_id: str
    schedule_id: str | None = None
    trace_name: str = ""
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    # What every span of the run carries (sessiontrace._trace_attributes).
    span_attributes: Mapping[str, AttributeValue] = field(init=False, repr=False, compare=False)
    # What the root span carries: the above plus the trace metadata.
    root_attributes: Mapping[str, AttributeValue] = field(init=False, repr=False, compare=False)
    # The span pairs as a plain dict: dict.update from a dict is the fastest
    # copy there is, and the processor does it on every span.
    _span_items: dict[str, str | tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )
    # The longest of those values (a tag counts alone): under an attribute
    # value length limit at least this long, the SDK would store them as is.
    _longest_value: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        if self.trigger not in _TRIGGERS:
            raise ValueError(f"trigger must be one of {_TRIGGERS}, got {self.trigger!r}")
        for name in ("billing_account_id", "user_id", "request_id", "run_id", "graph_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.schedule_id is not None and not self.schedule_id:
            raise ValueError("schedule_id must be None or a non-empty string")
        for tag in self.tags:
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"tags must be non-empty strings, got {tag!r}")
        # Frozen views: nobody can alter a caller after it is bound, and the
        # processor reuses one prebuilt attribute mapping for every span.
        object.__setattr__(self, "trace_name", self.trace_name or self.graph_id)
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))
        items = span_attributes(
            session_id=self.session_id, user_id=self.user_id, trace_name=self.trace_name,
            tags=self.tags,
        )
        object.__setattr__(self, "_span_items", items)
        lengths = [len(part) for value in items.values()
                   for part in ((value,) if isinstance(value, str) else value)]
        object.__setattr__(self, "_longest_value", max(lengths, default=0))
        object.__setattr__(self, "span_attributes", types.MappingProxyType(items))
        root = {**items, **metadata_attributes(self._trace_metadata())}
        object.__setattr__(self, "root_attributes", types.MappingProxyType(root))

    def _trace_metadata(self) -> dict[str, str]:
        metadata = {
            "run_id": self.run_id,
            "request_id": self.request_id,
            "graph_id": self.graph_id,
            "billing_account_id": self.billing_account_id,
            "trigger": self.trigger,
        }
        if self.schedule_id is not None:
            metadata["schedule_id"] = self.schedule_id
        metadata.update(self.metadata)
        return metadata


def caller_from_context(context: otel_context.Context | None = None) -> CallerContext | None:
    """The caller bound in `context` (the current context when None)."""
    value = otel_context.get_value(CALLER_KEY, context)
    return value if isinstance(value, CallerContext) else None


def current_caller() -> CallerContext | None:
    """The caller bound in the current context, if any."""
    return caller_from_context()


def require_caller() -> CallerContext:
    """The bound caller; raises MissingCallerError when there is none."""
    caller = caller_from_context()
    if caller is None:
        raise MissingCallerError(
            "no caller is bound: wrap the run in sessiontrace.bind_caller(...) so its spans "
            "carry a session id"
        )
    return caller


@contextmanager
def bind_caller(caller: CallerContext) -> Iterator[CallerContext]:
    """Bind `caller` for the block and stamp the span that is already open.

    The HTTP server span starts before the route knows the caller, so it is
    stamped here, with the trace metadata too: it is the trace's root, where
    Langfuse reads metadata, input and output (`set_trace_io`). Spans started
    inside the block get the caller from the SessionSpanProcessor. Binding a
    caller of another session inside a bound block raises ValueError: one
    trace must never hold two sessions.
    """
    if not isinstance(caller, CallerContext):
        raise TypeError(f"bind_caller expects a CallerContext, got {type(caller).__name__}")
    bound = current_caller()
    if bound is not None and bound.session_id != caller.session_id:
        raise ValueError(
            f"a caller of session {bound.session_id!r} is already bound; refusing to bind "
            f"session {caller.session_id!r} in the same trace"
        )
    span = trace.get_current_span()
    context = otel_context.set_value(CALLER_KEY, caller)
    if span.is_recording():
        span.set_attributes(caller.root_attributes)
        context = otel_context.set_value(_ROOT_SPAN_KEY, span, context)
    token = otel_context.attach(context)
    try:
        yield caller
    finally:
        otel_context.detach(token)


def set_trace_io(*, input: str | None = None, output: str | None = None) -> None:  # noqa: A002
    """Record the run's input or output on its trace's root span.

    The root is the span that was open when the caller was bound (the HTTP
    server span). Langfuse's current ingestion path takes a trace's input and
    output from its root span only, so they go there as observation input and
    output, and as trace input and output for its legacy path (see
    `io_attributes`, which gives the run's own span the same). Values are
    written as given: scrub and cap them first (`encode_payload`). Without a
    span open at bind time the run's own first span is the root: set them on
    it directly; this is then a no-op.
    """
    root = otel_context.get_value(_ROOT_SPAN_KEY)
    if isinstance(root, trace.Span) and root.is_recording():
        root.set_attributes(io_attributes(input=input, output=output))


class ContextPropagatingExecutor(ThreadPoolExecutor):
    """A thread pool that runs each task in a copy of the submitter's context.

    `loop.run_in_executor` does not copy context variables (unlike
    `asyncio.to_thread`); installed with `loop.set_default_executor`, this pool
    keeps the bound caller and the current span in executor threads.
    """

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_R]:
        ctx = contextvars.copy_context()
        return super().submit(functools.partial(ctx.run, fn, *args, **kwargs))


