"""Tracing setup: one TracerProvider with the session processor first, then export."""

from __future__ import annotations

import logging
import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from telemetry._environment import resolve_environment, validate_environment
from telemetry.attributes import DEPLOYMENT_ENVIRONMENT_NAME
from telemetry.exporter import DirectOTLPSpanExporter
from telemetry.processor import SessionSpanProcessor

# resolve_environment and validate_environment are re-exported for applications that check
# their settings before building the provider (the service does, to name its own setting).
__all__ = ["configure_tracing", "resolve_environment", "validate_environment"]

logger = logging.getLogger(__name__)

# Which encoder the default OTLP exporter uses: "direct" (telemetry.otlp_encoder, the
# default) or "sdk" (the SDK's own protobuf objects), should the direct one ever be in doubt.
OTLP_ENCODER_ENV = "SESSIONTRACE_OTLP_ENCODER"
_ENCODERS = ("direct", "sdk")


def configure_tracing(
    *,
    service_name: str,
    service_version: str | None = None,
    environment: str | None = None,
    exporter: SpanExporter | None = None,
    session_processor: SessionSpanProcessor | None = None,
    batch: bool = True,
) -> TracerProvider:
    """Build a TracerProvider that stamps sessions and exports over OTLP/HTTP.

    `service_name` and `service_version` are the application's defaults for the
    resource; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` override them, so
    operators can rename a deployment without a code change. `environment` becomes
    `deployment.environment.name`: it must be a valid Langfuse environment, and an
    `OTEL_RESOURCE_ATTRIBUTES` naming another environment is a ValueError, not an
    override (the application tags its traces with `environment` too).
    With no `exporter`, spans go to the OTLP/HTTP protobuf exporter, which reads
    `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, `..._HEADERS`, `..._TIMEOUT` itself
    and encodes as `SESSIONTRACE_OTLP_ENCODER` says (`direct`, the default, or `sdk`);
    the BatchSpanProcessor reads `OTEL_BSP_*`. With `OTEL_SDK_DISABLED=true` the
    provider hands out no-op tracers and nothing is exported.

    The caller owns the returned provider: flush and shut it down on exit.
    """
    if not service_name:
        raise ValueError("service_name must be a non-empty string")
    encoder = _otlp_encoder() if exporter is None else None
    # Checked even with OTEL_SDK_DISABLED: a contradictory configuration is refused before
    # anyone turns tracing back on and finds out.
    environment = resolve_environment(environment)
    defaults: dict[str, str] = {SERVICE_NAME: service_name}
    if service_version:
        defaults[SERVICE_VERSION] = service_version
    if environment is not None:
        defaults[DEPLOYMENT_ENVIRONMENT_NAME] = environment
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())

    provider = TracerProvider(resource=resource)
    # Processors run in the order added: the session must be on the span
    # before any exporting processor sees it.
    provider.add_span_processor(session_processor or SessionSpanProcessor())
    if _sdk_disabled():
        logger.info("OTEL_SDK_DISABLED is set: tracing is off, nothing is exported")
        return provider
    span_exporter = exporter
    if span_exporter is None:
        span_exporter = DirectOTLPSpanExporter() if encoder == "direct" else OTLPSpanExporter()
    provider.add_span_processor(
        BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
    )
    return provider


def _otlp_encoder() -> str:
    value = os.environ.get(OTLP_ENCODER_ENV, "").strip().lower() or "direct"
    if value not in _ENCODERS:
        raise ValueError(
            f"{OTLP_ENCODER_ENV}={value!r} is not one of {', '.join(_ENCODERS)}"
        )
    return value


def _sdk_disabled() -> bool:
    # The same test the SDK's TracerProvider applies to hand out no-op tracers.
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
