"""The SDK's OTLP/HTTP span exporter, with the cheaper encoder of `telemetry.otlp_encoder`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from telemetry.otlp_encoder import TraceRequestEncoder

__all__ = ["DirectOTLPSpanExporter"]

logger = logging.getLogger(__name__)

# What export() uses of the SDK exporter besides the encoder; a release that renames any of
# them sends this exporter back to the SDK's own export(), which still works, only slower.
_SDK_INTERNALS = ("_client", "_metrics", "_max_request_size", "_shutdown")


class DirectOTLPSpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter whose request bytes are written directly, not through protobuf objects.

    Everything else is the SDK's: endpoint, headers, timeout, compression and TLS from the
    same arguments and OTEL_EXPORTER_OTLP_* variables, the same retries, size limit and
    self-metrics. The bytes sent are the same, only cheaper to produce: encoding runs on the
    BatchSpanProcessor's thread and holds the GIL the request handlers need.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = TraceRequestEncoder()
        missing = [name for name in _SDK_INTERNALS if not hasattr(self, name)]
        self._direct = not missing
        if missing:
            logger.warning(
                "OTLPSpanExporter has no %s (opentelemetry-exporter-otlp-proto-http changed): "
                "spans are encoded by the SDK's slower encoder",
                ", ".join(missing),
            )

    @property
    def encodes_directly(self) -> bool:
        """False when this SDK release is not the one the direct path was written against."""
        return self._direct

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._direct:
            return super().export(spans)
        # The SDK's export() with its encode_spans(...).SerializePartialToString() swapped out.
        if self._shutdown:
            logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # telemetry never breaks the service
                logger.exception("Failed to encode span batch")
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(data):
                logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes", len(data), self._max_request_size,
                )
                result.error = ValueError(
                    f"span batch of {len(data)} bytes exceeds max_request_size "
                    f"{self._max_request_size}"
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
