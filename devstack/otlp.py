"""Decode an OTLP/HTTP trace export into flat span records, as Langfuse validates it.

Both encodings Langfuse accepts are handled: protobuf (`ExportTraceServiceRequest`) and
OTLP/JSON, whose trace and span ids are hex strings (not the base64 of the generic protobuf
JSON mapping). Validation is all or nothing: one span with a missing or malformed id rejects
the whole request, because Langfuse answers such a request with a 400 and stores none of it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["InvalidExport", "SpanRecord", "decode_json", "decode_protobuf"]

_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_HEX = re.compile(r"[0-9a-fA-F]*")


class InvalidExport(ValueError):
    """The request body is not a valid trace export; Langfuse answers 400."""


@dataclass(frozen=True)
class SpanRecord:
    """One received span, ids as lowercase hex, attributes as plain JSON values."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    scope_name: str


def decode_protobuf(body: bytes) -> list[SpanRecord]:
    """Span records of a protobuf `ExportTraceServiceRequest`."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidExport(f"body is not an ExportTraceServiceRequest: {exc}") from exc
    return _records(request)


def decode_json(body: bytes) -> list[SpanRecord]:
    """Span records of an OTLP/JSON export (hex ids)."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidExport(f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidExport("body must be a JSON object with resourceSpans")
    for resource_spans in _list(document, "resourceSpans"):
        for scope_spans in _list(resource_spans, "scopeSpans"):
            for span in _list(scope_spans, "spans"):
                _hex_to_base64(span, "traceId", _TRACE_ID_BYTES, required=True)
                _hex_to_base64(span, "spanId", _SPAN_ID_BYTES, required=True)
                _hex_to_base64(span, "parentSpanId", _SPAN_ID_BYTES, required=False)
                for link in _list(span, "links"):
                    _hex_to_base64(link, "traceId", _TRACE_ID_BYTES, required=True)
                    _hex_to_base64(link, "spanId", _SPAN_ID_BYTES, required=True)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InvalidExport(f"body is not OTLP/JSON: {exc}") from exc
    return _records(request)


def _list(parent: Any, key: str) -> list[Any]:
    value = parent.get(key, []) if isinstance(parent, dict) else None
    if not isinstance(value, list):
        raise InvalidExport(f"{key} must be a list")
    return value


def _hex_to_base64(obj: Any, key: str, size: int, *, required: bool) -> None:
    # The generic protobuf JSON parser wants base64 bytes; OTLP/JSON carries hex. Convert here
    # so that both encodings share one validation path in _records.
    if not isinstance(obj, dict):
        raise InvalidExport("span must be a JSON object")
    value = obj.get(key)
    if value in (None, "") and not required:
        return
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise InvalidExport(f"{key} must be {2 * size} hex characters, got {value!r}")
    obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _records(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    records = []
    for resource_spans in request.resource_spans:
        resource_attributes = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        trace_id=_id(span.trace_id, _TRACE_ID_BYTES, "trace_id", span.name),
                        span_id=_id(span.span_id, _SPAN_ID_BYTES, "span_id", span.name),
                        parent_span_id=(
                            _id(span.parent_span_id, _SPAN_ID_BYTES, "parent_span_id", span.name)
                            if span.parent_span_id
                            else None
                        ),
                        name=span.name,
                        kind=span.kind,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        status_code=span.status.code,
                        attributes=_attributes(span.attributes),
                        resource_attributes=resource_attributes,
                        scope_name=scope_spans.scope.name,
                    )
                )
    return records


def _id(raw: bytes, size: int, field: str, span_name: str) -> str:
    if len(raw) != size or not any(raw):
        raise InvalidExport(f"span {span_name!r}: {field} must be {size} non-zero bytes")
    return raw.hex()


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None
