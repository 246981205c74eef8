"""The SDK's OTLP/HTTP span exporter, with the cheaper encoder of `sessiontrace._otlp_encoder`."""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from sessiontrace._otlp_encoder import TraceRequestEncoder

__all__ = ["DirectOTLPSpanExporter", "SendOutcome"]

logger = logging.getLogger(__name__)

# What export() uses of the SDK exporter besides the encoder; a release that renames any of
# them sends this exporter back to the SDK's own export(), which still works, only slower.
_SDK_INTERNALS = ("_client", "_metrics", "_max_request_size", "_shutdown")

# The answers the SDK's HTTP client retries (opentelemetry.exporter.otlp.common.http): the
# collector may take the same request later. Any other answer it would refuse again.
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# Spans encoded between two hand-overs of the GIL (~15 µs each: about 0.5 ms).
_PAUSE_EVERY_SPANS = 32


class SendOutcome(enum.Enum):
    """What became of one OTLP request, after the SDK's own retries."""

    DELIVERED = "delivered"
    # No answer (refused, reset, timed out, shut down) or 429/502/503/504: worth sending again.
    RETRYABLE = "retryable"
    # Any other answer (400, 401, 413, 500, ...): sending the same bytes again cannot help.
    REFUSED = "refused"


class DirectOTLPSpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter whose request bytes are written directly, not through protobuf objects.

    Everything else is the SDK's: endpoint, headers, timeout, compression and TLS from the
    same arguments and OTEL_EXPORTER_OTLP_* variables, the same retries, size limit and
    self-metrics. The bytes sent are the same, only cheaper to produce: encoding runs on the
    BatchSpanProcessor's thread and holds the GIL the request handlers need. With
    `sdk_encoder=True` they are produced by the SDK's protobuf objects instead.
    """

    def __init__(self, *args: Any, sdk_encoder: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Request handlers get the GIL between chunks of a batch, not after all of it.
        self._encoder = TraceRequestEncoder(pause_every=_PAUSE_EVERY_SPANS)
        self._sdk_encoder = sdk_encoder
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
        data = self.encode_request(spans)
        if data is None:
            return SpanExportResult.FAILURE
        if self.send_request(data, span_count=len(spans)) is SendOutcome.DELIVERED:
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def encode_request(self, spans: Sequence[ReadableSpan]) -> bytes | None:
        """The request body for `spans`; None (logged) when it cannot be encoded or is too big.

        Only when `encodes_directly`: the SDK internals are needed to send it.
        """
        error: Exception
        try:
            if self._sdk_encoder:
                data: bytes = encode_spans(spans).SerializePartialToString()
            else:
                data = self._encoder.encode(spans)
        except Exception as exc:  # telemetry never breaks the service
            logger.exception("Failed to encode span batch")
            error = exc
        else:
            if not 0 < self._max_request_size < len(data):
                return data
            logger.warning(
                "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                "%d bytes", len(data), self._max_request_size,
            )
            error = ValueError(
                f"span batch of {len(data)} bytes exceeds max_request_size "
                f"{self._max_request_size}"
            )
        with self._metrics.export_operation(len(spans)) as result:
            result.error = error
        return None

    def send_request(self, data: bytes, *, span_count: int) -> SendOutcome:
        """POST one encoded request with the SDK's client (its retries, timeout, metrics)."""
        with self._metrics.export_operation(span_count) as result:
            sent = self._client.export(data)
            if sent.success:
                return SendOutcome.DELIVERED
            result.error = sent.error
            if sent.status_code is not None:
                result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
        if sent.status_code is None or sent.status_code in _RETRYABLE_STATUS:
            return SendOutcome.RETRYABLE
        return SendOutcome.REFUSED
