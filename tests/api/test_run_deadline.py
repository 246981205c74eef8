"""A run has one wall-clock deadline over all its LLM calls and tools (RUN_TIMEOUT_SECONDS)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence

import httpx
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from api_support import Seed, chat_body, run_body, scheduler_headers, spans_of_trace, user_headers
from service.config import Settings
from service.graphs import GraphExecutor, GraphRunError, RunInput, default_registry
from service.graphs.executor import RunDeadlineError
from service.llm import ChatMessage, Completion, LLMProvider, OfflineProvider
from service.llm.openai_compatible import OpenAICompatibleProvider
from service.main import create_app
from service.store import Database, IdempotencyStatus, get_idempotency_record
from sessiontrace import ContextPropagatingExecutor
from service.caller import CallerContext, bind_caller
from sessiontrace import derive_schedule_session_id
from trace_support import LEVEL, RUN_OUTCOME, attributes, only, outcomes

REVIEW = "builtin:governance-review"
RUNS = f"/api/internal/graphs/{REVIEW}/runs"
INPUT = RunInput(messages=(ChatMessage(role="user", content="review this"),))
DEADLINE_STATUS = "service.graphs.executor.RunDeadlineError: run exceeded its deadline of 0.5 s"


class TricklingBody(httpx.AsyncByteStream):
    """A chat completion sent a few bytes at a time: every read is quick, the whole is slow.

    What defeats an LLM timeout, which applies to each read, not to the answer.
    """

    def __init__(self, *, pause: float, pieces: int) -> None:
        self._payload = json.dumps({
            "model": "gpt-test",
            "choices": [{"message": {"role": "assistant", "content": "a slow answer"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3},
        }).encode()
        self._pause = pause
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = -(-len(self._payload) // self._pieces)
        for start in range(0, len(self._payload), size):
            await asyncio.sleep(self._pause)
            yield self._payload[start:start + size]


def trickling_llm(*, pause: float = 0.1, pieces: int = 30) -> LLMProvider:
    """An OpenAI-compatible provider whose every answer trickles in (3 s by default)."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=TricklingBody(pause=pause, pieces=pieces))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), timeout=1.0)
    return OpenAICompatibleProvider(client=client, base_url="http://llm.test/v1", model="gpt-test")


class SlowProvider(OfflineProvider):
    """Each call takes `seconds`: alone within the deadline, not all of them together."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self.calls = 0

    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        self.calls += 1
        await asyncio.sleep(self._seconds)
        return await super().complete(messages, model=model)


def caller() -> CallerContext:
    return CallerContext(
        billing_account_id="acme", user_id="alice",
        session_id=derive_schedule_session_id("acme", "governance:community"),
        request_id="req-1", run_id="run-1", trigger="schedule", graph_id=REVIEW,
        schedule_id="governance:community",
    )


def run_review(executor: GraphExecutor) -> tuple[GraphRunError, float]:
    """Run governance-review, which must fail; the error and how long the run took."""

    async def run() -> None:
        asyncio.get_running_loop().set_default_executor(ContextPropagatingExecutor())
        graph = default_registry().get(REVIEW)
        assert graph is not None
        with bind_caller(caller()):
            await executor.run(graph, INPUT)

    started = time.monotonic()
    try:
        asyncio.run(run())
    except GraphRunError as exc:
        return exc, time.monotonic() - started
    raise AssertionError("the run did not fail")


def assert_failed_by_the_deadline(spans: Sequence[ReadableSpan]) -> None:
    """One error outcome; the run span and the node that overran say it was the deadline."""
    assert outcomes(spans) == ["error"]
    run = only(spans, "invoke_agent")
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == DEADLINE_STATUS
    assert attributes(run)["langfuse.observation.status_message"] == DEADLINE_STATUS
    assert attributes(run)[LEVEL] == "ERROR"
    overran = only(spans, "node assess")  # the node of the first LLM call
    assert overran.status.status_code is StatusCode.ERROR
    assert overran.status.description == DEADLINE_STATUS
    assert only(spans, "node gather").status.status_code is StatusCode.UNSET  # done in time
    # The LLM call it was waiting for was abandoned, and its span ended.
    assert only(spans, "chat ").end_time is not None
    assert not [span for span in spans if span.name == "node summarize"]  # never started


def test_a_run_still_waiting_for_a_trickling_llm_fails_at_its_deadline(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    executor = GraphExecutor(
        tracer=tracer_provider.get_tracer("test"), llm=trickling_llm(), run_timeout=0.5
    )

    error, took = run_review(executor)

    assert str(error) == "run exceeded its deadline of 0.5 s"
    assert isinstance(error.__cause__, RunDeadlineError)
    assert 0.5 <= took < 2.0  # not the 3 s the answer takes to trickle in
    assert_failed_by_the_deadline(exporter.get_finished_spans())


def test_the_deadline_covers_all_llm_calls_of_a_run_together(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    provider = SlowProvider(0.35)  # each call fits in 0.5 s, the two do not
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("test"), llm=provider,
                             run_timeout=0.5)

    error, took = run_review(executor)

    assert str(error) == "run exceeded its deadline of 0.5 s"
    assert provider.calls == 2 and took < 1.5
    spans = exporter.get_finished_spans()
    assert outcomes(spans) == ["error"]
    assert only(spans, "node assess").status.status_code is StatusCode.UNSET
    assert only(spans, "node summarize").status.description == DEADLINE_STATUS


def test_a_governance_run_past_its_deadline_answers_and_stores_ok_false_with_the_deadline(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    database: Database, seed: Seed,
) -> None:
    short = settings.model_copy(update={"run_timeout_seconds": 0.5})
    app = create_app(short, tracer_provider=tracer_provider, llm_provider=trickling_llm())
    with TestClient(app) as client:
        response = client.post(RUNS, json=run_body(seed.acme_grant),
                               headers=scheduler_headers("k-deadline"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False and body["error"] == "run exceeded its deadline of 0.5 s"
    record = get_idempotency_record(database, "k-deadline")
    assert record is not None and record.status is IdempotencyStatus.FINISHED
    assert record.response == body
    assert_failed_by_the_deadline(spans_of_trace(exporter, body["traceId"]))


def test_a_chat_run_past_its_deadline_answers_502_run_failed_with_the_deadline(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    short = settings.model_copy(update={"run_timeout_seconds": 0.5})
    app = create_app(short, tracer_provider=tracer_provider, llm_provider=trickling_llm())
    with TestClient(app) as client:
        response = client.post("/api/v1/ai/chat", json=chat_body(),
                               headers=user_headers(seed.alice_key))

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "run_failed"
    assert response.json()["message"] == "run exceeded its deadline of 0.5 s"
    spans = spans_of_trace(exporter, response.json()["traceId"])
    assert [attributes(span)[RUN_OUTCOME] for span in spans if RUN_OUTCOME in attributes(span)] == [
        "error"
    ]
    assert only(spans, "invoke_agent").status.description == DEADLINE_STATUS
