"""How a span records the way its work ended: success, error or aborted.

Spans of a run are started with the SDK's own exception handling turned off
(`record_exception=False, set_status_on_exception=False`) and marked here
instead, so that:

- an error carries `error.type`, status ERROR and Langfuse level ERROR, and its
  exception event holds a scrubbed message (none at all for masked accounts);
- an abort (client disconnect, task cancellation: a BaseException that is not
  an Exception) is not an error: status stays UNSET, level WARNING. A client
  going away is not the service failing, and must not count in error rates.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from telemetry import scrub
from telemetry.attributes import LANGFUSE_OBSERVATION_LEVEL

__all__ = [
    "ERROR_TYPE",
    "MANUAL_OUTCOME",
    "RUN_OUTCOME",
    "Outcome",
    "error_type",
    "mark_aborted",
    "mark_error",
    "recording_outcome",
]

ERROR_TYPE = "error.type"
RUN_OUTCOME = "sessiontrace.run.outcome"

# Keyword arguments of `start_as_current_span` leaving the outcome to this module.
MANUAL_OUTCOME: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}

_MASKED_MESSAGE = "[content masked]"


class Outcome(StrEnum):
    """The terminal outcome of a run, recorded once on its run span."""

    SUCCESS = "success"
    ERROR = "error"
    ABORTED = "aborted"


def error_type(exc: BaseException) -> str:
    """The fully qualified class name of `exc` (bare for builtins), as semconv asks."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def mark_error(span: Span, exc: BaseException, *, mask_content: bool) -> None:
    """Record `exc` as the span's error: error.type, level ERROR, status ERROR."""
    kind = error_type(exc)
    if mask_content:
        message = _MASKED_MESSAGE
        # Frames only: the last line of a full traceback repeats the message.
        stacktrace = "".join(traceback.format_tb(exc.__traceback__))
    else:
        message = str(scrub(str(exc)))
        stacktrace = str(scrub("".join(traceback.format_exception(exc))))
    span.set_attributes({ERROR_TYPE: kind, LANGFUSE_OBSERVATION_LEVEL: "ERROR"})
    span.record_exception(
        exc,
        attributes={"exception.message": message, "exception.stacktrace": stacktrace},
        escaped=True,
    )
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))


def mark_aborted(span: Span) -> None:
    """Record that the span's work was abandoned: level WARNING, status left UNSET."""
    span.set_attribute(LANGFUSE_OBSERVATION_LEVEL, "WARNING")


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
