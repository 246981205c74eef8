"""Every run records exactly one terminal outcome on its run span: success, error or aborted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id

from api_support import (
    Seed,
    alice_session,
    chat_body,
    run_body,
    scheduler_headers,
    spans_of_trace,
    user_headers,
)
from service.config import Settings
from service.graphs import Graph, GraphExecutor, GraphRunError, Node, RunInput, RunState
from service.graphs.outcome import recording_abort_reason
from service.graphs.runtime import NodeRuntime
from service.llm import ChatMessage, OfflineProvider
from service.main import create_app
from service.services import Services
from service.store import Database, create_billing_account, create_user
from sessiontrace import derive_user_session_id
from service.caller import CallerContext, bind_caller
from sessiontrace.attributes import (
    LANGFUSE_OBSERVATION_STATUS_MESSAGE,
    LANGFUSE_TRACE_METADATA_PREFIX,
    SESSION_ID,
    USER_ID,
)
from trace_support import (
    ERROR_TYPE,
    LEVEL,
    FailingProvider,
    StallingProvider,
    attributes,
    named,
    only,
    outcomes,
    traces,
)

REVIEW = "/api/internal/graphs/builtin:governance-review/runs"
CHAT = "/api/v1/ai/chat"
LLM_ERROR = "service.llm.base.LLMError"
FAILURE_MESSAGE = f"{LLM_ERROR}: LLM answered 503 for model 'offline-echo'"
STATUS_MESSAGE = LANGFUSE_OBSERVATION_STATUS_MESSAGE
RUN_ID = f"{LANGFUSE_TRACE_METADATA_PREFIX}run_id"


def error_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The spans whose status is ERROR."""
    return [span for span in spans if span.status.status_code is StatusCode.ERROR]


def server_span(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    """The one HTTP server span among `spans`."""
    (found,) = [span for span in spans if span.kind is SpanKind.SERVER]
    return found


def trace_id_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return format_trace_id(span.context.trace_id)


def test_a_successful_run_records_one_success_outcome_and_no_error_on_both_paths(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    chat = client.post("/api/v1/ai/chat", json=chat_body(), headers=user_headers(seed.alice_key))
    review = client.post(REVIEW, json=run_body(seed.acme_grant), headers=scheduler_headers("k-1"))

    for trace_id in (chat.json()["traceId"], review.json()["traceId"]):
        spans = spans_of_trace(exporter, trace_id)
        assert outcomes(spans) == ["success"]
        assert only(spans, "invoke_agent").status.status_code is StatusCode.UNSET
        assert not [span.name for span in spans if ERROR_TYPE in attributes(span)]


def test_a_failing_llm_call_records_one_error_outcome_with_its_type_on_both_paths(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        chat = client.post("/api/v1/ai/chat", json=chat_body(),
                           headers=user_headers(seed.alice_key))
        review = client.post(REVIEW, json=run_body(seed.acme_grant),
                             headers=scheduler_headers("k-2"))

    assert chat.status_code == 502 and review.json()["ok"] is False
    assert len(traces(exporter)) == 2
    for spans in traces(exporter).values():
        assert outcomes(spans) == ["error"]
        failing = only(spans, "chat ")
        run = only(spans, "invoke_agent")
        for span in (failing, run):
            assert span.status.status_code is StatusCode.ERROR, span.name
            assert attributes(span)[ERROR_TYPE] == LLM_ERROR, span.name
            assert attributes(span)[LEVEL] == "ERROR", span.name
        # The tools that ran before the failure succeeded, and say so.
        for tool in named(spans, "execute_tool"):
            assert tool.status.status_code is StatusCode.UNSET and LEVEL not in attributes(tool)


def test_every_error_span_of_a_failed_run_says_which_error_where_langfuse_reads_it(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        chat = client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key))
        review = client.post(REVIEW, json=run_body(seed.acme_grant),
                             headers=scheduler_headers("k-messages"))

    chat_spans = spans_of_trace(exporter, chat.json()["traceId"])
    review_spans = spans_of_trace(exporter, review.json()["traceId"])
    # The run's own spans: status description and Langfuse's status message alike.
    for spans in (chat_spans, review_spans):
        failed = [span for span in error_spans(spans) if span.kind is not SpanKind.SERVER]
        assert sorted(span.name.split()[0] for span in failed) == ["chat", "invoke_agent", "node"]
        for span in failed:
            assert span.status.description == FAILURE_MESSAGE, span.name
            assert attributes(span)[STATUS_MESSAGE] == FAILURE_MESSAGE, span.name
    # The chat's server span, ERROR from its 502, says the same.
    server = server_span(chat_spans)
    assert server.status.status_code is StatusCode.ERROR
    assert attributes(server)[STATUS_MESSAGE] == FAILURE_MESSAGE
    assert attributes(server)[LEVEL] == "ERROR"
    # The review's answered 200 (ok: false): its server span is no error.
    assert server_span(review_spans).status.status_code is StatusCode.UNSET


def test_a_masked_accounts_error_spans_give_the_error_type_only(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    database: Database,
) -> None:
    create_billing_account(database, "private", mask_content=True)
    key = create_user(database, billing_account_id="private", user_id="carol").api_key
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        response = client.post(CHAT, json=chat_body(), headers=user_headers(key))

    assert response.status_code == 502
    failed = error_spans(spans_of_trace(exporter, response.json()["traceId"]))
    assert len(failed) == 4  # chat, node, run and server spans
    for span in failed:
        assert attributes(span)[STATUS_MESSAGE] == f"{LLM_ERROR}: [content masked]", span.name


def test_a_failed_chat_answers_502_with_the_ids_of_its_run_and_trace(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        response = client.post(CHAT, json=chat_body(stateKey="t-failed"),
                               headers=user_headers(seed.alice_key))

    assert response.status_code == 502
    body = response.json()
    assert set(body) == {"error", "message", "runId", "traceId", "sessionId", "stateKey"}
    assert body["error"] == "run_failed" and "503" in body["message"]
    assert body["sessionId"] == alice_session("t-failed")
    assert body["stateKey"] == "t-failed"
    ((trace_id, spans),) = traces(exporter).items()
    assert body["traceId"] == trace_id
    assert attributes(only(spans, "invoke_agent"))[RUN_ID] == body["runId"]
    assert {attributes(span)[SESSION_ID] for span in spans} == {body["sessionId"]}


def test_a_failed_governance_run_answers_ok_false_with_the_ids_of_its_run_and_trace(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        response = client.post(REVIEW, json=run_body(seed.acme_grant, runId="run-failed-1"),
                               headers=scheduler_headers("k-ids"))

    body = response.json()
    assert response.status_code == 200 and body["ok"] is False and "503" in body["error"]
    ((trace_id, spans),) = traces(exporter).items()
    assert body["traceId"] == trace_id and body["runId"] == "run-failed-1"
    assert attributes(only(spans, "invoke_agent"))[RUN_ID] == "run-failed-1"
    assert {attributes(span)[SESSION_ID] for span in spans} == {body["sessionId"]}


class BrokenExecutor(GraphExecutor):
    """An executor that fails before any span of the run, as a broken store call would."""

    async def run(self, graph: Graph, run_input: RunInput, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")


def test_a_chat_whose_run_breaks_outside_its_nodes_answers_500_with_its_ids(
    app: FastAPI, tracer_provider: TracerProvider, exporter: InMemorySpanExporter, seed: Seed,
) -> None:
    with TestClient(app) as client:
        services = app.state.services
        assert isinstance(services, Services)
        # The executor fails before any span of the run.
        broken = BrokenExecutor(tracer=tracer_provider.get_tracer("t"), llm=OfflineProvider())
        app.state.services = dataclasses.replace(services, executor=broken)
        response = client.post(CHAT, json=chat_body(stateKey="t-500"),
                               headers=user_headers(seed.alice_key))

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error" and body["message"] == "internal server error"
    assert body["sessionId"] == alice_session("t-500")
    assert body["stateKey"] == "t-500" and body["runId"]
    (server,) = exporter.get_finished_spans()
    assert body["traceId"] == trace_id_of(server)
    assert server.status.status_code is StatusCode.ERROR
    # Not a node's failure: nothing says whether the account masks content, so the type only.
    assert attributes(server)[STATUS_MESSAGE] == "sqlite3.OperationalError: [content masked]"
    assert attributes(server)[LEVEL] == "ERROR"


def _caller(graph_id: str) -> CallerContext:
    return CallerContext(
        billing_account_id="acme", user_id="alice",
        session_id=derive_user_session_id("acme", "t"), request_id="r", run_id="run-1",
        trigger="user", graph_id=graph_id,
    )


def _run_graph(tracer_provider: TracerProvider, graph: Graph) -> None:
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("t"), llm=OfflineProvider())

    async def run() -> None:
        with bind_caller(_caller(graph.id)):
            await executor.run(graph, RunInput(messages=(ChatMessage("user", "go"),)))

    asyncio.run(run())


def _broken_tool(arguments: Mapping[str, Any]) -> dict[str, str]:
    raise KeyError("customer-42")


async def _call_broken_tool(state: RunState, runtime: NodeRuntime) -> None:
    await runtime.tool("lookup", _broken_tool, {"id": 42})


def test_a_failing_tool_marks_its_own_span_its_node_and_the_run_as_errors(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    graph = Graph(id="test:tool-fails", description="", nodes=(Node("call", _call_broken_tool),))

    with pytest.raises(GraphRunError, match="node 'call' failed \\(KeyError\\)"):
        _run_graph(tracer_provider, graph)

    spans = exporter.get_finished_spans()
    assert outcomes(spans) == ["error"]
    for prefix in ("execute_tool lookup", "node call", "invoke_agent"):
        span = only(spans, prefix)
        assert span.status.status_code is StatusCode.ERROR, prefix
        assert attributes(span)[ERROR_TYPE] == "KeyError", prefix
        assert attributes(span)[LEVEL] == "ERROR", prefix
        assert attributes(span)[STATUS_MESSAGE] == "KeyError: 'customer-42'", prefix
    (event,) = only(spans, "execute_tool").events
    assert event.name == "exception" and (event.attributes or {})["exception.type"] == "KeyError"


async def _answer_nothing(state: RunState, runtime: NodeRuntime) -> None:
    return None


def test_a_run_that_produces_no_answer_ends_with_the_error_outcome_not_success(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    graph = Graph(id="test:silent", description="", nodes=(Node("idle", _answer_nothing),))

    with pytest.raises(GraphRunError, match="produced no answer"):
        _run_graph(tracer_provider, graph)

    spans = exporter.get_finished_spans()
    assert outcomes(spans) == ["error"]
    run = only(spans, "invoke_agent")
    assert run.status.status_code is StatusCode.ERROR
    assert "langfuse.trace.output" not in attributes(run)
    assert only(spans, "node idle").status.status_code is StatusCode.UNSET


def test_a_cancelled_governance_run_records_one_aborted_outcome_and_ends_every_span(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = StallingProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    body = run_body(seed.acme_grant, scheduleId="governance:community")
    with TestClient(app) as client:
        assert client.portal is not None
        # As on shutdown: the request's task is cancelled while the LLM is answering.
        client.portal.call(_post_then_cancel, app, REVIEW, scheduler_headers("k-3"), body, provider)

    ((_, spans),) = traces(exporter).items()
    assert outcomes(spans) == ["aborted"]
    assert sorted(span.name for span in spans) == sorted([
        "POST /api/internal/graphs/{graph_id}/runs", "invoke_agent builtin:governance-review",
        "node gather", "execute_tool account_policy", "execute_tool message_stats",
        "node assess", "chat offline-echo",
    ])
    assert len({attributes(span)[SESSION_ID] for span in spans}) == 1
    assert {attributes(span)[USER_ID] for span in spans} == {"alice"}
    for span in (only(spans, "invoke_agent"), only(spans, "node assess"), only(spans, "chat")):
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert attributes(span)[LEVEL] == "WARNING", span.name
        # Nobody said why the task was cancelled: the spans say only that it was.
        assert attributes(span)[STATUS_MESSAGE] == "aborted: the run was cancelled", span.name
    assert LEVEL not in attributes(only(spans, "node gather"))  # it had finished
    assert STATUS_MESSAGE not in attributes(only(spans, "node gather"))


def test_a_cancelled_run_records_aborted_and_never_a_second_outcome(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    provider = StallingProvider()
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("t"), llm=provider)
    chat = Graph(id="builtin:chat", description="", nodes=(Node("respond", _respond),))

    async def run_then_cancel() -> None:
        with bind_caller(_caller("builtin:chat")):
            task = asyncio.create_task(
                executor.run(chat, RunInput(messages=(ChatMessage("user", "hi"),)))
            )
            await provider.started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run_then_cancel())

    spans = exporter.get_finished_spans()
    assert outcomes(spans) == ["aborted"]
    assert [span.name for span in spans] == ["chat offline-echo", "node respond",
                                             "invoke_agent builtin:chat"]


def test_a_run_cancelled_for_a_known_reason_says_why_on_every_span_it_aborts(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    provider = StallingProvider()
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("t"), llm=provider)
    chat = Graph(id="builtin:chat", description="", nodes=(Node("respond", _respond),))

    async def run_then_cancel() -> None:
        with bind_caller(_caller("builtin:chat")), recording_abort_reason() as abort_reason:
            task = asyncio.create_task(
                executor.run(chat, RunInput(messages=(ChatMessage("user", "hi"),)))
            )
            await provider.started.wait()
            abort_reason.reason = "the service is shutting down"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run_then_cancel())

    spans = exporter.get_finished_spans()
    assert outcomes(spans) == ["aborted"]
    assert {attributes(span)[STATUS_MESSAGE] for span in spans} == {
        "aborted: the service is shutting down"
    }


async def _respond(state: RunState, runtime: NodeRuntime) -> None:
    state.answer = (await runtime.chat(state.input.messages, model=state.model)).content


async def _post_then_cancel(
    app: FastAPI, path: str, headers: dict[str, str], body: dict[str, object],
    provider: StallingProvider,
) -> None:
    """Send a request straight to the ASGI app and cancel it once the LLM was called."""
    payload = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Mapping[str, Any]) -> None:
        return None

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("testclient", 50000), "server": ("testserver", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    await provider.started.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

