"""sessiontrace: every span of an LLM run carries its session and user, for Langfuse."""

from sessiontrace._spool import DEFAULT_SPOOL_MAX_BYTES, SpanSpool, SpooledBatch, SpoolStats
from sessiontrace._spooling import SpoolingSpanExporter
from sessiontrace._asgi import SessionMiddleware, SessionResolver
from sessiontrace._content import CONTENT_ATTRIBUTE_CAP
from sessiontrace._context import (
    ContextPropagatingExecutor,
    MissingSessionError,
    SessionContext,
    bind_session,
    binding,
    current_session,
    require_session,
    session_from_context,
    set_trace_io,
)
from sessiontrace._exporter import DirectOTLPSpanExporter, SendOutcome
from sessiontrace._payload import (
    REDACTED,
    encode_payload,
    scrub,
)
from sessiontrace._processor import SessionSpanProcessor
from sessiontrace._session import (
    MAX_SESSION_ID_LENGTH,
    derive_adhoc_session_id,
    derive_schedule_session_id,
    derive_user_session_id,
    validate_session_id,
)
from sessiontrace._setup import configure_tracing, resolve_environment, validate_environment
from sessiontrace._testing import SpanRecorder, assert_every_span_has_a_session
from sessiontrace._trace_attributes import MAX_TRACE_NAME_LENGTH, io_attributes

__all__ = [
    "CONTENT_ATTRIBUTE_CAP",
    "DEFAULT_SPOOL_MAX_BYTES",
    "MAX_SESSION_ID_LENGTH",
    "MAX_TRACE_NAME_LENGTH",
    "REDACTED",
    "ContextPropagatingExecutor",
    "DirectOTLPSpanExporter",
    "MissingSessionError",
    "SendOutcome",
    "SessionContext",
    "SessionMiddleware",
    "SessionResolver",
    "SessionSpanProcessor",
    "SpanRecorder",
    "SpanSpool",
    "SpoolStats",
    "SpooledBatch",
    "SpoolingSpanExporter",
    "assert_every_span_has_a_session",
    "bind_session",
    "binding",
    "configure_tracing",
    "current_session",
    "derive_adhoc_session_id",
    "derive_schedule_session_id",
    "derive_user_session_id",
    "encode_payload",
    "io_attributes",
    "require_session",
    "resolve_environment",
    "scrub",
    "session_from_context",
    "set_trace_io",
    "validate_environment",
    "validate_session_id",
]
