"""Zero-code setup and the global provider: the `sessiontrace` distro and configurator that
`opentelemetry-instrument` loads, and `configure_tracing(set_global=True)`.

OpenTelemetry takes one global TracerProvider per process; each test here starts with none set
and leaves none behind (the `no_global_provider` fixture resets the API's globals, as
OpenTelemetry's own tests do).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from otlp_receiver import OTLPReceiver

from sessiontrace import (
    SessionContext,
    SessionSpanProcessor,
    SpanSpool,
    binding,
    configure_tracing,
)
from sessiontrace.attributes import LANGFUSE_SESSION_ID, SESSION_ID
from sessiontrace._configurator import SessionTraceConfigurator


@pytest.fixture(autouse=True)
def no_global_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    for name in (
        "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_PYTHON_CONFIGURATOR",
        "OTEL_PYTHON_TRACER_PROVIDER", "SESSIONTRACE_SPOOL_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def session() -> SessionContext:
    return SessionContext(session_id="ba:acme:s:zero-code", user_id="alice", trace_name="chat")


def processors(provider: TracerProvider) -> list[SpanProcessor]:
    return list(provider._active_span_processor._span_processors)  # noqa: SLF001


def run_configurator() -> None:
    """What opentelemetry-instrument does with the configurator OTEL_PYTHON_CONFIGURATOR names."""
    [entry_point] = importlib.metadata.entry_points().select(
        group="opentelemetry_configurator", name="sessiontrace"
    )
    entry_point.load()().configure(auto_instrumentation_version="0.66b2")


def spans_received(receiver: OTLPReceiver) -> list[dict[str, str]]:
    found = []
    for _, _, body in receiver.received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append({a.key: a.value.string_value for a in span.attributes}
                                 | {"name": span.name})
    return found


def test_the_entry_points_name_the_distro_and_the_configurator() -> None:
    entry_points = importlib.metadata.entry_points()
    [configurator] = entry_points.select(group="opentelemetry_configurator", name="sessiontrace")
    [distro] = entry_points.select(group="opentelemetry_distro", name="sessiontrace")

    assert configurator.load() is SessionTraceConfigurator
    assert distro.value == "sessiontrace._distro:SessionTraceDistro"


def test_the_configurator_makes_the_global_provider_stamp_and_export_over_otlp(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "zero-code")

    run_configurator()

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "zero-code"
    first, second = processors(provider)
    assert isinstance(first, SessionSpanProcessor) and isinstance(second, BatchSpanProcessor)
    with binding(session()):
        trace.get_tracer("app").start_span("work").end()
    provider.force_flush()
    [span] = spans_received(otlp_receiver)
    assert span[SESSION_ID] == span[LANGFUSE_SESSION_ID] == "ba:acme:s:zero-code"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "console"),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkin"),
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ],
)
def test_the_configurator_refuses_an_export_it_does_not_build_naming_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValueError, match=f"{variable}={value!r}"):
        run_configurator()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_the_distro_selects_the_sessiontrace_configurator_unless_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The distro's base class comes with opentelemetry-instrumentation (sessiontrace[instrument]),
    # which the library's own venv (scripts/check-library.sh) does not install.
    pytest.importorskip("opentelemetry.instrumentation.distro")
    from sessiontrace._distro import SessionTraceDistro

    SessionTraceDistro().configure()
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "sessiontrace"

    monkeypatch.setenv("OTEL_PYTHON_CONFIGURATOR", "another")
    SessionTraceDistro().configure()
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "another"


def test_set_global_makes_the_new_provider_the_global_one() -> None:
    exporter = InMemorySpanExporter()

    provider = configure_tracing(
        service_name="svc", exporter=exporter, batch=False, set_global=True
    )

    assert trace.get_tracer_provider() is provider
    with binding(session()):
        trace.get_tracer("app").start_span("work").end()
    [span] = exporter.get_finished_spans()
    assert (span.attributes or {})[SESSION_ID] == "ba:acme:s:zero-code"


def test_without_set_global_the_global_provider_is_left_alone() -> None:
    configure_tracing(service_name="svc", exporter=InMemorySpanExporter(), batch=False)

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_set_global_adds_the_session_processor_to_a_global_sdk_provider_set_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As opentelemetry-instrument's default configurator leaves it: an exporting processor only.
    exporter = InMemorySpanExporter()
    theirs = TracerProvider()
    theirs.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(theirs)
    mine = SessionSpanProcessor(strict=True)

    provider = configure_tracing(
        service_name="svc", session_processor=mine, set_global=True
    )

    assert provider is theirs and trace.get_tracer_provider() is theirs
    assert processors(theirs)[-1] is mine
    assert "a global TracerProvider was set already" in caplog.text
    # Added after the exporting processor, it still stamps before the export: it stamps in
    # on_start, and the exporting processor takes the span in on_end.
    with binding(session()):
        trace.get_tracer("app").start_span("work").end()
    [span] = exporter.get_finished_spans()
    assert (span.attributes or {})[LANGFUSE_SESSION_ID] == "ba:acme:s:zero-code"


def test_set_global_keeps_a_global_provider_that_already_stamps_sessions() -> None:
    first = configure_tracing(
        service_name="svc", exporter=InMemorySpanExporter(), batch=False, set_global=True
    )
    before = processors(first)

    again = configure_tracing(
        service_name="other", exporter=InMemorySpanExporter(), batch=False, set_global=True
    )

    assert again is first and processors(first) == before


def test_set_global_closes_the_spool_it_cannot_use(tmp_path: Path) -> None:
    trace.set_tracer_provider(TracerProvider())
    spool = SpanSpool(tmp_path / "spool", max_bytes=1 << 20)

    configure_tracing(service_name="svc", spool=spool, set_global=True)

    # Closed: its directory lock is free for the next process.
    SpanSpool(tmp_path / "spool", max_bytes=1 << 20).close()


def test_set_global_refuses_a_global_provider_that_is_not_the_sdks() -> None:
    trace.set_tracer_provider(trace.NoOpTracerProvider())

    with pytest.raises(ValueError, match="NoOpTracerProvider, not the OpenTelemetry SDK's"):
        configure_tracing(service_name="svc", exporter=InMemorySpanExporter(), set_global=True)
