"""The service's caller: who a graph run acts for, built on the library's session binding.

`sessiontrace.bind_session` knows a session, a user, a trace name, tags and
metadata: what any application has. The service knows more about a run (its
billing account, request, run id, trigger, graph and schedule): that lives
here, and becomes the binding's trace name (the graph) and metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import context as otel_context

from sessiontrace import SessionContext, binding

__all__ = [
    "CallerContext",
    "MissingCallerError",
    "Trigger",
    "bind_caller",
    "current_caller",
    "require_caller",
]

Trigger = Literal["user", "schedule"]
_TRIGGERS = ("user", "schedule")
_CALLER_KEY = otel_context.create_key("sessiontrace.service.caller")


class MissingCallerError(RuntimeError):
    """A run was about to start without a bound caller and session."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerContext:
    """Identity of the party a graph run acts for; immutable.

    Its `session` is the library's binding: trace name = graph id, tags as
    given, metadata = run, request, graph, billing account, trigger and
    schedule, then the caller's own `metadata`.
    """

    billing_account_id: str
    user_id: str
    session_id: str
    request_id: str
    run_id: str
    trigger: Trigger
    graph_id: str
    schedule_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The billing account's: its runs record payload sizes and hashes only, never text.
    mask_content: bool = False
    session: SessionContext = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.trigger not in _TRIGGERS:
            raise ValueError(f"trigger must be one of {_TRIGGERS}, got {self.trigger!r}")
        for name in ("billing_account_id", "request_id", "run_id", "graph_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.schedule_id is not None and not self.schedule_id:
            raise ValueError("schedule_id must be None or a non-empty string")
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
        # Validates the session id, user id, tags and metadata.
        session = SessionContext(
            session_id=self.session_id, user_id=self.user_id, trace_name=self.graph_id,
            tags=tuple(self.tags), metadata=metadata,
            # Bound with it, other libraries' content on the run's spans (gen_ai.input.messages
            # ...) is masked too, not only scrubbed.
            mask_content=self.mask_content,
        )
        object.__setattr__(self, "tags", session.tags)
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "session", session)


def current_caller() -> CallerContext | None:
    """The caller bound in the current context, if any."""
    value = otel_context.get_value(_CALLER_KEY)
    return value if isinstance(value, CallerContext) else None


def require_caller() -> CallerContext:
    """The bound caller; raises MissingCallerError when there is none."""
    caller = current_caller()
    if caller is None:
        raise MissingCallerError(
            "no caller is bound: wrap the run in service.caller.bind_caller(...) so its spans "
            "carry a session id"
        )
    return caller


@contextmanager
def bind_caller(caller: CallerContext) -> Iterator[CallerContext]:
    """Bind `caller`'s session (`sessiontrace.binding`) and the caller itself for the block.

    Like the session binding, it stamps the span already open (the HTTP
    server span) and refuses a caller of another session inside a bound block.
    """
    if not isinstance(caller, CallerContext):
        raise TypeError(f"bind_caller expects a CallerContext, got {type(caller).__name__}")
    with binding(caller.session):
        token = otel_context.attach(otel_context.set_value(_CALLER_KEY, caller))
        try:
            yield caller
        finally:
            otel_context.detach(token)
