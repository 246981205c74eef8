"""A bounded, crash-safe spool of OTLP requests the collector has not taken yet.

Batches leave oldest first. The budget counts the bytes of the encoded requests; to stay within
it the oldest batches are deleted and counted: after a long outage the collector gets the most
recent spans, up to the budget.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sessiontrace._spool_files import SpoolDirectory, SpooledBatch

__all__ = [
    "DEFAULT_SPOOL_MAX_BYTES",
    "SPOOL_DIR_ENV",
    "SPOOL_MAX_BYTES_ENV",
    "SpanSpool",
    "SpoolStats",
    "SpooledBatch",
]

logger = logging.getLogger(__name__)

SPOOL_DIR_ENV = "SESSIONTRACE_SPOOL_DIR"
SPOOL_MAX_BYTES_ENV = "SESSIONTRACE_SPOOL_MAX_BYTES"
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024

# At most one line a period about spans lost; the counters in stats() are always current.
_LOSS_LOG_INTERVAL = 30.0


@dataclass(frozen=True)
class SpoolStats:
    """What the spool holds now, and what went through it since this process started."""

    files: int
    bytes: int
    max_bytes: int
    spooled_spans: int  # handed to the spool (kept, or dropped on entry), or recovered from disk
    delivered_spans: int  # sent from the spool and taken by the collector
    dropped_spans: int  # deleted unsent to stay within max_bytes (oldest first)
    rejected_spans: int  # refused for good (HTTP 400, 401, 413, 500...) or not encodable


class SpanSpool:
    """The directory where span batches wait for the collector, within `max_bytes`.

    One process per directory: a second one is refused (an advisory lock), since both would
    send the same files. `close()` releases it; the counters stay readable.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"{SPOOL_MAX_BYTES_ENV}={max_bytes!r} must be a positive number")
        self._path = Path(directory)
        self._max_bytes = max_bytes
        try:
            self._files = SpoolDirectory(self._path)
        except OSError as exc:
            raise ValueError(
                f"{SPOOL_DIR_ENV}={str(self._path)!r} cannot be used: {exc}; give each "
                "process a spool directory of its own"
            ) from None
        self._lock = threading.Lock()
        self._batches: OrderedDict[str, SpooledBatch] = OrderedDict()
        self._bytes = 0
        self._sending: str | None = None
        # Dropped for room while on the wire: delivered after all if the collector takes it.
        self._dropped_sending: SpooledBatch | None = None
        self._send_deadline: float | None = None
        self._spooled = self._delivered = self._dropped = self._rejected = 0
        self._logged_loss = (0, 0)
        self._last_loss_log = float("-inf")
        self._recover()

    @property
    def directory(self) -> Path:
        return self._path

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def put(self, data: bytes, *, spans: int) -> SpooledBatch | None:
        """Keep one encoded request; None when it was dropped instead (counted)."""
        with self._lock:
            # Counted on entry, so spooled = delivered + dropped + rejected + still held.
            self._spooled += spans
            if self._files.closed or not self._make_room(len(data)):
                self._drop(spans)
                return None
            sequence = self._next
            self._next += 1
            try:
                batch = self._files.write(sequence, data, spans=spans)
            except OSError:
                logger.exception("could not write a span batch to %s", self._path)
                self._drop(spans)
                return None
            self._batches[batch.name] = batch
            self._bytes += batch.size
            self._log_loss()  # older batches may have made room
            return batch

    def holds_batches(self) -> bool:
        """Batches are waiting: newer ones must queue behind them."""
        return bool(self._batches)

    def oldest(self) -> tuple[SpooledBatch, bytes] | None:
        """The oldest batch and its bytes, marked as being sent."""
        with self._lock:
            while self._batches:
                batch = next(iter(self._batches.values()))
                try:
                    data = self._files.read(batch)
                except OSError:
                    logger.exception("could not read span batch %s: dropped", batch.name)
                    self._forget(batch)
                    self._dropped += batch.spans
                    continue
                self._sending, self._dropped_sending = batch.name, None
                return batch, data
            return None

    def delivered(self, batch: SpooledBatch) -> None:
        """The collector took `batch`: delete it."""
        with self._lock:
            if self._remove(batch):
                self._delivered += batch.spans
            elif self._dropped_sending == batch:
                self._dropped -= batch.spans
                self._delivered += batch.spans
            self._dropped_sending = None
            if not self._batches:
                logger.info(
                    "span spool %s is empty: the collector took every spooled batch "
                    "(%d spans since start)", self._path, self._delivered,
                )

    def rejected(self, batch: SpooledBatch) -> None:
        """The collector refused `batch` for good: delete it and count its spans."""
        with self._lock:
            if self._remove(batch):
                self._rejected += batch.spans
                self._log_loss()
            self._dropped_sending = None

    def released(self, batch: SpooledBatch) -> None:
        """`batch` stays for a later attempt."""
        with self._lock:
            if self._sending == batch.name:
                self._sending = None
            self._dropped_sending = None

    def count_rejected(self, spans: int) -> None:
        """Count spans given up on before they reached the spool (refused, unencodable)."""
        with self._lock:
            self._rejected += spans
            self._log_loss()

    def begin_shutdown(self, *, send_timeout: float) -> None:
        """Wait at most `send_timeout` seconds more for the collector, then keep everything here.

        Call it before shutting the TracerProvider down: an export hung on an unresponsive
        collector then returns by the deadline, its batch written here for the next process.
        """
        deadline = time.monotonic() + max(send_timeout, 0.0)
        with self._lock:
            if self._send_deadline is None or deadline < self._send_deadline:
                self._send_deadline = deadline

    def send_deadline(self) -> float | None:
        """The `time.monotonic()` after which nothing waits for the collector; None: no limit."""
        return self._send_deadline

    def stats(self) -> SpoolStats:
        """The counters, for probes and logs."""
        with self._lock:
            return SpoolStats(
                files=len(self._batches),
                bytes=self._bytes,
                max_bytes=self._max_bytes,
                spooled_spans=self._spooled,
                delivered_spans=self._delivered,
                dropped_spans=self._dropped,
                rejected_spans=self._rejected,
            )

    def close(self) -> None:
        """Release the directory (the files stay for the next process) and log what was lost."""
        with self._lock:
            if self._files.closed:
                return
            if self._batches:
                logger.warning(
                    "span spool %s keeps %d batches (%d bytes) for the next start",
                    self._path, len(self._batches), self._bytes,
                )
            self._last_loss_log = float("-inf")
            self._log_loss()
            self._files.close()

    def _make_room(self, size: int) -> bool:
        # Oldest first, the batch on the wire included: in a long outage the sender is
        # retrying the oldest batch most of the time, and sparing it would keep it for ever.
        if size > self._max_bytes:
            return False
        for batch in list(self._batches.values()):
            if self._bytes + size <= self._max_bytes:
                break
            if batch.name == self._sending:
                self._dropped_sending = batch
            self._dropped += batch.spans
            self._remove(batch)
        return True

    def _drop(self, spans: int) -> None:
        self._dropped += spans
        self._log_loss()

    def _remove(self, batch: SpooledBatch) -> bool:
        if self._sending == batch.name:
            self._sending = None
        if not self._forget(batch):
            return False
        try:
            self._files.delete(batch)
        except OSError:
            logger.exception("could not delete span batch %s", batch.name)
        return True

    def _forget(self, batch: SpooledBatch) -> bool:
        if self._batches.pop(batch.name, None) is None:
            return False
        self._bytes -= batch.size
        return True

    def _recover(self) -> None:
        found = self._files.recover()
        for batch in found:
            self._batches[batch.name] = batch
            self._bytes += batch.size
            self._spooled += batch.spans
        self._next = found[-1].sequence + 1 if found else 0
        if found:
            logger.info(
                "span spool %s holds %d batches (%d bytes) from a previous run: sending them",
                self._path, len(found), self._bytes,
            )
        # A budget lowered since: keep the newest.
        self._make_room(0)
        self._log_loss()

    def _log_loss(self) -> None:
        lost = (self._dropped, self._rejected)
        now = time.monotonic()
        if lost == self._logged_loss or now - self._last_loss_log < _LOSS_LOG_INTERVAL:
            return
        self._logged_loss, self._last_loss_log = lost, now
        logger.warning(
            "span spool %s: %d spans dropped to stay within %d bytes (oldest first), "
            "%d spans refused for good by the collector or unencodable, since start; "
            "%d batches (%d bytes) waiting",
            self._path, self._dropped, self._max_bytes, self._rejected,
            len(self._batches), self._bytes,
        )
