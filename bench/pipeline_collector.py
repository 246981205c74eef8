"""The real collector in a pipeline benchmark: started, counted, and watched through the run."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from devstack.delivery import LANGFUSE_EXPORTER, collector_counters
from devstack.stack import CollectorHandle

from common import memory_kib
from local_stack import Workspace
from pipeline_destination import Destination

__all__ = [
    "CollectorReading",
    "CollectorSample",
    "CollectorSampler",
    "read_collector",
    "start_collector",
]


def start_collector(
    space: Workspace, destination: Destination, overlays: Sequence[str] = (), **overrides: str
) -> CollectorHandle:
    """bin/otelcol with otel-collector.yaml (plus `yaml:` overlays), exporting to `destination`;
    `overrides` are environment variables of the config."""
    return space.collector(
        destination=destination.url,
        public_key=destination.public_key,
        secret_key=destination.secret_key,
        overlays=overlays,
        **overrides,
    )


@dataclass(frozen=True)
class CollectorReading:
    """The collector's own span counters for the Langfuse pipeline (otel-collector.yaml)."""

    accepted: int  # taken by the receiver
    sent: int  # answered 2xx by the destination
    failed: int  # given up on by the exporter
    queued: int  # bytes still in the persistent sending queue
    refused: int  # refused by the receiver (memory_limiter): the SDK has to retry
    enqueue_failed: int  # could not be put in the sending queue (full)

    def problems(self, expected: int) -> list[str]:
        wanted = CollectorReading(expected, expected, 0, 0, 0, 0)
        if self == wanted:
            return []
        return [f"collector counted {self}, expected {wanted}"]


def read_collector(collector: CollectorHandle) -> CollectorReading:
    counters = collector_counters(collector.metrics_url)
    with urllib.request.urlopen(collector.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return CollectorReading(
        accepted=counters.accepted,
        sent=counters.sent,
        failed=counters.failed,
        queued=counters.queued,
        refused=_total(text, "otelcol_receiver_refused_spans")
        + _total(text, "otelcol_processor_memory_limiter_refused_spans"),
        enqueue_failed=_total(text, "otelcol_exporter_enqueue_failed_spans",
                              f'exporter="{LANGFUSE_EXPORTER}"'),
    )


def _total(text: str, name: str, label: str = "") -> int:
    """Sum of a Prometheus counter's samples (with `label` among their labels, if given)."""
    sample = re.compile(rf"^{name}(?:_total)?(\{{[^}}]*\}})?\s+(\S+)", re.MULTILINE)
    return int(sum(float(value) for labels, value in sample.findall(text) if label in labels))


@dataclass(frozen=True)
class CollectorSample:
    """One look at the collector during a run."""

    seconds: float  # since the generators were released
    rss_kib: int  # VmRSS
    queue_bytes: int  # in the Langfuse sending queue
    accepted: int  # spans taken by the receiver so far


class CollectorSampler:
    """The collector's VmRSS and queue every `interval` seconds, on a thread, until exit."""

    def __init__(self, collector: CollectorHandle, interval: float) -> None:
        self.collector = collector
        self.interval = interval
        self.samples: list[CollectorSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-sampler", daemon=True)

    def __enter__(self) -> CollectorSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            counters = collector_counters(self.collector.metrics_url)
            self.samples.append(CollectorSample(
                time.monotonic() - started,
                memory_kib(self.collector.process.pid, "VmRSS"),
                counters.queued,
                counters.accepted,
            ))
            if self._stop.wait(self.interval):
                return
