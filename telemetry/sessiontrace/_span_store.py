"""Attributes validated once, written straight into an SDK span's own dict.

The session's attributes go on every span, and its root attributes on the span open when
it is bound. The SDK's `set_attributes` validates each value again, takes two locks and
copies, about 1.8 us an attribute (bench/processor_overhead.py), while these values were
validated once: the session's when it was built, an inherited parent's by the SDK. The
fast path writes the span's attribute dict directly, only when the SDK's own rules would
store the same thing: no value-length limit, or one that `longest` (the longest value;
None: unknown) does not reach, and room under the count limit. Anything else, and any span
that is not the SDK's, takes the public API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span

__all__ = ["longest_value", "stamp_open_span", "stamp_starting_span"]


def stamp_starting_span(span: Span, items: Mapping[str, Any], longest: int | None) -> None:
    """`span.set_attributes(items)` for a span in `on_start`, not yet seen by any other thread."""
    # _write, written out: this runs on every span.
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is BoundedAttributes and (
        attributes.max_value_len is None
        or (longest is not None and longest <= attributes.max_value_len)
    ):
        store = getattr(attributes, "_dict", None)
        if type(store) is dict and (
            attributes.maxlen is None or len(store) + len(items) <= attributes.maxlen
        ):
            store.update(items)
            return
    span.set_attributes(items)


def stamp_open_span(span: trace.Span, items: Mapping[str, Any], longest: int | None) -> None:
    """`span.set_attributes(items)` for a span already started, which may be ending meanwhile.

    Written under the span's own lock, which the SDK's `set_attributes` and `end` take.
    """
    lock = getattr(span, "_lock", None) if isinstance(span, Span) else None
    if lock is not None:
        with lock:
            if span.is_recording() and _write(span, items, longest):
                return
    span.set_attributes(items)


def longest_value(items: Mapping[str, str | tuple[str, ...]]) -> int:
    """The longest of the values (a tuple's items count one by one); 0 when there are none."""
    lengths = [len(part) for value in items.values()
               for part in ((value,) if isinstance(value, str) else value)]
    return max(lengths, default=0)


def _write(span: trace.Span, items: Mapping[str, Any], longest: int | None) -> bool:
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is BoundedAttributes and (
        attributes.max_value_len is None
        or (longest is not None and longest <= attributes.max_value_len)
    ):
        store = getattr(attributes, "_dict", None)
        if type(store) is dict and (
            attributes.maxlen is None or len(store) + len(items) <= attributes.maxlen
        ):
            store.update(items)
            return True
    return False
