"""The configurations bench/processor_overhead.py compares: processors, scopes, span shapes.

Each configuration stamps the same session.id and user.id its own way (see the benchmark's
docstring for the list); a no-op exporter counts what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from langfuse import propagate_attributes
from langfuse._client.propagation import _get_propagated_attributes_from_context
from langfuse._client.span import _set_span_attributes_within_limit
from langfuse._client.span_processor import LangfuseSpanProcessor
from langfuse.logger import langfuse_logger
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer, format_span_id

from sessiontrace import SessionContext, SessionSpanProcessor, binding, derive_user_session_id
from sessiontrace.attributes import SESSION_ID, USER_ID

__all__ = ["SESSION", "SHAPES", "USER", "Config", "NoOpExporter", "build_configs"]

USER = "user-4711"
SESSION = derive_user_session_id("bench", "conversation-1")
# What the service binds for a chat run: session, user, trace name, tags (and metadata, which
# only the span open at bind time carries).
CALLER = SessionContext(
    session_id=SESSION, user_id=USER, trace_name="builtin:chat",
    tags=("user", "builtin:chat", "sessiontrace.offline", "development"),
    metadata={"run_id": "run-1", "request_id": "req-1"},
)
class NoOpExporter(SpanExporter):
    """Counts what it is given; with `check` on, also counts spans carrying the session."""

    def __init__(self) -> None:
        self.check = False
        self.exported = 0
        self.stamped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        if self.check:
            for span in spans:
                attributes = span.attributes or {}
                if attributes.get(SESSION_ID) == SESSION and attributes.get(USER_ID) == USER:
                    self.stamped += 1
        return SpanExportResult.SUCCESS


class LangfuseAttributeLogic(SpanProcessor):
    """The attribute block of LangfuseSpanProcessor.on_start (langfuse 5.0.4)."""

    # Verbatim but for the prompt-precedence filter, which acts only on prompt attributes.

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = parent_context or otel_context.get_current()
        propagated_attributes = _get_propagated_attributes_from_context(context)
        if propagated_attributes:
            _set_span_attributes_within_limit(span, propagated_attributes)
            langfuse_logger.debug(
                "Propagated %s attributes to span '%s': %s",
                len(propagated_attributes),
                format_span_id(span.context.span_id),
                propagated_attributes,
            )


def flat(tracer: Tracer, n: int) -> int:
    for _ in range(n):
        tracer.start_span("op").end()
    return n


def nested(tracer: Tracer, n: int) -> int:
    with tracer.start_as_current_span("root"):
        for _ in range(n):
            tracer.start_span("child").end()
    return n + 1


def stamp(span: trace.Span) -> None:
    span.set_attribute(SESSION_ID, SESSION)
    span.set_attribute(USER_ID, USER)


def flat_stamped(tracer: Tracer, n: int) -> int:
    for _ in range(n):
        span = tracer.start_span("op")
        stamp(span)
        span.end()
    return n


def nested_stamped(tracer: Tracer, n: int) -> int:
    with tracer.start_as_current_span("root") as root:
        stamp(root)
        for _ in range(n):
            span = tracer.start_span("child")
            stamp(span)
            span.end()
    return n + 1


Shape = Callable[[Tracer, int], int]
SHAPES: dict[str, Shape] = {"flat": flat, "nested": nested}
STAMPED_SHAPES: dict[str, Shape] = {"flat": flat_stamped, "nested": nested_stamped}


@contextmanager
def session_in_baggage() -> Iterator[None]:
    """Attach a context whose baggage carries session.id and user.id."""
    ctx = baggage.set_baggage(USER_ID, USER, baggage.set_baggage(SESSION_ID, SESSION))
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def langfuse_scope() -> AbstractContextManager[object]:
    """Langfuse's public way to put a session and user on every span of a block."""
    return propagate_attributes(session_id=SESSION, user_id=USER)


@dataclass
class Config:
    """One measured setup: its own provider and exporter, and how a run binds the session."""

    key: str
    label: str
    processors: Callable[[NoOpExporter], list[SpanProcessor]]
    scope: Callable[[], AbstractContextManager[object]]
    stamps: bool = True
    shapes: dict[str, Shape] = field(default_factory=lambda: SHAPES)
    created: int = 0
    exporter: NoOpExporter = field(default_factory=NoOpExporter)
    provider: TracerProvider = field(init=False)
    tracer: Tracer = field(init=False)

    def __post_init__(self) -> None:
        self.provider = TracerProvider()
        for processor in self.processors(self.exporter):
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("bench.processor_overhead")


def build_configs() -> list[Config]:
    def batch(exporter: NoOpExporter) -> BatchSpanProcessor:
        return BatchSpanProcessor(exporter)

    def langfuse_processor(exporter: NoOpExporter) -> LangfuseSpanProcessor:
        # The exporter argument keeps it off the network: keys and base_url are never used.
        # Export every span, as the other configurations do (the default keeps LLM spans only).
        return LangfuseSpanProcessor(
            public_key="pk-lf-bench",
            secret_key="sk-lf-bench",
            base_url="http://127.0.0.1:9",
            span_exporter=exporter,
            should_export_span=lambda span: True,
        )

    return [
        Config("a", "no extra processor (floor)", lambda e: [batch(e)], nullcontext, stamps=False),
        Config(
            "a'",
            "no extra processor, span.set_attribute ×2 inline",
            lambda e: [batch(e)],
            nullcontext,
            shapes=STAMPED_SHAPES,
        ),
        Config(
            "b",
            "SessionSpanProcessor + bind_session",
            lambda e: [SessionSpanProcessor(), batch(e)],
            lambda: binding(CALLER),
        ),
        Config(
            "c",
            "BaggageSpanProcessor(ALLOW_ALL) + baggage",
            lambda e: [BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS), batch(e)],
            session_in_baggage,
        ),
        Config(
            "d",
            "Langfuse propagate_attributes + LangfuseSpanProcessor",
            lambda e: [langfuse_processor(e)],
            langfuse_scope,
        ),
        Config(
            "d'",
            "Langfuse propagate_attributes + attribute logic only",
            lambda e: [LangfuseAttributeLogic(), batch(e)],
            langfuse_scope,
        ),
    ]
