"""Which path may run a graph: the governance review never runs from chat."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import Seed, chat_body, run_body, run_spans, scheduler_headers, user_headers
from service.graphs import Graph, GraphRegistry, Node, default_registry
from service.graphs.builtin import BUILTIN_GRAPHS

REVIEW = "builtin:governance-review"


@pytest.mark.parametrize("stream", [False, True])
def test_chat_refuses_the_governance_review_with_403_and_runs_nothing(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter, stream: bool
) -> None:
    response = client.post("/api/v1/ai/chat", json=chat_body(graphId=REVIEW, stream=stream),
                           headers=user_headers(seed.alice_key))

    assert response.status_code == 403
    assert response.json()["error"] == "graph_not_allowed"
    assert run_spans(exporter) == []


def test_the_governance_review_still_runs_on_the_governance_path_with_a_grant(
    client: TestClient, seed: Seed
) -> None:
    response = client.post(f"/api/internal/graphs/{REVIEW}/runs", json=run_body(seed.acme_grant),
                           headers=scheduler_headers("access-1"))

    assert response.status_code == 200 and response.json()["ok"] is True


def test_each_builtin_graph_says_which_paths_run_it() -> None:
    registry = default_registry()
    chat, review = registry.get("builtin:chat"), registry.get(REVIEW)
    assert chat is not None and review is not None
    assert chat.runs_on("user") and chat.runs_on("schedule")
    assert not review.runs_on("user") and review.runs_on("schedule")


async def _noop(*_: object) -> None:
    return None


@pytest.mark.parametrize("triggers", [frozenset(), frozenset({"cron"})])
def test_a_graph_must_name_known_paths(triggers: frozenset[str]) -> None:
    with pytest.raises(ValueError, match="triggers"):
        Graph(id="x:y", description="", nodes=(Node("n", _noop),), triggers=triggers)  # type: ignore[arg-type]


def test_the_governance_path_refuses_a_graph_that_runs_from_chat_only(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    chat_only = Graph(id="custom:chat-only", description="", nodes=(Node("n", _noop),),
                      triggers=frozenset({"user"}))
    client.app.state.services = dataclasses.replace(  # type: ignore[attr-defined]
        services, registry=GraphRegistry([*BUILTIN_GRAPHS, chat_only])
    )

    response = client.post("/api/internal/graphs/custom:chat-only/runs",
                           json=run_body(seed.acme_grant), headers=scheduler_headers("access-2"))

    assert response.status_code == 403
    assert response.json()["error"] == "graph_not_allowed"
    assert run_spans(exporter) == []
