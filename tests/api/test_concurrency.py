"""200 interleaved user and governance runs at once: no span loses or swaps its session."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import Seed, chat_body, run_body, scheduler_headers, spans_of_trace, user_headers
from service.config import Settings
from service.llm import ChatMessage, Completion, OfflineProvider
from service.main import create_app
from sessiontrace.attributes import SESSION_ID, USER_ID

RUNS = 200
SPANS_PER_CHAT = 4  # server, invoke_agent, node, chat
SPANS_PER_REVIEW = 9  # server, invoke_agent, 3 nodes, 2 tools, 2 chats


class JitteryProvider(OfflineProvider):
    """The offline provider with a random pause, so runs interleave at every LLM call."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._random = random.Random(seed)

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        await asyncio.sleep(self._random.uniform(0, 0.01))
        return await super().complete(messages, model=model)


def test_200_interleaved_runs_keep_every_span_in_its_own_session(
    settings: Settings,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    # All of them in flight at once, past the default MAX_INFLIGHT_RUNS.
    unlimited = settings.model_copy(update={"max_inflight_runs": RUNS})
    app = create_app(unlimited, tracer_provider=tracer_provider, llm_provider=JitteryProvider(7))
    requests = [_request(index, seed) for index in range(RUNS)]

    responses = asyncio.run(_send_all(app, requests))

    expected_spans = 0
    for (_, _, _, user, spans_per_run), response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.get("ok", True) is True, body
        spans = spans_of_trace(exporter, body["traceId"])
        assert len(spans) == spans_per_run
        for span in spans:
            assert span.attributes is not None
            assert span.attributes.get(SESSION_ID) == body["sessionId"], span.name
            assert span.attributes.get(USER_ID) == user, span.name
        expected_spans += spans_per_run
    every_span = exporter.get_finished_spans()
    assert len(every_span) == expected_spans
    assert [s.name for s in every_span if not (s.attributes or {}).get(SESSION_ID)] == []
    assert len({r.json()["traceId"] for r in responses}) == RUNS
    assert _most_runs_in_flight(every_span) > RUNS // 4, "the runs did not interleave"


def _most_runs_in_flight(spans: Sequence[ReadableSpan]) -> int:
    events = sorted(
        (moment, step)
        for span in spans if span.name.startswith("invoke_agent")
        for moment, step in ((span.start_time, 1), (span.end_time, -1))
    )
    in_flight = most = 0
    for _, step in events:
        in_flight += step
        most = max(most, in_flight)
    return most


Request = tuple[str, dict[str, str], dict[str, object], str, int]


def _request(index: int, seed: Seed) -> Request:
    """Alternate users of two accounts and schedules of two accounts."""
    kind = index % 4
    if kind == 0:
        return ("/api/v1/ai/chat", user_headers(seed.alice_key),
                chat_body(f"question {index}", stateKey=f"thread-{index % 5}"), "alice",
                SPANS_PER_CHAT)
    if kind == 1:
        return ("/api/v1/ai/chat", user_headers(seed.bob_key),
                chat_body(f"question {index}", stateKey=f"thread-{index % 5}"), "bob",
                SPANS_PER_CHAT)
    schedule = f"governance:{'community' if index % 3 else 'billing'}"
    grant, user = (seed.acme_grant, "alice") if kind == 2 else (seed.globex_grant, "bob")
    return ("/api/internal/graphs/builtin:governance-review/runs",
            scheduler_headers(f"{schedule}:{index}"),
            run_body(grant, scheduleId=schedule), user, SPANS_PER_REVIEW)


async def _send_all(app: FastAPI, requests: list[Request]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return list(await asyncio.gather(*(
                client.post(path, headers=headers, json=body)
                for path, headers, body, _, _ in requests
            )))
