"""Health probes (untraced) and request ids echoed on every response."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import Seed, chat_body, user_headers
from service.config import Settings, sqlite_path


def test_healthz_and_readyz_answer_without_creating_spans(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")

    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert exporter.get_finished_spans() == ()


def test_readyz_fails_when_the_database_is_gone(client: TestClient, settings: Settings) -> None:
    sqlite_path(settings.database_url).unlink()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


def test_start_up_creates_the_database_directory_and_schema(
    client: TestClient, settings: Settings
) -> None:
    assert sqlite_path(settings.database_url).is_file()
    assert client.get("/readyz").status_code == 200


def test_a_well_formed_request_id_is_echoed_and_a_malformed_one_replaced(
    client: TestClient, seed: Seed
) -> None:
    kept = client.post("/api/v1/ai/chat", json=chat_body(),
                       headers=user_headers(seed.alice_key, **{"X-Request-ID": "req-42.a"}))
    replaced = client.post("/api/v1/ai/chat", json=chat_body(),
                           headers=user_headers(seed.alice_key, **{"X-Request-ID": "bad id!"}))
    refused = client.post("/api/v1/ai/chat", json=chat_body())

    assert kept.headers["X-Request-ID"] == "req-42.a"
    assert replaced.headers["X-Request-ID"] not in ("", "bad id!")
    assert len(refused.headers["X-Request-ID"]) == 32  # generated, also on errors


def test_an_unknown_path_answers_the_json_error_shape(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_openapi_documents_the_bodies_of_both_run_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    chat = paths["/api/v1/ai/chat"]["post"]["requestBody"]["content"]["application/json"]
    runs = paths["/api/internal/graphs/{graph_id}/runs"]["post"]["requestBody"]
    assert "stateKey" in chat["schema"]["properties"]
    assert "executionGrantId" in runs["content"]["application/json"]["schema"]["properties"]
