"""A firing's span, linked from the run it fired: an OpenTelemetry link, never a parent.

The Temporal worker (`service.temporal`) fires each run from a span of its own and sends that
span's context in the `Sessiontrace-Firing-Traceparent` header, in W3C `traceparent` form.
Not in `traceparent` itself: the service starts every request from an empty context and
removes propagation headers (`service.trace_boundary`), so no client can put two sessions in
one trace. A link joins no trace: the run keeps its own trace and session in Langfuse, and an
operations backend can still follow a firing to its run.

Only the internal runs route accepts the header, and only once the scheduler token has been
checked (`FiringLinkDep` depends on `SchedulerAuthDep`); anyone else's header is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.deps import SchedulerAuthDep

__all__ = [
    "FIRING_LINK",
    "FIRING_TRACEPARENT_HEADER",
    "FiringLinkDep",
    "firing_headers",
    "link_firing",
]

FIRING_TRACEPARENT_HEADER = "Sessiontrace-Firing-Traceparent"
# On the link: what the linked span is.
FIRING_LINK = "sessiontrace.link"
_FIRING = "firing"
_W3C = TraceContextTextMapPropagator()


def firing_headers(span: Span) -> dict[str, str]:
    """The header that carries `span`'s context to the run it fires; empty for a no-op span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    value = carrier.get("traceparent")
    return {FIRING_TRACEPARENT_HEADER: value} if value else {}


def link_firing(headers: Mapping[str, str]) -> SpanContext | None:
    """Link the current span to the firing span named in `headers`.

    Call only for a caller already authenticated as the scheduler. Returns the linked span
    context, or None when the header is absent or malformed (then nothing is linked).
    """
    value = headers.get(FIRING_TRACEPARENT_HEADER) or headers.get(
        FIRING_TRACEPARENT_HEADER.lower()
    )
    if not value:
        return None
    context = _W3C.extract({"traceparent": value})
    firing = trace.get_current_span(context).get_span_context()
    if not firing.is_valid:
        return None
    trace.get_current_span().add_link(firing, {FIRING_LINK: _FIRING})
    return firing


async def _link_authenticated_firing(_: SchedulerAuthDep, request: Request) -> None:
    link_firing(request.headers)


# Declared after SchedulerAuthDep on a route, it links once the token has passed.
FiringLinkDep = Annotated[None, Depends(_link_authenticated_firing)]
