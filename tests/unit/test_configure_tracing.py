import pytest
from otlp_receiver import OTLPReceiver
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import (
    SessionContext,
    SessionSpanProcessor,
    binding,
    configure_tracing,
    derive_user_session_id,
)
from sessiontrace.attributes import DEPLOYMENT_ENVIRONMENT_NAME, SESSION_ID
from sessiontrace._setup import OTLP_ENCODER_ENV


def caller() -> SessionContext:
    return SessionContext(session_id=derive_user_session_id("acme", "t"), user_id="alice")


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def test_resource_has_service_name_version_and_environment() -> None:
    exporter = InMemorySpanExporter()
    provider = configure_tracing(
        service_name="svc", service_version="1.2.3", environment="staging",
        exporter=exporter, batch=False,
    )
    attrs = provider.resource.attributes
    assert attrs["service.name"] == "svc"
    assert attrs["service.version"] == "1.2.3"
    assert attrs[DEPLOYMENT_ENVIRONMENT_NAME] == "staging"


def test_otel_environment_variables_override_the_application_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "renamed")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=9,team=ai")
    provider = configure_tracing(service_name="svc", service_version="1.2.3",
                                 exporter=InMemorySpanExporter(), batch=False)
    attrs = provider.resource.attributes
    assert attrs["service.name"] == "renamed"
    assert attrs["service.version"] == "9"
    assert attrs["team"] == "ai"


@pytest.mark.parametrize("environment", ["production", "staging_eu", "dev-1", "a" * 40])
def test_a_valid_langfuse_environment_is_accepted(environment: str) -> None:
    provider = configure_tracing(service_name="svc", environment=environment,
                                 exporter=InMemorySpanExporter(), batch=False)

    assert provider.resource.attributes[DEPLOYMENT_ENVIRONMENT_NAME] == environment


@pytest.mark.parametrize(
    "environment", ["Prod Env!", "Production", "langfuse-prod", "langfuse", "a" * 41, ""]
)
def test_an_environment_langfuse_would_rewrite_is_refused_naming_it(environment: str) -> None:
    with pytest.raises(ValueError, match=rf"environment={environment!r} is not a valid Langfuse"):
        configure_tracing(service_name="svc", environment=environment,
                          exporter=InMemorySpanExporter(), batch=False)


@pytest.mark.parametrize("key", ["deployment.environment.name", "deployment.environment"])
def test_an_otel_resource_environment_contradicting_the_argument_is_refused_naming_both(
    key: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"team=ai,{key}=production")

    with pytest.raises(ValueError) as refused:
        configure_tracing(service_name="svc", environment="development",
                          exporter=InMemorySpanExporter(), batch=False)

    message = str(refused.value)
    assert "environment='development'" in message
    assert f"OTEL_RESOURCE_ATTRIBUTES {key}='production'" in message


def test_the_contradiction_is_refused_even_with_the_sdk_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=production")

    with pytest.raises(ValueError, match="OTEL_RESOURCE_ATTRIBUTES"):
        configure_tracing(service_name="svc", environment="development",
                          exporter=InMemorySpanExporter(), batch=False)


@pytest.mark.parametrize(
    "resource", ["deployment.environment.name=staging", "deployment.environment=staging,x=1"]
)
def test_an_otel_resource_environment_agreeing_with_the_argument_is_accepted(
    resource: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", resource)

    provider = configure_tracing(service_name="svc", environment="staging",
                                 exporter=InMemorySpanExporter(), batch=False)

    assert provider.resource.attributes[DEPLOYMENT_ENVIRONMENT_NAME] == "staging"


def test_without_an_argument_the_otel_resource_environment_is_used_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    provider = configure_tracing(service_name="svc", exporter=InMemorySpanExporter(), batch=False)
    assert provider.resource.attributes[DEPLOYMENT_ENVIRONMENT_NAME] == "prod"

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=Prod")
    with pytest.raises(ValueError, match="OTEL_RESOURCE_ATTRIBUTES deployment.environment.name="):
        configure_tracing(service_name="svc", exporter=InMemorySpanExporter(), batch=False)


def test_two_different_environments_in_the_otel_resource_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=prod,deployment.environment=staging",
    )
    with pytest.raises(ValueError, match="names two environments"):
        configure_tracing(service_name="svc", exporter=InMemorySpanExporter(), batch=False)


def test_an_otel_resource_without_an_environment_keeps_the_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ai")
    provider = configure_tracing(service_name="svc", environment="staging",
                                 exporter=InMemorySpanExporter(), batch=False)
    assert provider.resource.attributes[DEPLOYMENT_ENVIRONMENT_NAME] == "staging"


def test_session_processor_runs_before_the_exporter() -> None:
    exporter = InMemorySpanExporter()
    processor = SessionSpanProcessor(strict=True)
    provider = configure_tracing(service_name="svc", exporter=exporter,
                                 session_processor=processor, batch=True)
    tracer = provider.get_tracer("t")
    with binding(caller()):
        tracer.start_span("stamped").end()
    tracer.start_span("orphan").end()
    provider.force_flush()
    provider.shutdown()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["stamped"].attributes is not None
    assert spans["stamped"].attributes[SESSION_ID] == caller().session_id
    assert processor.spans_without_caller == 1


def test_sdk_disabled_exports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter = InMemorySpanExporter()
    provider = configure_tracing(service_name="svc", exporter=exporter, batch=False)
    tracer = provider.get_tracer("t")
    with binding(caller()):
        span = tracer.start_span("nothing")
        assert not span.is_recording()
        span.end()
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("encoder", ["", "direct", "sdk"])
def test_default_exporter_sends_protobuf_to_the_otlp_endpoint_variable(
    encoder: str, otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv(OTLP_ENCODER_ENV, encoder)
    provider = configure_tracing(service_name="svc")
    with binding(caller()):
        provider.get_tracer("t").start_span("exported").end()
    provider.shutdown()

    assert len(otlp_receiver.received) == 1
    path, content_type, body = otlp_receiver.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (span,) = request.resource_spans[0].scope_spans[0].spans
    attributes = {kv.key: kv.value.string_value for kv in span.attributes}
    assert span.name == "exported"
    assert attributes[SESSION_ID] == caller().session_id


def test_an_unknown_otlp_encoder_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(OTLP_ENCODER_ENV, "json")
    with pytest.raises(ValueError, match="SESSIONTRACE_OTLP_ENCODER='json'"):
        configure_tracing(service_name="svc")


def test_empty_service_name_is_refused() -> None:
    with pytest.raises(ValueError, match="service_name"):
        configure_tracing(service_name="")
