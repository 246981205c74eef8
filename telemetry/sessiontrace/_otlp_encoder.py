"""OTLP trace requests encoded straight to protobuf bytes, without building message objects.

The SDK's encoder builds a protobuf object per span, attribute and value, then serialises
them: about 50 µs a span of this service, on the export thread, holding the GIL the
request handlers need. Writing the wire format directly, and reusing the bytes of attribute
pairs that repeat on every span (session, user, trace name, HTTP method, ...), is about
4.5 times cheaper (`bench/encoder_overhead.py`). The output is byte for byte what
`encode_spans(spans).SerializePartialToString()` gives (tests/unit/test_otlp_encoder.py);
field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from struct import Struct
from typing import Any, Generic, TypeVar

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext

__all__ = ["TraceRequestEncoder"]

logger = logging.getLogger(__name__)

_K = TypeVar("_K")
_V = TypeVar("_V")

_FIXED64 = Struct("<Q").pack
_DOUBLE = Struct("<d").pack
_FIXED32 = Struct("<I").pack
_ONE_BYTE = tuple(bytes((n,)) for n in range(128))
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# SpanFlags: the context-has-is-remote bit, plus is-remote for a remote parent.
_FLAGS_LOCAL = _FIXED32(0x100)
_FLAGS_REMOTE = _FIXED32(0x300)
# SpanKind values are the SDK's enum value plus one (0 is UNSPECIFIED on the wire).
_KIND_FIELD = tuple(b"\x30" + _ONE_BYTE[value + 1] for value in range(5))

# Encoded attribute pairs worth keeping: values short enough to repeat across spans.
_CACHED_VALUE_MAX_CHARS = 128
_CACHE_MAX_ENTRIES = 4096


def _release_gil() -> None:
    time.sleep(0)  # gives up the GIL: a thread waiting for it runs before this one goes on


class TraceRequestEncoder:
    """Encodes ExportTraceServiceRequest bytes; one per exporter, as it keeps a cache.

    With `reuse_pairs` (the default), the bytes of an attribute pair whose value is a short
    string, an int or a tuple of short strings are kept (at most 4,096, then started afresh)
    and reused when the same pair comes again: a third of the cost on this service's spans.

    With `pause_every=N`, `pause()` (by default, giving up the GIL) is called after every N
    spans. An exporter's thread encodes a whole batch at once: 512 spans hold the GIL for
    ~8 ms, which a request handler waiting for it adds to its latency (Python hands the GIL
    over only every 5 ms). Pausing bounds that wait to N spans' worth.
    """

    def __init__(
        self,
        *,
        reuse_pairs: bool = True,
        pause_every: int | None = None,
        pause: Callable[[], None] = _release_gil,
    ) -> None:
        if pause_every is not None and pause_every < 1:
            raise ValueError(f"pause_every must be at least 1, got {pause_every}")
        self._reuse_pairs = reuse_pairs
        self._pause_every = pause_every
        self._pause = pause
        self._keys: dict[str, bytes] = {}
        self._pairs: dict[tuple[bytes, str, Any], bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """An ExportTraceServiceRequest holding `spans`, grouped by resource then scope."""
        resources = _Groups[Resource, "_Groups[InstrumentationScope | None, list[bytes]]"]()
        pause_every = self._pause_every or 0
        for index, span in enumerate(spans, 1):
            scopes = resources.get(span.resource, _Groups)
            encoded = _field(b"\x12", _span(self, span))
            scopes.get(span.instrumentation_scope, list).append(encoded)
            if pause_every and not index % pause_every:
                self._pause()

        request = []
        for resource, scopes in resources.items():
            body = [_field(b"\x0a", self.attributes(b"\x0a", resource.attributes))]
            for scope, encoded_spans in scopes.items():
                scope_spans = [_scope(self, scope), *encoded_spans]
                if scope is not None and scope.schema_url:
                    scope_spans.append(_string(b"\x1a", scope.schema_url))
                body.append(_field(b"\x12", b"".join(scope_spans)))
            if resource.schema_url:
                body.append(_string(b"\x1a", resource.schema_url))
            request.append(_field(b"\x0a", b"".join(body)))
        return b"".join(request)

    def attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        """Repeated KeyValue under `tag`; a pair that cannot be encoded is logged and left out."""
        if not attributes:
            return b""
        parts = []
        pairs = self._pairs
        reuse = self._reuse_pairs
        # This loop runs for every attribute of every span (16 a span here): the common
        # cases, a cached pair and a string, are written out here rather than called.
        for key, value in attributes.items():
            kind = type(value)
            if not reuse:
                cacheable = False
            elif kind is str:
                cacheable = len(value) <= _CACHED_VALUE_MAX_CHARS
            else:
                cacheable = kind is int or (kind is tuple and _cacheable_tuple(value))
            if cacheable:
                cached = pairs.get((tag, key, value))
                if cached is not None:
                    parts.append(cached)
                    continue
            try:
                if isinstance(value, str):  # an AnyValue's string_value (field 1)
                    text = value.encode("utf-8")
                    size = len(text)
                    any_value = b"\x0a" + (_ONE_BYTE[size] if size < 128 else _varint(size)) + text
                else:
                    any_value = _any_value(value)
                size = len(any_value)
                pair = self._key(key) + b"\x12" + (
                    _ONE_BYTE[size] if size < 128 else _varint(size)) + any_value
                size = len(pair)
                encoded = tag + (_ONE_BYTE[size] if size < 128 else _varint(size)) + pair
            except Exception:  # the SDK's encoder logs and skips such a pair, too
                logger.exception("Failed to encode attribute %s", key)
                continue
            if cacheable:
                if len(pairs) >= _CACHE_MAX_ENTRIES:
                    pairs.clear()
                pairs[(tag, key, value)] = encoded
            parts.append(encoded)
        return b"".join(parts)

    def _key(self, key: str) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = _string(b"\x0a", key)
            if len(self._keys) < _CACHE_MAX_ENTRIES:
                self._keys[key] = encoded
        return encoded


class _Groups(Generic[_K, _V]):
    """Values by key, in first-seen order, where equal keys share a value (as in a dict).

    Spans of one provider share one Resource object and, per tracer, one scope object, so
    the lookup is by identity first; equality only decides for a new object, which spares
    hashing a Resource (a JSON dump of its attributes) once per span.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[_K, _V]] = {}
        self._groups: list[tuple[_K, _V]] = []

    def get(self, key: _K, new: Callable[[], _V]) -> _V:
        found = self._by_id.get(id(key))
        if found is None:
            found = next((group for group in self._groups if group[0] == key), None)
            if found is None:
                found = (key, new())
                self._groups.append(found)
            self._by_id[id(key)] = found
        return found[1]

    def items(self) -> list[tuple[_K, _V]]:
        return self._groups


def _span(encoder: TraceRequestEncoder, span: ReadableSpan) -> bytes:
    context = span.context
    if context is None:
        raise ValueError(f"span {span.name!r} has no span context")
    parent = span.parent
    out = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"),
           b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        out.append(_string(b"\x1a", _trace_state(context)))
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    name = span.name
    if name:
        out.append(_string(b"\x2a", name))
    # `_value_`, not `value`: an Enum's value is a Python-level property.
    out.append(_KIND_FIELD[span.kind._value_])
    start_time, end_time = span.start_time, span.end_time
    if start_time:
        out.append(b"\x39" + _FIXED64(start_time))
    if end_time:
        out.append(b"\x41" + _FIXED64(end_time))
    recorded = _Recorded(span)
    out.append(encoder.attributes(b"\x4a", recorded.attributes))
    if recorded.dropped_attributes:
        out.append(b"\x50" + _varint(recorded.dropped_attributes))
    for event in recorded.events:
        encoded = [b"\x09" + _FIXED64(event.timestamp)]
        if event.name:
            encoded.append(_string(b"\x12", event.name))
        encoded.append(encoder.attributes(b"\x1a", event.attributes))
        if event.dropped_attributes:
            encoded.append(b"\x20" + _varint(event.dropped_attributes))
        out.append(_field(b"\x5a", b"".join(encoded)))
    if recorded.dropped_events:
        out.append(b"\x60" + _varint(recorded.dropped_events))
    for link in recorded.links:
        linked = link.context
        encoded = [b"\x0a\x10", linked.trace_id.to_bytes(16, "big"),
                   b"\x12\x08", linked.span_id.to_bytes(8, "big"),
                   encoder.attributes(b"\x22", link.attributes)]
        if link.dropped_attributes:
            encoded.append(b"\x28" + _varint(link.dropped_attributes))
        encoded.append(b"\x35" + (_FLAGS_REMOTE if linked.is_remote else _FLAGS_LOCAL))
        out.append(_field(b"\x6a", b"".join(encoded)))
    if recorded.dropped_links:
        out.append(b"\x70" + _varint(recorded.dropped_links))
    out.append(_field(b"\x7a", _status(span)))
    out.append(b"\x85\x01" + (_FLAGS_REMOTE if parent is not None and parent.is_remote
                               else _FLAGS_LOCAL))
    return b"".join(out)


class _Recorded:
    """A span's attributes, events and links, with their dropped counts.

    From the SDK's own containers when they are there: the public properties are a Python
    call each, and `events` and `links` copy into a tuple under a lock (and most spans
    have none). The span has ended, so nothing writes to them any more. Any other span
    goes through the public properties.
    """

    __slots__ = ("attributes", "dropped_attributes", "events", "dropped_events", "links",
                 "dropped_links")

    def __init__(self, span: ReadableSpan) -> None:
        bounded = getattr(span, "_attributes", None)
        inner = getattr(bounded, "_dict", None)
        if type(bounded) is BoundedAttributes and type(inner) is dict:
            # Its items() iterate in C; the public read-only proxy's go through the
            # abstract Mapping methods, a Python call per key.
            self.attributes: Mapping[str, Any] | None = inner
            self.dropped_attributes: int = bounded.dropped
        else:
            self.attributes = span.attributes
            self.dropped_attributes = span.dropped_attributes
        events = getattr(span, "_events", None)
        links = getattr(span, "_links", None)
        if type(events) is BoundedList and type(links) is BoundedList:
            # Their deque, as the list's own __iter__ would copy it.
            self.events: Iterable[Event] = getattr(events, "_dq", events)
            self.dropped_events: int = events.dropped
            self.links: Iterable[Link] = getattr(links, "_dq", links)
            self.dropped_links: int = links.dropped
        else:
            self.events, self.dropped_events = span.events, span.dropped_events
            self.links, self.dropped_links = span.links, span.dropped_links


def _status(span: ReadableSpan) -> bytes:
    status = span.status
    encoded = b""
    if status.description:
        encoded += _string(b"\x12", status.description)
    code = status.status_code._value_
    if code:
        encoded += b"\x18" + _varint(code)
    return encoded


def _trace_state(context: SpanContext) -> str:
    return ",".join(f"{key}={value}" for key, value in context.trace_state.items())


def _scope(encoder: TraceRequestEncoder, scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b"\x0a\x00"
    encoded = b""
    if scope.name:
        encoded += _string(b"\x0a", scope.name)
    if scope.version:
        encoded += _string(b"\x12", scope.version)
    encoded += encoder.attributes(b"\x1a", scope.attributes)
    return _field(b"\x0a", encoded)


def _cacheable_tuple(value: tuple[Any, ...]) -> bool:
    # Cached pairs hold only types whose equality implies the same bytes (1 == 1.0 == True):
    # exact strs and ints (TraceRequestEncoder.attributes), and tuples of short strs.
    return len(value) <= 16 and all(
        type(item) is str and len(item) <= _CACHED_VALUE_MAX_CHARS for item in value
    )


def _any_value(value: Any) -> bytes:
    """An AnyValue's fields, in the order the SDK's encoder tests the value's type."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _string(b"\x0a", value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit in int64")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", _repeated(b"\x0a", (_any_value(item) for item in value)))
    if isinstance(value, Mapping):
        pairs = (_string(b"\x0a", str(key)) + _field(b"\x12", _any_value(item))
                 for key, item in value.items())
        return _field(b"\x32", _repeated(b"\x0a", pairs))
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


def _repeated(tag: bytes, payloads: Iterable[bytes]) -> bytes:
    return b"".join(_field(tag, payload) for payload in payloads)


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8"))


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    size = len(payload)
    return tag + (_ONE_BYTE[size] if size < 128 else _varint(size)) + payload


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64  # int64 on the wire: ten bytes of two's complement
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
