"""Idempotency-Key on the internal runs route: one run per key, its outcome kept in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from api_support import (
    BACKENDS,
    GatedProvider,
    Seed,
    app_client,
    run_body,
    run_spans,
    scheduler_headers,
    spans_of_trace,
    wait_for,
)
from service.config import Settings
from service.idempotency import IDEMPOTENCY_RUN_ID, IDEMPOTENCY_STATUS, REPLAYED_HEADER
from service.llm import ChatMessage, Completion, LLMError, OfflineProvider
from service.main import create_app
from service.store import (
    ClaimedRun,
    Database,
    IdempotencyStatus,
    claim_idempotency_key,
    get_idempotency_record,
    revoke_grant,
)
from sessiontrace import derive_schedule_session_id
from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_METADATA_PREFIX,
    SESSION_ID,
    USER_ID,
)

# The route's rules on both stores.
pytestmark = pytest.mark.parametrize("backend", BACKENDS)

RUNS = "/api/internal/graphs/builtin:governance-review/runs"
KEY = "governance:community:2026-11-23T08:00:00Z"


def community_run(grant: str, text: str = "review last week's activity") -> dict[str, object]:
    return run_body(
        grant, scheduleId="governance:community", scheduledFor="2026-11-23T08:00:00Z",
        input={"messages": [{"role": "user", "content": text}]},
    )


def test_a_new_key_starts_one_run_and_stores_its_outcome(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    response = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert response.status_code == 200, response.text
    assert REPLAYED_HEADER not in response.headers
    body = response.json()
    assert body["ok"] is True
    assert len(run_spans(exporter)) == 1
    record = get_idempotency_record(database, KEY)
    assert record is not None
    assert record.status is IdempotencyStatus.FINISHED
    assert record.response == body
    assert record.run.grant_id == seed.acme_grant and record.run.schedule_id == "governance:community"
    assert record.finished_at is not None and record.finished_at >= record.created_at


def test_replaying_a_finished_key_returns_the_stored_body_and_starts_no_run(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    first = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
    spans_after_first = len(exporter.get_finished_spans())

    replay = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers[REPLAYED_HEADER] == "true"
    assert len(run_spans(exporter)) == 1
    (replay_span,) = exporter.get_finished_spans()[spans_after_first:]
    # Only the replay's own server span, in its own trace, with no session: it starts no run, so
    # the collector keeps it out of Langfuse (one trace per run); it names the run it answered.
    assert replay_span.kind is SpanKind.SERVER
    assert replay_span.context is not None
    assert format_trace_id(replay_span.context.trace_id) != first.json()["traceId"]
    attributes = replay_span.attributes or {}
    assert SESSION_ID not in attributes and USER_ID not in attributes
    assert LANGFUSE_SESSION_ID not in attributes
    assert attributes[IDEMPOTENCY_STATUS] == "replayed"
    assert attributes[IDEMPOTENCY_RUN_ID] == first.json()["runId"]


def test_a_key_whose_run_is_still_pending_answers_409_and_starts_nothing(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    claim_idempotency_key(
        database, KEY, request_hash=_hash_of(community_run(seed.acme_grant)),
        run=_claimed_run(seed.acme_grant),
    )

    response = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_key_in_progress"
    assert KEY in response.json()["message"] and "still in progress" in response.json()["message"]
    assert run_spans(exporter) == []


def test_the_same_key_with_another_payload_answers_422_and_starts_nothing(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    other_input = client.post(RUNS, json=community_run(seed.acme_grant, "something else"),
                              headers=scheduler_headers(KEY))
    other_graph = client.post("/api/internal/graphs/builtin:chat/runs",
                              json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    for response in (other_input, other_graph):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "idempotency_key_reused"
        assert KEY in response.json()["message"]
    assert len(run_spans(exporter)) == 1
    conflicts = [s for s in exporter.get_finished_spans()
                 if (s.attributes or {}).get(IDEMPOTENCY_STATUS) == "conflict"]
    assert len(conflicts) == 2
    assert all(SESSION_ID not in (s.attributes or {}) for s in conflicts)


def test_a_key_of_one_billing_account_is_refused_for_another_not_replayed(
    client: TestClient, seed: Seed
) -> None:
    acme = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    globex = client.post(RUNS, json=community_run(seed.globex_grant), headers=scheduler_headers(KEY))

    assert acme.status_code == 200
    assert globex.status_code == 422
    assert acme.json()["sessionId"] not in globex.text


def test_two_concurrent_requests_with_one_key_start_exactly_one_run(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = GatedProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    keys = [f"governance:community:2026-11-{day:02d}T08:00:00Z" for day in range(1, 11)]

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with app_client(app) as client:
            tasks = [
                asyncio.create_task(
                    client.post(RUNS, json=community_run(seed.acme_grant),
                                headers=scheduler_headers(key))
                )
                for key in keys for _ in range(2)
            ]
            # Every loser answers while every winner's run is held inside its LLM call.
            await wait_for(lambda: provider.calls == len(keys), timeout=10)
            await wait_for(lambda: sum(t.done() for t in tasks) == len(keys), timeout=10)
            early = [t.result() for t in tasks if t.done()]
            provider.release.set()
            return early, list(await asyncio.gather(*tasks))

    early, responses = asyncio.run(scenario())

    assert [r.status_code for r in early] == [409] * len(keys)
    assert {r.json()["error"] for r in early} == {"idempotency_key_in_progress"}
    assert sorted(r.status_code for r in responses) == [200] * len(keys) + [409] * len(keys)
    assert len(run_spans(exporter)) == len(keys)
    assert provider.calls == len(keys) * 2  # governance-review makes two LLM calls per run


def test_a_failed_run_is_stored_and_replayed_as_ok_false(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=_FailingProvider())
    with TestClient(app) as client:
        first = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
        replay = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert first.status_code == replay.status_code == 200
    assert first.json()["ok"] is False and "LLM is down" in first.json()["error"]
    assert replay.json() == first.json()
    assert len(run_spans(exporter)) == 1


def test_a_pending_key_abandoned_longer_than_the_timeout_runs_again(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    # What a process that died mid-run leaves behind: a pending record, long ago.
    claim_idempotency_key(
        database, KEY, request_hash=_hash_of(community_run(seed.acme_grant)),
        run=_claimed_run(seed.acme_grant),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )

    response = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))

    assert response.status_code == 200 and response.json()["ok"] is True
    assert len(run_spans(exporter)) == 1
    record = get_idempotency_record(database, KEY)
    assert record is not None
    assert record.status is IdempotencyStatus.FINISHED and record.attempts == 2
    assert record.run.run_id == response.json()["runId"] != "run-of-dead-process"


def test_a_retaken_run_says_on_its_trace_which_earlier_attempt_it_retakes(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    claim_idempotency_key(
        database, KEY, request_hash=_hash_of(community_run(seed.acme_grant)),
        run=_claimed_run(seed.acme_grant),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )

    retaken = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
    fresh = client.post(RUNS, json=community_run(seed.acme_grant),
                        headers=scheduler_headers(KEY + "-next"))

    retakes = LANGFUSE_TRACE_METADATA_PREFIX + "retakes_run_id"
    attempt = LANGFUSE_TRACE_METADATA_PREFIX + "attempt"
    spans = spans_of_trace(exporter, retaken.json()["traceId"])
    root = [span for span in spans if span.parent is None]
    agent = [span for span in spans if span.name.startswith("invoke_agent")]
    assert len(root) == 1 and len(agent) == 1
    for span in (root[0], agent[0]):
        attributes = span.attributes or {}
        assert attributes[retakes] == "run-of-dead-process", span.name
        assert attributes[attempt] == "2", span.name
        assert attributes[LANGFUSE_TRACE_METADATA_PREFIX + "run_id"] == retaken.json()["runId"]
    assert (root[0].attributes or {})[IDEMPOTENCY_STATUS] == "resumed"
    for span in spans_of_trace(exporter, fresh.json()["traceId"]):
        assert retakes not in (span.attributes or {}) and attempt not in (span.attributes or {})


def test_with_a_zero_pending_timeout_an_abandoned_key_stays_pending(
    settings: Settings, tracer_provider: TracerProvider, database: Database, seed: Seed,
) -> None:
    claim_idempotency_key(
        database, KEY, request_hash=_hash_of(community_run(seed.acme_grant)),
        run=_claimed_run(seed.acme_grant),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
    )
    never = settings.model_copy(update={"idempotency_pending_timeout_seconds": 0.0})

    with TestClient(create_app(never, tracer_provider=tracer_provider)) as client:
        response = client.post(RUNS, json=community_run(seed.acme_grant),
                               headers=scheduler_headers(KEY))

    assert response.status_code == 409


def test_a_refused_request_does_not_use_up_its_key(
    client: TestClient, seed: Seed, database: Database
) -> None:
    refused = client.post(RUNS, json=community_run(seed.revoked_grant),
                          headers=scheduler_headers(KEY))

    accepted = client.post(RUNS, json=community_run(seed.acme_grant),
                           headers=scheduler_headers(KEY))

    assert refused.status_code == 403
    assert accepted.status_code == 200 and accepted.json()["ok"] is True


def test_a_finished_key_is_replayed_even_after_its_grant_is_revoked(
    client: TestClient, seed: Seed, database: Database, exporter: InMemorySpanExporter
) -> None:
    first = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
    revoke_grant(database, seed.acme_grant)

    replay = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
    new_key = client.post(RUNS, json=community_run(seed.acme_grant),
                          headers=scheduler_headers(KEY + "-retry"))

    assert replay.status_code == 200 and replay.json() == first.json()
    assert new_key.status_code == 403 and new_key.json()["error"] == "grant_revoked"
    assert len(run_spans(exporter)) == 1


@pytest.mark.parametrize(
    "scheduled_for",
    ["2026-11-23T08:00:00+00:00", "2026-11-23T09:00:00+01:00", "2026-11-23T08:00:00.000Z"],
)
def test_one_instant_written_with_any_offset_is_the_same_request(
    client: TestClient, seed: Seed, scheduled_for: str
) -> None:
    first = client.post(RUNS, json=community_run(seed.acme_grant), headers=scheduler_headers(KEY))
    same = client.post(RUNS, json={**community_run(seed.acme_grant), "scheduledFor": scheduled_for},
                       headers=scheduler_headers(KEY))

    assert same.status_code == 200 and same.json() == first.json()


def _hash_of(body: dict[str, object]) -> str:
    from service.idempotency import request_hash
    from service.schemas import RunRequest

    return request_hash("builtin:governance-review", RunRequest.model_validate(body))


def _claimed_run(grant_id: str) -> ClaimedRun:
    return ClaimedRun(
        graph_id="builtin:governance-review", grant_id=grant_id, billing_account_id="acme",
        user_id="alice", schedule_id="governance:community", run_id="run-of-dead-process",
        session_id=derive_schedule_session_id("acme", "governance:community"),
    )


class _FailingProvider(OfflineProvider):
    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        raise LLMError("the LLM is down")

