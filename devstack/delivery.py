"""Wait until the spans the service sent have gone through the collector, with a deadline.

The collector's own metrics say what it accepted from the service, what its Langfuse pipeline
kept out (spans of requests that started no run) and what the destination took; the development
sink says which spans of which traces it holds. A trace is complete at
the sink when its root span (the service's server span, which ends last and so is exported
last) is there and every span's parent is there too.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from devstack.processes import wait_until
from devstack.stack import CollectorHandle, SinkHandle

__all__ = [
    "LANGFUSE_EXPORTER",
    "LANGFUSE_RUN_FILTER",
    "OPS_EXPORTER",
    "CollectorCounters",
    "DeliveryError",
    "collector_counters",
    "spans_of_traces",
    "trace_complete",
    "wait_for_export",
    "wait_for_sink",
]


# Component ids in otel-collector.yaml.
LANGFUSE_EXPORTER = "otlp_http/langfuse"
LANGFUSE_RUN_FILTER = "filter/langfuse_runs"
OPS_EXPORTER = "otlp_http/ops"


class DeliveryError(AssertionError):
    """The collector dropped data: waiting longer cannot help."""


@dataclass(frozen=True)
class CollectorCounters:
    """Span counts from the collector's metrics endpoint (summed over all series)."""

    accepted: int  # received from the SDK
    sent: int  # taken by Langfuse (2xx)
    failed: int  # given up on by the Langfuse exporter
    queued: int  # bytes still in the Langfuse sending queue
    filtered: int = 0  # kept out of Langfuse: spans of requests that started no run

    @property
    def drained(self) -> bool:
        """Everything accepted has been sent to Langfuse or kept out, and nothing waits."""
        return (
            self.accepted > 0
            and self.sent + self.filtered >= self.accepted
            and self.queued == 0
        )


def collector_counters(metrics_url: str, *, exporter: str | None = None) -> CollectorCounters:
    """Read the collector's span counters from its Prometheus endpoint.

    `exporter`: the Langfuse pipeline's exporter, when a config overlay replaced it (the
    benchmarks' `debug`); default `otlp_http/langfuse`.
    """
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    series = _metric_series(text)

    def total(name: str, **labels: str) -> int:
        return int(sum(
            value for found, found_labels, value in series
            if found in (name, name + "_total")
            and all(found_labels.get(key) == wanted for key, wanted in labels.items())
        ))

    # Only the Langfuse pipeline's exporter and filter: the optional ops pipeline sends (or
    # drops) its own copy of every span, which says nothing about Langfuse.
    langfuse = {"exporter": exporter or LANGFUSE_EXPORTER}
    return CollectorCounters(
        accepted=total("otelcol_receiver_accepted_spans"),
        sent=total("otelcol_exporter_sent_spans", **langfuse),
        failed=total("otelcol_exporter_send_failed_spans", **langfuse),
        queued=total("otelcol_exporter_queue_size", **langfuse),
        filtered=total("otelcol_processor_filter_spans_filtered", filter=LANGFUSE_RUN_FILTER),
    )


def spans_of_traces(
    spans: Iterable[Mapping[str, Any]], trace_ids: Collection[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """The sink's spans of each of `trace_ids` (an empty list for a trace not seen yet)."""
    grouped: dict[str, list[Mapping[str, Any]]] = {trace_id: [] for trace_id in trace_ids}
    for span in spans:
        if span["trace_id"] in grouped:
            grouped[span["trace_id"]].append(span)
    return grouped


def trace_complete(spans: Collection[Mapping[str, Any]]) -> bool:
    """A root span is there and no span's parent is missing."""
    ids = {span["span_id"] for span in spans}
    has_root = any(span["parent_span_id"] is None for span in spans)
    parents = {span["parent_span_id"] for span in spans if span["parent_span_id"]}
    return has_root and parents <= ids


def wait_for_sink(
    sink: SinkHandle,
    collector: CollectorHandle,
    trace_ids: Collection[str],
    *,
    timeout: float = 60.0,
) -> dict[str, list[Mapping[str, Any]]]:
    """Wait until every trace is complete at the sink and the collector has sent all it took."""
    state: dict[str, Any] = {"counters": None, "grouped": {}}

    def delivered() -> bool:
        _raise_if_dropped(collector)
        state["counters"] = counters = collector_counters(collector.metrics_url)
        state["grouped"] = grouped = spans_of_traces(sink.spans(), trace_ids)
        return counters.drained and all(trace_complete(spans) for spans in grouped.values())

    def describe() -> str:
        incomplete = [t for t, spans in state["grouped"].items() if not trace_complete(spans)]
        return (
            f"the spans of traces {', '.join(incomplete) or '(all complete)'} at the sink; "
            f"collector counters {state['counters']}\n{collector.process.describe(40)}"
        )

    wait_until(delivered, timeout, interval=0.2, message=describe)
    return dict(state["grouped"])


def wait_for_export(
    collector: CollectorHandle, *, timeout: float = 60.0, settle: float = 1.5
) -> CollectorCounters:
    """Wait until the collector has sent all it accepted and nothing new came for `settle` s.

    For a destination that cannot be read back (a real Langfuse): the service exports every
    200 ms, so a count of accepted spans that holds still for `settle` seconds is all of them.
    """
    state: dict[str, Any] = {"counters": None, "accepted": -1, "since": time.monotonic()}

    def exported() -> bool:
        _raise_if_dropped(collector)
        state["counters"] = counters = collector_counters(collector.metrics_url)
        if counters.accepted != state["accepted"]:
            state["accepted"], state["since"] = counters.accepted, time.monotonic()
            return False
        return counters.drained and time.monotonic() - state["since"] >= settle

    def describe() -> str:
        return (
            f"the collector to send everything it accepted: {state['counters']}\n"
            f"{collector.process.describe(40)}"
        )

    wait_until(exported, timeout, interval=0.25, message=describe)
    counters: CollectorCounters = state["counters"]
    return counters


def _raise_if_dropped(collector: CollectorHandle) -> None:
    # 400/401/413 from the destination are permanent: the exporter logs "Dropping data" and the
    # spans are gone, so report it now rather than at the deadline.
    dropped = [
        line for line in collector.log().splitlines()
        if "Dropping data" in line and OPS_EXPORTER not in line
    ]
    if dropped:
        raise DeliveryError(
            "the collector dropped spans (wrong keys or host?):\n" + "\n".join(dropped[-5:])
        )


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _metric_series(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    series = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            series.append((name, dict(_LABEL.findall(labels or "")), float(value)))
        except ValueError:
            continue
    return series
