"""Where the collector sends in a pipeline benchmark: the null endpoint or the development sink.

bench/null_endpoint.py answers as Langfuse would and only counts (spans, spans with a
session.id); the development sink (`python -m devstack.sink`) decodes every span into SQLite,
Langfuse's contract enforced. Either says how many spans it took and when the last one came.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from devstack.processes import WaitTimeout, wait_until

from local_stack import NullEndpoint, Workspace, sink_span_counts

__all__ = [
    "DESTINATIONS",
    "Arrivals",
    "Destination",
    "Progress",
    "start_destination",
    "wait_for_arrivals",
]

STALL_SECONDS = 60.0  # no progress at the destination for this long fails the run
DESTINATIONS = {
    "null": "collector → null endpoint (answers as Langfuse would, counts, stores nothing)",
    "sink": "collector → development sink (decodes every span into SQLite)",
}
BENCH_PUBLIC_KEY = "pk-lf-bench"  # bench/null_endpoint.py's default key pair
BENCH_SECRET_KEY = "sk-lf-bench"


@dataclass(frozen=True)
class Arrivals:
    """What the destination took: spans (each copy), distinct, with a session.id, last arrival."""

    spans: int
    distinct: int
    stamped: int
    rejected_requests: int
    last_at: float


class Progress(NamedTuple):
    """Spans taken so far, export requests refused, and when the last taken one arrived."""

    spans: int
    rejected_requests: int
    last_at: float


@dataclass
class Destination:
    """The collector's Langfuse: the null endpoint or the development sink.

    `progress()` is cheap enough to poll; `arrivals()` is the full count, read once at the end.
    """

    kind: str
    url: str
    pid: int
    public_key: str
    secret_key: str
    progress: Callable[[], Progress]
    arrivals: Callable[[], Arrivals]


def start_destination(space: Workspace, kind: str) -> Destination:
    if kind == "null":
        null = space.null_endpoint()
        return Destination(kind, null.url, null.process.pid, BENCH_PUBLIC_KEY, BENCH_SECRET_KEY,
                           lambda: _null_progress(null), lambda: _null_arrivals(null))
    if kind == "sink":
        sink = space.sink()
        return Destination(kind, sink.url, sink.process.pid, sink.public_key, sink.secret_key,
                           lambda: _sink_progress(sink.db), lambda: _sink_arrivals(sink.db))
    raise ValueError(f"destination must be one of {', '.join(DESTINATIONS)}, got {kind!r}")


def _null_progress(null: NullEndpoint) -> Progress:
    stats = null.stats()
    return Progress(int(stats["spans"]), int(stats["rejected"]), float(stats["last_at"]))


def _null_arrivals(null: NullEndpoint) -> Arrivals:
    # The null endpoint keeps no ids: a duplicate shows as one span too many.
    stats = null.stats()
    spans = int(stats["spans"])
    return Arrivals(spans, spans, int(stats["stamped"]), int(stats["rejected"]),
                    float(stats["last_at"]))


def _sink_progress(db: Path) -> Progress:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        spans, rejected, last = connection.execute(
            "SELECT COALESCE(SUM(CASE WHEN status = 200 THEN span_count END), 0),"
            " COALESCE(SUM(status != 200), 0),"
            " COALESCE(MAX(CASE WHEN status = 200 THEN received_at END), 0) FROM requests"
        ).fetchone()
    finally:
        connection.close()
    return Progress(int(spans), int(rejected), float(last))


def _sink_arrivals(db: Path) -> Arrivals:
    counts = sink_span_counts(db)
    return Arrivals(counts["spans"], counts["distinct_spans"], counts["stamped"],
                    counts["rejected_requests"], _sink_progress(db).last_at)


def wait_for_arrivals(destination: Destination, expected: int) -> Arrivals:
    """Wait until the destination took `expected` spans, then count them all.

    Fails at once when it refused an export (the collector drops 4xx answers), and after
    STALL_SECONDS without progress.
    """
    state = {"seen": -1, "since": time.monotonic()}

    def arrived() -> bool:
        seen, rejected, _ = destination.progress()
        if rejected:
            raise WaitTimeout(f"the {destination.kind} refused {rejected} export requests "
                              "(see its log and the collector's)")
        if seen != state["seen"]:
            state["seen"], state["since"] = seen, time.monotonic()
        elif time.monotonic() - state["since"] > STALL_SECONDS:
            raise WaitTimeout(f"{destination.kind}: stuck at {seen} of {expected} spans")
        return seen >= expected

    wait_until(arrived, 3600, interval=0.1, message=f"{expected} spans at the {destination.kind}")
    return destination.arrivals()
