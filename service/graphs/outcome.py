"""How a span records the way its work ended: success, error or aborted.

Spans of a run are started with the SDK's own exception handling turned off
(`record_exception=False, set_status_on_exception=False`) and marked here
instead, so that:

- an error carries `error.type`, status ERROR and Langfuse level ERROR, and a
  status message, "{type}: {scrubbed message}" ("{type}: [content masked]" for
  masked accounts), both as the status description and as
  `langfuse.observation.status_message` (what Langfuse shows; it never reads the
  exception event, which holds the same scrubbed message);
- an abort (client disconnect, task cancellation: a BaseException that is not
  an Exception) is not an error: status stays UNSET, level WARNING, and a
  status message saying why ("aborted: the client disconnected"). A client
  going away is not the service failing, and must not count in error rates.

A cancellation does not say who cancelled: code that cancels runs for a known
reason runs them inside `recording_abort_reason()` and fills in the reason
before cancelling (see `service.streaming`); the spans it aborts report it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from sessiontrace import scrub
from sessiontrace.attributes import LANGFUSE_OBSERVATION_LEVEL, LANGFUSE_OBSERVATION_STATUS_MESSAGE

__all__ = [
    "DEFAULT_ABORT_REASON",
    "ERROR_TYPE",
    "MANUAL_OUTCOME",
    "RUN_OUTCOME",
    "AbortReason",
    "Outcome",
    "error_message",
    "error_type",
    "mark_aborted",
    "mark_error",
    "mark_failed_request",
    "recording_abort_reason",
    "recording_outcome",
]

ERROR_TYPE = "error.type"
RUN_OUTCOME = "sessiontrace.run.outcome"

# Keyword arguments of `start_as_current_span` leaving the outcome to this module.
MANUAL_OUTCOME: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}

_MASKED_MESSAGE = "[content masked]"

DEFAULT_ABORT_REASON = "the run was cancelled"


class Outcome(StrEnum):
    """The terminal outcome of a run, recorded once on its run span."""

    SUCCESS = "success"
    ERROR = "error"
    ABORTED = "aborted"


def error_type(exc: BaseException) -> str:
    """The fully qualified class name of `exc` (bare for builtins), as semconv asks."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def error_message(exc: BaseException, *, mask_content: bool) -> str:
    """What a span failed by `exc` shows: its type and scrubbed message (type only if masked)."""
    kind = error_type(exc)
    message = _exception_message(exc, mask_content=mask_content)
    return f"{kind}: {message}" if message else kind


def _exception_message(exc: BaseException, *, mask_content: bool) -> str:
    return _MASKED_MESSAGE if mask_content else str(scrub(str(exc)))


def mark_error(span: Span, exc: BaseException, *, mask_content: bool) -> None:
    """Record `exc` as the span's error: error.type, level ERROR, status ERROR with a message."""
    if not span.is_recording():
        return  # nothing reads it: the traceback is neither formatted nor scrubbed
    if mask_content:
        # Frames only: the last line of a full traceback repeats the message.
        stacktrace = "".join(traceback.format_tb(exc.__traceback__))
    else:
        stacktrace = str(scrub("".join(traceback.format_exception(exc))))
    event_message = _exception_message(exc, mask_content=mask_content)
    status_message = error_message(exc, mask_content=mask_content)
    span.set_attributes({
        ERROR_TYPE: error_type(exc),
        LANGFUSE_OBSERVATION_LEVEL: "ERROR",
        LANGFUSE_OBSERVATION_STATUS_MESSAGE: status_message,
    })
    span.record_exception(
        exc,
        attributes={"exception.message": event_message, "exception.stacktrace": stacktrace},
        escaped=True,
    )
    span.set_status(Status(StatusCode.ERROR, status_message))


def mark_failed_request(span: Span, status_message: str) -> None:
    """Say why on a span whose ERROR status its owner sets (the HTTP server span of a 5xx).

    The HTTP instrumentation sets that status without a description, after the
    route returned, so the message goes where Langfuse reads it first.
    """
    span.set_attributes({
        LANGFUSE_OBSERVATION_LEVEL: "ERROR",
        LANGFUSE_OBSERVATION_STATUS_MESSAGE: status_message,
    })


class AbortReason:
    """Why the runs of a `recording_abort_reason()` block were abandoned, once known."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None


# A mutable holder rather than the reason itself: the code that cancels (a
# task listening for the client) runs in another task, whose context changes
# would not reach the cancelled run's context.
_ABORT_REASON: ContextVar[AbortReason | None] = ContextVar(
    "sessiontrace_abort_reason", default=None
)


@contextmanager
def recording_abort_reason() -> Iterator[AbortReason]:
    """A reason that spans aborted in this block report; set it before cancelling them."""
    holder = AbortReason()
    token = _ABORT_REASON.set(holder)
    try:
        yield holder
    finally:
        _ABORT_REASON.reset(token)


def mark_aborted(span: Span, reason: str | None = None) -> None:
    """Record that the span's work was abandoned: level WARNING, status UNSET, and why.

    Without `reason`: the one set in the enclosing `recording_abort_reason()`
    block, else DEFAULT_ABORT_REASON.
    """
    holder = _ABORT_REASON.get()
    known = reason or (holder.reason if holder is not None else None)
    span.set_attributes({
        LANGFUSE_OBSERVATION_LEVEL: "WARNING",
        LANGFUSE_OBSERVATION_STATUS_MESSAGE: f"aborted: {known or DEFAULT_ABORT_REASON}",
    })


@contextmanager
def recording_outcome(span: Span, *, mask_content: bool) -> Iterator[Span]:
    """Mark `span` as failed or aborted when the block raises, then re-raise."""
    try:
        yield span
    except Exception as exc:
        mark_error(span, exc, mask_content=mask_content)
        raise
    except BaseException:
        mark_aborted(span)
        raise
