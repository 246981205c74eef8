"""The trace-level attributes of a run, built in one place: what Langfuse reads from span rows.

Langfuse's current ingestion path (v4, "direct") keeps one row per span and builds the trace at
query time (shared/LANGFUSE_OTLP_CONTRACT.md):

- every row must carry the session, user, trace name and tags itself: the Sessions view, the
  trace-name and tag filters and the cost dashboards read each row's own keys. The `langfuse.*`
  keys are read first and no other instrumentation writes them, so a library that overwrites
  `session.id` on its spans (OpenInference does) cannot move them to another session;
- trace metadata, input and output come from the root span only.

So a bound session has two attribute sets: `span` (every span of the run; the session processor copies
it onto each span) and `root` (the span open when the session is bound, usually the HTTP server
span: the `span` set plus the trace metadata). Metadata stays off the other
spans, unlike the Langfuse SDK, which copies it: Langfuse reads it from the root only, and on
every span it would add 14% (a chat run) to 34% (a governance run) to the OTLP bytes, 4-7% after
gzip (bench/trace_bytes.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.util.types import AttributeValue

from sessiontrace.attributes import (
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_OUTPUT,
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_INPUT,
    LANGFUSE_TRACE_METADATA_PREFIX,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_OUTPUT,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

__all__ = [
    "CONTENT_MASKED",
    "MAX_TRACE_NAME_LENGTH",
    "SESSIONTRACE_CONTENT",
    "io_attributes",
    "metadata_attributes",
    "span_attributes",
]

# Langfuse drops a trace whose name is longer, and its session with it.
MAX_TRACE_NAME_LENGTH = 1000
# Set to CONTENT_MASKED on every span of a session bound with `mask_content=True`, and
# only there: the processor reads it when the span ends, wherever and whenever that is,
# to mask what other libraries recorded (sessiontrace._content).
SESSIONTRACE_CONTENT = "sessiontrace.content"
CONTENT_MASKED = "masked"


def span_attributes(
    *, session_id: str, user_id: str, trace_name: str | None, tags: Iterable[str],
    mask_content: bool = False,
) -> dict[str, str | tuple[str, ...]]:
    """Session, user, trace name and tags: the keys every span of a run carries.

    Sequences are tuples, as the SDK stores them, so these values can be
    written into a span's attribute store unchanged. Tags keep their
    first-seen order, without repeats. Without a trace name or tags, their
    keys are left out (Langfuse then names the trace after its root span).
    With `mask_content`, `sessiontrace.content` = "masked" too.

    Not `gen_ai.conversation.id`: Langfuse reads it only after
    `langfuse.session.id`, which every span already carries, so it would
    add bytes to every span and change nothing there (README).
    """
    attributes: dict[str, str | tuple[str, ...]] = {
        SESSION_ID: session_id,
        USER_ID: user_id,
        LANGFUSE_SESSION_ID: session_id,
        LANGFUSE_USER_ID: user_id,
    }
    if trace_name:
        attributes[LANGFUSE_TRACE_NAME] = trace_name[:MAX_TRACE_NAME_LENGTH]
    unique = tuple(dict.fromkeys(tags))
    if unique:
        attributes[LANGFUSE_TRACE_TAGS] = unique
    if mask_content:
        attributes[SESSIONTRACE_CONTENT] = CONTENT_MASKED
    return attributes


def metadata_attributes(metadata: Mapping[str, str]) -> dict[str, AttributeValue]:
    """One `langfuse.trace.metadata.<key>` attribute per entry, the form Langfuse filters on."""
    return {f"{LANGFUSE_TRACE_METADATA_PREFIX}{key}": value for key, value in metadata.items()}


def io_attributes(
    *, input: str | None = None, output: str | None = None  # noqa: A002
) -> dict[str, AttributeValue]:
    """A run's input and output as its root span carries them.

    As observation input and output, which Langfuse's current path reads from
    the root span, and as trace input and output, which its legacy path reads.
    """
    attributes: dict[str, AttributeValue] = {}
    if input is not None:
        attributes[LANGFUSE_OBSERVATION_INPUT] = attributes[LANGFUSE_TRACE_INPUT] = input
    if output is not None:
        attributes[LANGFUSE_OBSERVATION_OUTPUT] = attributes[LANGFUSE_TRACE_OUTPUT] = output
    return attributes
