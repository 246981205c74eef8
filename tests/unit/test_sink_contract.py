"""The development sink enforces Langfuse's OTLP contract (shared/LANGFUSE_OTLP_CONTRACT.md)."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from devstack.sink import TRACES_PATH, SinkSettings, create_app
from devstack.store import SinkStore

SETTINGS = SinkSettings(public_key="pk-lf-test", secret_key="sk-lf-test-" + "x" * 60)
# The pair encodes to more than 76 characters: a line-wrapping base64 would break it.
AUTH = "Basic " + base64.b64encode(f"{SETTINGS.public_key}:{SETTINGS.secret_key}".encode()).decode()
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SinkStore]:
    sink_store = SinkStore(tmp_path / "sink.sqlite3")
    yield sink_store
    sink_store.close()


@pytest.fixture
def client(store: SinkStore) -> Iterator[TestClient]:
    with TestClient(create_app(SETTINGS, store)) as test_client:
        yield test_client


def protobuf_export(session_id: str = "ba:acme:s:1") -> bytes:
    """Two real SDK spans (parent and child) serialized as the OTLP/HTTP exporter does."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sink-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("sink-test")
    with tracer.start_as_current_span("invoke_agent chat", attributes={"session.id": session_id}):
        with tracer.start_as_current_span("chat model") as span:
            span.set_attribute("session.id", session_id)
            span.set_attribute("gen_ai.usage.input_tokens", 12)
    return bytes(encode_spans(exporter.get_finished_spans()).SerializeToString())


def json_export(*spans: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [_kv("service.name", "sink-test")]},
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
                }
            ]
        }
    ).encode()


def json_span(trace_id: str = TRACE_ID, span_id: str = SPAN_ID, **extra: Any) -> dict[str, Any]:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "chat model",
        "kind": 1,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [_kv("session.id", "gov:acme:s:9"), {"key": "n", "value": {"intValue": "3"}}],
    }
    return span | extra


def _kv(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def post(client: TestClient, body: bytes, **headers: str) -> Any:
    sent = {"authorization": AUTH, "content-type": "application/x-protobuf"}
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    return client.post(TRACES_PATH, content=body, headers=sent)


def test_gzip_protobuf_export_with_ingestion_version_4_is_stored(
    client: TestClient, store: SinkStore
) -> None:
    response = post(
        client,
        gzip.compress(protobuf_export()),
        content_encoding="gzip",
        x_langfuse_ingestion_version="4",
    )

    assert response.status_code == 200
    assert response.json() == {}
    spans = store.spans()
    assert [span["name"] for span in spans] == ["chat model", "invoke_agent chat"]
    child, root = spans
    assert child["parent_span_id"] == root["span_id"]
    assert child["trace_id"] == root["trace_id"] and len(child["trace_id"]) == 32
    assert child["attributes"] == {"session.id": "ba:acme:s:1", "gen_ai.usage.input_tokens": 12}
    assert root["resource_attributes"]["service.name"] == "sink-test"
    assert (child["content_encoding"], child["ingestion_version"], child["auth_ok"]) == (
        "gzip",
        "4",
        True,
    )


def test_otlp_json_with_hex_ids_is_accepted(client: TestClient, store: SinkStore) -> None:
    response = post(client, json_export(json_span()), content_type="application/json")

    assert response.status_code == 200
    [span] = store.spans()
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (TRACE_ID, SPAN_ID, None)
    assert span["attributes"] == {"session.id": "gov:acme:s:9", "n": 3}
    assert span["start_time_unix_nano"] == 1_700_000_000_000_000_000


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(b"pk-lf-test:wrong").decode(),
        AUTH.replace("Basic", "Bearer"),
        "Basic not-base64!",
    ],
)
def test_missing_or_wrong_credentials_get_401_and_nothing_is_stored(
    client: TestClient, store: SinkStore, authorization: str | None
) -> None:
    headers = {"content-type": "application/x-protobuf"}
    if authorization is not None:
        headers["authorization"] = authorization

    response = client.post(TRACES_PATH, content=protobuf_export(), headers=headers)

    assert response.status_code == 401
    assert store.spans() == []
    assert [request["auth_ok"] for request in store.requests()] == [False]


@pytest.mark.parametrize("content_type", ["text/plain", "application/protobuf", "application/xml"])
def test_other_content_types_get_400(
    client: TestClient, store: SinkStore, content_type: str
) -> None:
    response = post(client, protobuf_export(), content_type=content_type)

    assert response.status_code == 400
    assert "content type" in response.json()["error"]
    assert store.spans() == []


@pytest.mark.parametrize("encoding", ["zstd", "snappy", "deflate"])
def test_encodings_other_than_gzip_get_400(
    client: TestClient, store: SinkStore, encoding: str
) -> None:
    response = post(client, protobuf_export(), content_encoding=encoding)

    assert response.status_code == 400
    assert "content encoding" in response.json()["error"]
    assert store.spans() == []


@pytest.mark.parametrize("version", ["5", "abc", "4.5", "10"])
def test_ingestion_version_not_a_number_or_above_4_gets_400(
    client: TestClient, store: SinkStore, version: str
) -> None:
    response = post(client, protobuf_export(), x_langfuse_ingestion_version=version)

    assert response.status_code == 400
    assert "ingestion-version" in response.json()["error"]
    assert store.spans() == []


@pytest.mark.parametrize(
    "bad_span",
    [
        json_span(trace_id=""),
        json_span(span_id="xyz"),
        json_span(trace_id="0" * 32),
        json_span(span_id=base64.b64encode(bytes.fromhex(SPAN_ID)).decode()),
        json_span(parentSpanId="1234"),
        {k: v for k, v in json_span().items() if k != "spanId"},
    ],
    ids=["empty-trace", "non-hex-span", "zero-trace", "base64-span", "short-parent", "no-span-id"],
)
def test_one_bad_id_rejects_the_whole_request(
    client: TestClient, store: SinkStore, bad_span: dict[str, Any]
) -> None:
    good = json_span(span_id="aaaaaaaaaaaaaaaa")

    response = post(client, json_export(good, bad_span), content_type="application/json")

    assert response.status_code == 400
    assert store.spans() == []


def test_protobuf_span_with_short_id_rejects_the_whole_request(
    client: TestClient, store: SinkStore
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(protobuf_export())
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"

    response = post(client, request.SerializeToString())

    assert response.status_code == 400
    assert store.spans() == []


def test_injected_fault_answers_every_export_until_cleared(
    client: TestClient, store: SinkStore
) -> None:
    assert client.post("/_dev/fault", json={"status": 503}).status_code == 200

    assert post(client, protobuf_export()).status_code == 503
    assert client.get("/_dev/stats").json()["fault"] == 503

    client.delete("/_dev/fault")
    assert post(client, protobuf_export()).status_code == 200
    stats = client.get("/_dev/stats").json()
    assert stats["requests"] == {"503": 1, "200": 1}
    assert stats["spans"] == 2 and stats["traces"] == 1
    assert len(client.get("/_dev/spans").json()) == 2
