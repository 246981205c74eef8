"""SpanSpool and SpoolingSpanExporter: what the collector cannot take yet waits on disk, within
a budget, and goes out oldest first once it can; losses are counted."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_receiver import OTLPReceiver

from polling import wait_until
from sessiontrace import (
    DirectOTLPSpanExporter,
    SpanSpool,
    SpoolingSpanExporter,
    configure_tracing,
)
from sessiontrace._spool import SPOOL_DIR_ENV, SPOOL_MAX_BYTES_ENV
from sessiontrace._setup import _spool_from_environment as spool_from_environment


def some_spans(*names: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name in names:
        provider.get_tracer("t").start_span(name).end()
    return list(exporter.get_finished_spans())


def span_names(body: bytes) -> list[str]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        span.name
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def spooling_exporter(
    spool: SpanSpool, endpoint: str, *, timeout: float = 1.0
) -> SpoolingSpanExporter:
    inner = DirectOTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    return SpoolingSpanExporter(inner, spool, retry_initial=0.05, retry_max=0.2)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def hung_collector() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"


def test_batches_come_back_oldest_first_in_the_next_process(spool_dir: Path) -> None:
    spool = SpanSpool(spool_dir)
    for index in range(3):
        spool.put(f"batch-{index}".encode(), spans=index + 1)
    spool.close()

    again = SpanSpool(spool_dir)
    assert again.stats().files == 3 and again.stats().bytes == 3 * len(b"batch-0")
    sent = []
    while (oldest := again.oldest()) is not None:
        batch, data = oldest
        sent.append((data, batch.spans))
        again.delivered(batch)
    assert sent == [(b"batch-0", 1), (b"batch-1", 2), (b"batch-2", 3)]
    assert again.stats().delivered_spans == 6
    assert list(spool_dir.glob("*.otlp")) == []
    # New batches continue the sequence: nothing sorts before what a crash left.
    assert again.put(b"next", spans=1) is not None


def test_over_budget_the_oldest_batches_are_dropped_counted_and_logged(
    spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SpanSpool(spool_dir, max_bytes=250)

    with caplog.at_level(logging.WARNING, logger="sessiontrace._spool"):
        for index in range(4):
            assert spool.put(bytes([index]) * 100, spans=10 + index) is not None

    stats = spool.stats()
    assert (stats.files, stats.bytes, stats.dropped_spans) == (2, 200, 10 + 11)
    kept = []
    while (oldest := spool.oldest()) is not None:
        kept.append(oldest[1][0])
        spool.delivered(oldest[0])
    assert kept == [2, 3]
    assert "10 spans dropped to stay within 250 bytes" in caplog.text


def test_a_batch_larger_than_the_whole_budget_is_dropped_and_counted(spool_dir: Path) -> None:
    spool = SpanSpool(spool_dir, max_bytes=100)
    spool.put(b"x" * 50, spans=1)

    assert spool.put(b"y" * 101, spans=7) is None
    assert (spool.stats().files, spool.stats().dropped_spans) == (1, 7)


def test_the_batch_on_the_wire_is_dropped_first_and_counted_delivered_if_it_gets_through(
    spool_dir: Path,
) -> None:
    spool = SpanSpool(spool_dir, max_bytes=250)
    spool.put(b"a" * 100, spans=1)
    spool.put(b"b" * 100, spans=2)
    sending = spool.oldest()
    assert sending is not None

    spool.put(b"c" * 100, spans=3)
    assert spool.stats().dropped_spans == 1  # the oldest, although on the wire

    spool.delivered(sending[0])
    stats = spool.stats()
    assert (stats.dropped_spans, stats.delivered_spans, stats.files) == (0, 1, 2)


def test_a_half_written_batch_from_a_crash_is_deleted_and_whole_ones_kept(
    spool_dir: Path,
) -> None:
    spool_dir.mkdir()
    (spool_dir / "0000000000000007-3.otlp").write_bytes(b"whole")
    (spool_dir / ".tmp-0000000000000008-2.otlp").write_bytes(b"hal")

    spool = SpanSpool(spool_dir)

    assert spool.stats().files == 1
    assert not (spool_dir / ".tmp-0000000000000008-2.otlp").exists()
    oldest = spool.oldest()
    assert oldest is not None and oldest[1] == b"whole" and oldest[0].spans == 3


def test_a_second_process_cannot_use_the_same_directory(spool_dir: Path) -> None:
    spool = SpanSpool(spool_dir)
    with pytest.raises(ValueError, match=f"{SPOOL_DIR_ENV}=.*in use by another process"):
        SpanSpool(spool_dir)
    spool.close()
    SpanSpool(spool_dir).close()


def test_the_environment_configures_the_spool_and_bad_values_are_refused(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert spool_from_environment() is None
    monkeypatch.setenv(SPOOL_DIR_ENV, str(spool_dir))
    monkeypatch.setenv(SPOOL_MAX_BYTES_ENV, "0")
    assert spool_from_environment() is None
    monkeypatch.setenv(SPOOL_MAX_BYTES_ENV, "1mb")
    with pytest.raises(ValueError, match=f"{SPOOL_MAX_BYTES_ENV}='1mb'"):
        configure_tracing(service_name="svc")
    monkeypatch.setenv(SPOOL_MAX_BYTES_ENV, "4096")
    spool = spool_from_environment()
    assert spool is not None and spool.max_bytes == 4096 and spool.directory == spool_dir
    spool.close()


def test_batches_the_collector_cannot_take_wait_and_go_out_in_order_once_it_can(
    spool_dir: Path, otlp_receiver: OTLPReceiver
) -> None:
    otlp_receiver.status = 503
    exporter = spooling_exporter(SpanSpool(spool_dir), otlp_receiver.url + "/v1/traces")

    assert exporter.export(some_spans("first")) is SpanExportResult.SUCCESS
    assert exporter.export(some_spans("second", "third")) is SpanExportResult.SUCCESS
    assert exporter.spool.stats().spooled_spans == 3
    otlp_receiver.status = 200
    wait_until(lambda: not exporter.spool.holds_batches(), 10, message="the spool to drain")
    assert exporter.export(some_spans("fourth")) is SpanExportResult.SUCCESS
    exporter.shutdown()

    accepted = [span_names(body) for _, _, body in otlp_receiver.received if body]
    # Refused attempts of "first" come before; the accepted requests end in order.
    assert accepted[-3:] == [["first"], ["second", "third"], ["fourth"]]
    stats = exporter.spool.stats()
    assert (stats.files, stats.delivered_spans, stats.dropped_spans) == (0, 3, 0)


def test_a_batch_refused_for_good_is_counted_not_spooled(
    spool_dir: Path, otlp_receiver: OTLPReceiver
) -> None:
    otlp_receiver.status = 400
    exporter = spooling_exporter(SpanSpool(spool_dir), otlp_receiver.url + "/v1/traces")

    assert exporter.export(some_spans("bad", "worse")) is SpanExportResult.FAILURE
    exporter.shutdown()

    stats = exporter.spool.stats()
    assert (stats.files, stats.rejected_spans, stats.spooled_spans) == (0, 2, 0)
    assert len(otlp_receiver.received) == 1


def test_the_spooled_request_is_the_one_the_sdk_would_send(
    spool_dir: Path, otlp_receiver: OTLPReceiver
) -> None:
    spans = some_spans("a", "b")
    otlp_receiver.status = 503
    exporter = spooling_exporter(SpanSpool(spool_dir), otlp_receiver.url + "/v1/traces")
    exporter.export(spans)
    exporter.shutdown()

    [spooled] = spool_dir.glob("*-2.otlp")
    assert spooled.read_bytes() == encode_spans(spans).SerializePartialToString()


def test_a_hung_collector_holds_an_export_only_until_the_shutdown_deadline_and_the_batch_is_kept(
    spool_dir: Path, hung_collector: str, otlp_receiver: OTLPReceiver
) -> None:
    # The exporter's own timeout (60 s) is far past the deadline: the deadline ends the wait.
    exporter = spooling_exporter(SpanSpool(spool_dir), hung_collector, timeout=60)
    results: list[SpanExportResult] = []
    export = threading.Thread(target=lambda: results.append(exporter.export(some_spans("late"))))
    export.start()
    wait_until(lambda: exporter.spool.stats().files == 0 and export.is_alive(), 5)

    exporter.spool.begin_shutdown(send_timeout=0.2)
    export.join(timeout=30)

    assert not export.is_alive() and results == [SpanExportResult.SUCCESS]
    assert exporter.spool.stats().files == 1
    exporter.shutdown()

    # The next process sends it.
    resent = spooling_exporter(SpanSpool(spool_dir), otlp_receiver.url + "/v1/traces")
    wait_until(lambda: not resent.spool.holds_batches(), 10, message="the spool to drain")
    resent.shutdown()
    assert [span_names(body) for _, _, body in otlp_receiver.received] == [["late"]]


def test_configure_tracing_spools_where_the_environment_says(
    spool_dir: Path, hung_collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", hung_collector)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv(SPOOL_DIR_ENV, str(spool_dir))
    provider = configure_tracing(service_name="svc")
    provider.get_tracer("t").start_span("kept").end()

    provider.shutdown()  # the export times out unanswered: its batch is kept

    [kept] = spool_dir.glob("*.otlp")
    assert span_names(kept.read_bytes()) == ["kept"]
