"""Zero-code setup: the `sessiontrace` configurator that `opentelemetry-instrument` runs.

`OTEL_PYTHON_CONFIGURATOR=sessiontrace opentelemetry-instrument uvicorn app:app` makes the
global TracerProvider the one `configure_tracing` builds (SessionSpanProcessor first, then
OTLP/HTTP export as the `OTEL_*` variables say) before the instrumentations load. It needs
the SDK only (its configurator base class), not opentelemetry-instrumentation.
"""

from __future__ import annotations

import logging
import os

from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.sdk._configuration import _BaseConfigurator
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)

from sessiontrace._setup import configure_tracing

__all__ = ["SessionTraceConfigurator"]

logger = logging.getLogger(__name__)

# The resource's service.name when OTEL_SERVICE_NAME does not say, as the SDK's own.
DEFAULT_SERVICE_NAME = "unknown_service"
# OTEL_TRACES_EXPORTER values that mean the exporter configure_tracing builds: OTLP/HTTP
# protobuf, the one transport Langfuse takes.
_OTLP_EXPORTERS = ("otlp", "otlp_proto_http")
_PROTOCOL = "http/protobuf"


class SessionTraceConfigurator(_BaseConfigurator):
    """Builds the global TracerProvider with `configure_tracing(set_global=True)`.

    Tracing only: unlike the SDK's configurator it sets up no metrics or logs, and a
    `OTEL_METRICS_EXPORTER` or `OTEL_LOGS_EXPORTER` naming an exporter is logged as not
    applied. `OTEL_TRACES_EXPORTER` may be unset, `otlp` or `otlp_proto_http`; anything
    else (`console`, `none`, gRPC) is a ValueError naming it, as is an OTLP protocol other
    than `http/protobuf`: turn tracing off with `OTEL_SDK_DISABLED=true`.
    """

    def _configure(self, **kwargs: object) -> None:
        _check_exporter_settings()
        configure_tracing(service_name=DEFAULT_SERVICE_NAME, set_global=True)
        for variable in (OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER):
            value = os.environ.get(variable, "").strip()
            if value and value.lower() != "none":
                logger.warning(
                    "%s=%s is not applied: the sessiontrace configurator sets up tracing only",
                    variable, value,
                )


def _check_exporter_settings() -> None:
    exporters = os.environ.get(OTEL_TRACES_EXPORTER, "").strip()
    names = [name.strip().lower() for name in exporters.split(",") if name.strip()]
    if any(name not in _OTLP_EXPORTERS for name in names):
        raise ValueError(
            f"{OTEL_TRACES_EXPORTER}={exporters!r}: the sessiontrace configurator exports over "
            f"OTLP/HTTP only (unset, {' or '.join(_OTLP_EXPORTERS)}); set OTEL_SDK_DISABLED=true "
            "to turn tracing off"
        )
    for variable in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
        protocol = os.environ.get(variable, "").strip()
        if protocol:
            if protocol != _PROTOCOL:
                raise ValueError(
                    f"{variable}={protocol!r}: the sessiontrace configurator exports "
                    f"{_PROTOCOL} only (Langfuse's OTLP endpoint takes no gRPC)"
                )
            break  # the traces-specific variable wins, as in the SDK
