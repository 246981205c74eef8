"""The graph executor: no bound caller, no run; with one, the GenAI span tree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from api_support import Seed, chat_body
from service.config import Settings
from service.graphs import Graph, GraphExecutor, GraphRunError, RunInput, default_registry
from service.graphs import payloads
from service.llm import ChatMessage, Completion, LLMError, OfflineProvider
from service.main import create_app
from sessiontrace import (
    ContextPropagatingExecutor,
    SessionSpanProcessor,
    _payload,
    configure_tracing,
    derive_schedule_session_id,
    encode_payload,
)
from service.caller import CallerContext, MissingCallerError, bind_caller
from sessiontrace.attributes import SESSION_ID, USER_ID

INPUT = RunInput(messages=(ChatMessage(role="user", content="review this"),))
REVIEW = "builtin:governance-review"


def caller(graph_id: str = REVIEW) -> CallerContext:
    return CallerContext(
        billing_account_id="acme", user_id="alice",
        session_id=derive_schedule_session_id("acme", "governance:community"),
        request_id="req-1", run_id="run-1", trigger="schedule", graph_id=graph_id,
        schedule_id="governance:community",
    )


@pytest.fixture
def executor(tracer_provider: TracerProvider) -> GraphExecutor:
    return GraphExecutor(tracer=tracer_provider.get_tracer("test"), llm=OfflineProvider())


def graph(graph_id: str = REVIEW) -> Graph:
    found = default_registry().get(graph_id)
    assert found is not None
    return found


def test_the_executor_refuses_to_start_a_run_without_a_bound_caller(
    executor: GraphExecutor, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(MissingCallerError):
        asyncio.run(executor.run(graph(), INPUT))

    assert exporter.get_finished_spans() == ()


def test_the_executor_refuses_a_caller_bound_for_another_graph(
    executor: GraphExecutor, exporter: InMemorySpanExporter
) -> None:
    async def run() -> None:
        with bind_caller(caller(graph_id="builtin:chat")):
            await executor.run(graph(REVIEW), INPUT)

    with pytest.raises(ValueError, match="builtin:chat"):
        asyncio.run(run())
    assert exporter.get_finished_spans() == ()


def test_a_run_with_a_bound_caller_stamps_its_session_on_every_span_including_tool_threads(
    executor: GraphExecutor, exporter: InMemorySpanExporter
) -> None:
    async def run() -> str:
        # As in the service: the tools run in the loop's default executor.
        asyncio.get_running_loop().set_default_executor(ContextPropagatingExecutor())
        with bind_caller(caller()):
            return (await executor.run(graph(), INPUT)).answer

    answer = asyncio.run(run())

    assert answer
    spans = exporter.get_finished_spans()
    assert len(spans) == 8  # invoke_agent, 3 nodes, 2 tools, 2 chats
    assert {(s.attributes or {}).get(SESSION_ID) for s in spans} == {caller().session_id}
    assert {(s.attributes or {}).get(USER_ID) for s in spans} == {"alice"}
    root = [s for s in spans if s.parent is None]
    assert [s.name for s in root] == ["invoke_agent builtin:governance-review"]


class FailingProvider(OfflineProvider):
    async def complete(self, messages: Sequence[ChatMessage], *, model: str) -> Completion:
        raise LLMError("upstream answered 503")


def test_a_failing_llm_call_fails_the_run_and_marks_its_spans_as_errors(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("test"), llm=FailingProvider())

    async def run() -> None:
        with bind_caller(caller(graph_id="builtin:chat")):
            await executor.run(graph("builtin:chat"), INPUT)

    with pytest.raises(GraphRunError, match="upstream answered 503") as failure:
        asyncio.run(run())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert failure.value.trace_id is not None
    assert not spans["invoke_agent builtin:chat"].status.is_ok
    assert not spans["chat offline-echo"].status.is_ok
    assert {(s.attributes or {}).get(SESSION_ID) for s in spans.values()} == {caller().session_id}


def _untraced_provider(kind: str, monkeypatch: pytest.MonkeyPatch) -> TracerProvider:
    if kind == "OTEL_SDK_DISABLED":
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        return configure_tracing(service_name="test", exporter=InMemorySpanExporter())
    sampled_out = TracerProvider(sampler=ALWAYS_OFF)  # every span a NonRecordingSpan
    sampled_out.add_span_processor(SessionSpanProcessor(strict=True))
    return sampled_out


def _count_payload_work(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Calls of what encodes a payload and of what scrubs any text, counted from now on."""
    calls = {"encode_payload": 0, "scrub text": 0}

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)
        return counted

    monkeypatch.setattr(payloads, "encode_payload",
                        counting("encode_payload", encode_payload))
    monkeypatch.setattr(_payload, "_mask_string", counting("scrub text", _payload._mask_string))
    return calls


def _run_review(executor: GraphExecutor, *, fail: bool = False) -> None:
    async def run() -> None:
        asyncio.get_running_loop().set_default_executor(ContextPropagatingExecutor())
        with bind_caller(caller()):
            await executor.run(graph(), INPUT)

    if fail:
        with pytest.raises(GraphRunError):
            asyncio.run(run())
    else:
        asyncio.run(run())


@pytest.mark.parametrize("untraced", ["OTEL_SDK_DISABLED", "sampled out"])
def test_a_run_whose_spans_do_not_record_scrubs_and_encodes_no_payload(
    untraced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _untraced_provider(untraced, monkeypatch)
    calls = _count_payload_work(monkeypatch)
    tracer = provider.get_tracer("test")

    # The governance review: run input and output, two LLM calls, two tools; then a run
    # that fails, whose error a recording span would show scrubbed.
    _run_review(GraphExecutor(tracer=tracer, llm=OfflineProvider()))
    _run_review(GraphExecutor(tracer=tracer, llm=FailingProvider()), fail=True)

    assert calls == {"encode_payload": 0, "scrub text": 0}


@pytest.mark.parametrize("untraced", ["OTEL_SDK_DISABLED", "sampled out"])
def test_a_failed_chat_whose_spans_do_not_record_scrubs_no_error_message(
    untraced: str, settings: Settings, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _untraced_provider(untraced, monkeypatch)
    app = create_app(settings, tracer_provider=provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        calls = _count_payload_work(monkeypatch)
        response = client.post("/api/v1/ai/chat", json=chat_body(),
                               headers={"Authorization": f"Bearer {seed.alice_key}"})

    # The route marks the server span with the node's error, scrubbed, only if it records.
    assert response.status_code == 502, response.text
    assert calls == {"encode_payload": 0, "scrub text": 0}


def test_a_recording_run_encodes_each_payload_once(
    executor: GraphExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counterpart of the test above, so that its zero counts mean something.
    calls = _count_payload_work(monkeypatch)

    _run_review(executor)

    # Run input and output, each LLM call's messages in and out, each tool's in and out.
    assert calls["encode_payload"] == 2 + 2 * 2 + 2 * 2
    assert calls["scrub text"] > 0
