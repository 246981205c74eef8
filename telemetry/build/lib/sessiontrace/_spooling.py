"""An exporter whose batches wait on disk while the collector is down, then go out in order."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sessiontrace._spool import SpanSpool, SpooledBatch
from sessiontrace._exporter import DirectOTLPSpanExporter, SendOutcome

__all__ = ["SpoolingSpanExporter"]

logger = logging.getLogger(__name__)

# How often an export waiting on the network checks the spool's shutdown deadline.
_DEADLINE_POLL_SECONDS = 0.1


@dataclass
class _Request:
    data: bytes
    spans: int
    outcome: Future[SendOutcome] = field(default_factory=Future)


class SpoolingSpanExporter(SpanExporter):
    """Sends through `exporter`; what the collector cannot take yet waits in `spool`.

    A batch the collector did not answer, or answered 429/502/503/504 (after the SDK's own
    retries, within OTEL_EXPORTER_OTLP_TIMEOUT), is written to the spool, and later batches
    queue behind it there. One thread sends the spool's oldest batch until the collector takes
    it, waiting `retry_initial`, doubling up to `retry_max` seconds between failed attempts. A
    batch answered with any other status (400, 401, 413, 500...) is dropped and counted, as the
    SDK drops it: sending the same bytes again cannot help. Delivery is at least once: a
    request the collector got but did not answer in time is sent again.

    Every request goes out on that one thread, so an export waiting on a hung collector can
    stop waiting at the spool's shutdown deadline (`SpanSpool.begin_shutdown`) and keep its
    batch there instead. `shutdown()` also closes the spool.
    """

    def __init__(
        self,
        exporter: DirectOTLPSpanExporter,
        spool: SpanSpool,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
    ) -> None:
        if not exporter.encodes_directly:
            raise ValueError(
                "SpoolingSpanExporter needs the SDK internals DirectOTLPSpanExporter uses "
                "(opentelemetry-exporter-otlp-proto-http changed)"
            )
        self._exporter = exporter
        self._spool = spool
        self._retry_initial = retry_initial
        self._retry_max = max(retry_max, retry_initial)
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._sender = threading.Thread(
            target=self._send_loop, name="SpanSpoolSender", daemon=True
        )
        self._sender.start()

    @property
    def spool(self) -> SpanSpool:
        return self._spool

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped.is_set():
            logger.warning("SpoolingSpanExporter already shut down, ignoring batch")
            return SpanExportResult.FAILURE
        data = self._exporter.encode_request(spans)
        if data is None:
            self._spool.count_rejected(len(spans))
            return SpanExportResult.FAILURE
        if self._spool.holds_batches() or self._past_deadline():
            return _result(self._keep(data, len(spans)))
        request = _Request(data, len(spans))
        self._requests.put(request)
        self._wake.set()
        outcome = self._wait(request.outcome)
        if outcome is SendOutcome.DELIVERED:
            return SpanExportResult.SUCCESS
        if outcome is SendOutcome.REFUSED:
            self._spool.count_rejected(len(spans))
            return SpanExportResult.FAILURE
        kept = self._keep(data, len(spans))
        if outcome is None and kept is not None:
            # Gave up waiting at the deadline; should the request still get through, the
            # copy kept here must not be sent again.
            request.outcome.add_done_callback(functools.partial(self._late_outcome, kept))
        return _result(kept)

    def shutdown(self) -> None:
        """Stop sending (a request on the wire is abandoned, its batch stays spooled)."""
        if self._stopped.is_set():
            return
        self._spool.begin_shutdown(send_timeout=0)
        self._stopped.set()
        self._wake.set()
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
        self._spool.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing waits in memory here: each batch was sent or is on disk."""
        return True

    def _keep(self, data: bytes, spans: int) -> SpooledBatch | None:
        first = not self._spool.holds_batches()
        kept = self._spool.put(data, spans=spans)
        if kept is not None:
            if first:
                logger.warning(
                    "the collector has not taken a span batch: keeping batches in %s "
                    "until it does", self._spool.directory,
                )
            self._wake.set()
        return kept

    def _past_deadline(self) -> bool:
        deadline = self._spool.send_deadline()
        return deadline is not None and time.monotonic() >= deadline

    def _wait(self, outcome: Future[SendOutcome]) -> SendOutcome | None:
        """The request's outcome; None when the spool's shutdown deadline came first."""
        while True:
            deadline = self._spool.send_deadline()
            timeout = _DEADLINE_POLL_SECONDS
            if deadline is not None:
                timeout = min(timeout, max(deadline - time.monotonic(), 0.0))
            try:
                return outcome.result(timeout=timeout)
            except TimeoutError:
                if self._stopped.is_set() or self._past_deadline() or not self._sender.is_alive():
                    return None

    def _late_outcome(self, kept: SpooledBatch, outcome: Future[SendOutcome]) -> None:
        if outcome.result() is SendOutcome.DELIVERED:
            self._spool.delivered(kept)

    def _send_loop(self) -> None:
        # As the SDK's BatchProcessor does around export(): an instrumented HTTP client must
        # not trace the exporter's own requests.
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        backoff = self._retry_initial
        while not self._stopped.is_set():
            try:
                backoff = self._send_next(backoff)
            except Exception:  # the thread must outlive a bug: exports wait on it
                logger.exception("the span spool's sender failed; going on")
                self._stopped.wait(self._retry_max)

    def _send_next(self, backoff: float) -> float:
        """Send one request, a direct one first; the wait before the next failed attempt."""
        self._wake.clear()
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            pass
        else:
            request.outcome.set_result(self._send(request.data, request.spans))
            return backoff
        oldest = self._spool.oldest()
        if oldest is None:
            self._wake.wait()
            return backoff
        batch, data = oldest
        outcome = self._send(data, batch.spans)
        if outcome is SendOutcome.DELIVERED:
            self._spool.delivered(batch)
            return self._retry_initial
        if outcome is SendOutcome.REFUSED:
            self._spool.rejected(batch)
            return backoff
        self._spool.released(batch)
        self._stopped.wait(backoff)
        return min(backoff * 2, self._retry_max)

    def _send(self, data: bytes, spans: int) -> SendOutcome:
        try:
            return self._exporter.send_request(data, span_count=spans)
        except Exception:  # telemetry never breaks the service; the batch is kept
            logger.exception("sending a span batch failed")
            return SendOutcome.RETRYABLE


def _result(kept: SpooledBatch | None) -> SpanExportResult:
    # Kept on disk counts as exported: it is the spool's to deliver now.
    return SpanExportResult.FAILURE if kept is None else SpanExportResult.SUCCESS
