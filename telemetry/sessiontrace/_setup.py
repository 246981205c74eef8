"""Tracing setup: one TracerProvider with the session processor first, then export."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_QUEUE_SIZE, OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from sessiontrace._environment import resolve_environment, validate_environment
from sessiontrace._spool import (
    DEFAULT_SPOOL_MAX_BYTES,
    SPOOL_DIR_ENV,
    SPOOL_MAX_BYTES_ENV,
    SpanSpool,
)
from sessiontrace._spooling import SpoolingSpanExporter
from sessiontrace.attributes import DEPLOYMENT_ENVIRONMENT_NAME
from sessiontrace._exporter import DirectOTLPSpanExporter
from sessiontrace._content import CONTENT_ATTRIBUTE_CAP
from sessiontrace._processor import SessionSpanProcessor

# resolve_environment and validate_environment are re-exported for applications that check
# their settings before building the provider (the service does, to name its own setting).
__all__ = ["configure_tracing", "resolve_environment", "validate_environment"]

logger = logging.getLogger(__name__)

# Which encoder the default OTLP exporter uses: "direct" (sessiontrace._otlp_encoder, the
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
    spool: SpanSpool | None = None,
    max_queue_size: int | None = None,
    set_global: bool = False,
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
    the BatchSpanProcessor reads `OTEL_BSP_*`; `max_queue_size` is the application's
    default for its queue, which `OTEL_BSP_MAX_QUEUE_SIZE` overrides. With
    `OTEL_SDK_DISABLED=true` the provider hands out no-op tracers and nothing is exported.

    Batches the collector cannot take yet wait in `spool` (SpoolingSpanExporter) and are
    sent once it can; without one, in `SESSIONTRACE_SPOOL_DIR` when that is set, within
    `SESSIONTRACE_SPOOL_MAX_BYTES` (default 256 MiB; 0: no spool). The spool works with the
    default exporter only and is closed with the provider.

    The caller owns the returned provider: flush and shut it down on exit.

    With `set_global=True` it also becomes OpenTelemetry's global provider, the one
    instrumentations and `trace.get_tracer()` use unless handed another. OpenTelemetry takes
    one global provider per process: when an SDK TracerProvider is global already, none is
    built and that one is returned, unchanged if it has a SessionSpanProcessor (the
    `sessiontrace` configurator's, or an earlier call's), else with `session_processor` (or
    a new one) added after its own processors. That order is safe for export, since the
    processor stamps in `on_start` and the SDK's exporting processors take spans in
    `on_end`, but that provider keeps its own resource, limits and exporters: the arguments
    for them do not apply (a warning says so) and `spool` is closed. A global provider that
    is not the SDK's is a ValueError.
    """
    if not service_name:
        raise ValueError("service_name must be a non-empty string")
    if spool is not None and exporter is not None:
        raise ValueError("spool= works with the default OTLP exporter only, not with exporter=")
    encoder = _otlp_encoder() if exporter is None else None
    # Checked even with OTEL_SDK_DISABLED: a contradictory configuration is refused before
    # anyone turns tracing back on and finds out.
    environment = resolve_environment(environment)
    if set_global:
        existing = _global_sdk_provider()
        if existing is not None:
            _adopt(existing, session_processor, exporter=exporter, spool=spool)
            return existing
    defaults: dict[str, str] = {SERVICE_NAME: service_name}
    if service_version:
        defaults[SERVICE_VERSION] = service_version
    if environment is not None:
        defaults[DEPLOYMENT_ENVIRONMENT_NAME] = environment
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())

    provider = TracerProvider(resource=resource, span_limits=_span_limits())
    # Processors run in the order added: the session must be on the span
    # before any exporting processor sees it.
    provider.add_span_processor(session_processor or SessionSpanProcessor())
    if _sdk_disabled():
        logger.info("OTEL_SDK_DISABLED is set: tracing is off, nothing is exported")
        if spool is not None:
            spool.close()
        return _made_global(provider) if set_global else provider
    span_exporter = exporter or _otlp_exporter(
        sdk_encoder=encoder == "sdk", spool=spool or _spool_from_environment()
    )
    if batch:
        # Left to the SDK when the variable is set, so it is parsed and checked as documented.
        queue_size = max_queue_size
        if os.environ.get(OTEL_BSP_MAX_QUEUE_SIZE, "").strip():
            queue_size = None
        provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=queue_size))
    else:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return _made_global(provider) if set_global else provider


def _global_sdk_provider() -> TracerProvider | None:
    """The global provider when it is an SDK one; None while none is set."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if isinstance(current, trace.ProxyTracerProvider):
        return None
    raise ValueError(
        f"configure_tracing(set_global=True): the global TracerProvider is a "
        f"{type(current).__module__}.{type(current).__qualname__}, not the OpenTelemetry "
        "SDK's, and OpenTelemetry allows no second one: SessionSpanProcessor cannot be "
        "added to it"
    )


def _adopt(
    provider: TracerProvider,
    session_processor: SessionSpanProcessor | None,
    *,
    exporter: SpanExporter | None,
    spool: SpanSpool | None,
) -> None:
    """Make the global SDK provider someone else built stamp sessions too."""
    if spool is not None:
        spool.close()
    # The SDK has no public list of a provider's processors; without it, a second
    # SessionSpanProcessor would only stamp the same values twice.
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", ())
    stamping = [p for p in processors if isinstance(p, SessionSpanProcessor)]
    if stamping:
        if session_processor is not None and session_processor not in stamping:
            logger.warning(
                "configure_tracing(set_global=True): the global TracerProvider already has "
                "its own SessionSpanProcessor; the session_processor given is not used, and "
                "its counts stay at zero"
            )
        logger.info(
            "configure_tracing(set_global=True): the global TracerProvider already stamps "
            "sessions (the sessiontrace configurator's, or an earlier call's); using it as it is"
        )
        return
    provider.add_span_processor(session_processor or SessionSpanProcessor())
    unused = ["service_name", "service_version", "environment", "batch", "max_queue_size"]
    given = (("exporter", exporter), ("spool", spool))
    unused += [name for name, value in given if value is not None]
    logger.warning(
        "configure_tracing(set_global=True): a global TracerProvider was set already (by "
        "opentelemetry-instrument's configurator?); SessionSpanProcessor was added after its "
        "processors, and it keeps its own resource, limits and exporters: %s do not apply. "
        "Under opentelemetry-instrument, set OTEL_PYTHON_CONFIGURATOR=sessiontrace instead",
        ", ".join(unused),
    )


def _made_global(provider: TracerProvider) -> TracerProvider:
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        # Another thread set one between the check and now; it stays, without our processor.
        provider.shutdown()
        raise RuntimeError(
            "configure_tracing(set_global=True): another TracerProvider was made global "
            "meanwhile; call configure_tracing before anything else sets one"
        )
    return provider


def _otlp_exporter(*, sdk_encoder: bool, spool: SpanSpool | None) -> SpanExporter:
    exporter = DirectOTLPSpanExporter(sdk_encoder=sdk_encoder)
    if spool is None:
        return exporter
    if not exporter.encodes_directly:
        logger.warning(
            "span spool %s unused: this OpenTelemetry SDK lacks what it needs, so batches the "
            "collector cannot take are dropped", spool.directory,
        )
        spool.close()
        return exporter
    return SpoolingSpanExporter(exporter, spool)


def _spool_from_environment() -> SpanSpool | None:
    directory = os.environ.get(SPOOL_DIR_ENV, "").strip()
    text = os.environ.get(SPOOL_MAX_BYTES_ENV, "").strip()
    try:
        max_bytes = int(text) if text else DEFAULT_SPOOL_MAX_BYTES
    except ValueError:
        max_bytes = -1
    if max_bytes < 0:
        raise ValueError(
            f"{SPOOL_MAX_BYTES_ENV}={text!r} must be a whole number of bytes (0: no spool)"
        )
    if not directory or max_bytes == 0:
        return None
    return SpanSpool(directory, max_bytes=max_bytes)


def _otlp_encoder() -> str:
    value = os.environ.get(OTLP_ENCODER_ENV, "").strip().lower() or "direct"
    if value not in _ENCODERS:
        raise ValueError(
            f"{OTLP_ENCODER_ENV}={value!r} is not one of {', '.join(_ENCODERS)}"
        )
    return value


def _span_limits() -> SpanLimits:
    # The SDK reads OTEL_(SPAN_)ATTRIBUTE_VALUE_LENGTH_LIMIT and, unset, cuts nothing. No
    # default is set here: a span-wide limit applies to the payload attributes too, which
    # encode_payload caps in bytes (up to CONTENT_ATTRIBUTE_CAP), and it takes every span off
    # SessionSpanProcessor's fast path (+7 us a span). Request details recorded by an
    # instrumentation are the application's to bound, e.g. in its server request hook.
    limits = SpanLimits()
    limit = limits.max_span_attribute_length
    if limit is not None and limit < CONTENT_ATTRIBUTE_CAP:
        logger.warning(
            "the span attribute value length limit is %d characters (OTEL_SPAN_ATTRIBUTE_"
            "VALUE_LENGTH_LIMIT or OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT): payload attributes "
            "longer than that (capped at %d bytes otherwise) are cut, no longer valid JSON",
            limit, CONTENT_ATTRIBUTE_CAP,
        )
    return limits


def _sdk_disabled() -> bool:
    # The same test the SDK's TracerProvider applies to hand out no-op tracers.
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
