"""`"stream": true` on the chat route: server-sent events, and spans that keep their session."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from api_support import Seed, alice_session, chat_body, spans_of_trace, user_headers
from service.config import Settings
from service.graphs import GraphExecutor, RunInput, default_registry
from service.llm import (
    ChatMessage,
    ChunkSink,
    Completion,
    OfflineProvider,
    OpenAICompatibleProvider,
)
from service.main import create_app
from sessiontrace import ContextPropagatingExecutor
from service.caller import CallerContext, bind_caller
from sessiontrace.attributes import (
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LANGFUSE_OBSERVATION_COMPLETION_START_TIME,
    LANGFUSE_OBSERVATION_STATUS_MESSAGE,
    SESSION_ID,
    USER_ID,
)
from trace_support import (
    LEVEL,
    FailingProvider,
    StallingProvider,
    attributes,
    only,
    outcomes,
    sse_events,
    traces,
    wait_until,
)

CHAT = "/api/v1/ai/chat"
SERVER_SPAN = "POST /api/v1/ai/chat"
OPENAI_STREAM = (
    b'data: {"model":"gpt-test-2026-01-01","choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"model":"gpt-test-2026-01-01","choices":[{"delta":{"content":"lo!"},'
    b'"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def test_a_streamed_chat_sends_the_answer_in_chunks_then_an_event_with_its_ids(
    client: TestClient, seed: Seed
) -> None:
    plain = client.post(CHAT, json=chat_body("stream me", stateKey="t-1"),
                        headers=user_headers(seed.alice_key))
    streamed = client.post(CHAT, json=chat_body("stream me", stateKey="t-1", stream=True),
                           headers=user_headers(seed.alice_key))

    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    *chunks, (last, final) = events
    assert len(chunks) > 1 and {name for name, _ in chunks} == {"chunk"}
    assert "".join(data["content"] for _, data in chunks) == plain.json()["output"]["content"]
    assert last == "done"
    assert set(final) == {"runId", "traceId", "sessionId", "stateKey"}
    assert final["sessionId"] == alice_session("t-1")
    assert final["stateKey"] == "t-1"
    assert final["runId"] != plain.json()["runId"]


def test_every_span_of_a_streamed_chat_carries_its_session_and_one_success_outcome(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    response = client.post(CHAT, json=chat_body(stream=True),
                           headers=user_headers(seed.alice_key))

    _, final = sse_events(response.text)[-1]
    spans = spans_of_trace(exporter, final["traceId"])
    assert sorted(span.name for span in spans) == sorted(
        [SERVER_SPAN, "invoke_agent builtin:chat", "node respond", "chat offline-echo"]
    )
    for span in spans:
        assert attributes(span)[SESSION_ID] == final["sessionId"], span.name
        assert attributes(span)[USER_ID] == "alice", span.name
    assert outcomes(spans) == ["success"]
    # The server span ends when the response does, so after every span of the run.
    server = only(spans, SERVER_SPAN)
    assert all(span.end_time <= server.end_time for span in spans)  # type: ignore[operator]


def test_a_streamed_run_that_fails_ends_with_an_error_event_and_the_error_outcome(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=FailingProvider())
    with TestClient(app) as client:
        response = client.post(CHAT, json=chat_body(stream=True, stateKey="t-2"),
                               headers=user_headers(seed.alice_key))

    assert response.status_code == 200  # the stream had started; the event says what failed
    ((name, data),) = sse_events(response.text)
    assert name == "error"
    assert data["error"] == "run_failed" and "503" in data["message"]
    assert data["sessionId"] == alice_session("t-2") and data["stateKey"] == "t-2"
    spans = spans_of_trace(exporter, data["traceId"])
    assert outcomes(spans) == ["error"]
    assert {attributes(span)[SESSION_ID] for span in spans} == {data["sessionId"]}


def test_a_client_closing_the_stream_mid_answer_aborts_the_run_and_ends_every_span(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = StallingProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    with TestClient(app) as client:
        with client.stream("POST", CHAT, json=chat_body(stream=True, stateKey="t-3"),
                           headers=user_headers(seed.alice_key)) as response:
            first = _first_data_line(response.iter_lines())
        # Leaving the block closed the response: the client cancelled the request.

    assert first == 'data: {"content":"Hello "}'
    assert provider.started.is_set()
    # The test client cancels the request's task rather than reporting a disconnect.
    _assert_one_aborted_run_with_every_span_in_its_session(
        exporter, reason="aborted: the run was cancelled"
    )


def test_a_client_disconnecting_from_a_real_server_mid_stream_aborts_the_run(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = StallingProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    with _serving(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        with http.stream("POST", CHAT, json=chat_body(stream=True, stateKey="t-3"),
                         headers=user_headers(seed.alice_key)) as response:
            first = _first_data_line(response.iter_lines())
        # Closing a response mid-body closes its connection: uvicorn reports a disconnect.
        server_span_ended = wait_until(
            lambda: any(s.name == SERVER_SPAN for s in exporter.get_finished_spans()), 10
        )

    assert first == 'data: {"content":"Hello "}'
    assert server_span_ended, [s.name for s in exporter.get_finished_spans()]
    _assert_one_aborted_run_with_every_span_in_its_session(
        exporter, reason="aborted: the client disconnected"
    )


def _assert_one_aborted_run_with_every_span_in_its_session(
    exporter: InMemorySpanExporter, *, reason: str
) -> None:
    ((_, spans),) = traces(exporter).items()
    assert sorted(span.name for span in spans) == sorted(
        [SERVER_SPAN, "invoke_agent builtin:chat", "node respond", "chat offline-echo"]
    )
    assert outcomes(spans) == ["aborted"]
    session = alice_session("t-3")
    assert {attributes(span).get(SESSION_ID) for span in spans} == {session}
    assert {attributes(span).get(USER_ID) for span in spans} == {"alice"}
    run = only(spans, "invoke_agent")
    # Aborted is not an error: no ERROR status, a WARNING level in Langfuse.
    for span in (run, only(spans, "node"), only(spans, "chat")):
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert attributes(span)[LEVEL] == "WARNING", span.name
        # Langfuse shows why on each aborted observation.
        assert attributes(span)[LANGFUSE_OBSERVATION_STATUS_MESSAGE] == reason, span.name


def _first_data_line(lines: Iterator[str]) -> str:
    return next(line for line in lines if line.startswith("data:"))


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port in a thread; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_chat_streamed_from_an_openai_compatible_server_records_its_usage(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    upstream = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=OPENAI_STREAM))
    )
    llm = OpenAICompatibleProvider(client=upstream, base_url="http://llm.test/v1", model="gpt-test")
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=llm)
    with TestClient(app) as client:
        response = client.post("/api/v1/ai/chat", json=chat_body(stream=True),
                               headers=user_headers(seed.alice_key))
        assert client.portal is not None
        client.portal.call(upstream.aclose)

    events = sse_events(response.text)
    assert [data["content"] for name, data in events if name == "chunk"] == ["Hel", "lo!"]
    span = only(spans_of_trace(exporter, events[-1][1]["traceId"]), "chat gpt-test")
    assert attributes(span)[GEN_AI_RESPONSE_MODEL] == "gpt-test-2026-01-01"
    assert attributes(span)[GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert attributes(span)[GEN_AI_USAGE_OUTPUT_TOKENS] == 3


ISO_UTC_MICROSECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def completion_start_us(span: ReadableSpan) -> int:
    """The span's completion start time, in microseconds since the epoch (it must be ISO UTC)."""
    value = attributes(span)[LANGFUSE_OBSERVATION_COMPLETION_START_TIME]
    assert isinstance(value, str) and ISO_UTC_MICROSECONDS.fullmatch(value), value
    moment = dt.datetime.fromisoformat(value)
    assert moment.utcoffset() == dt.timedelta(0)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def test_a_streamed_answer_records_when_its_first_token_came_and_a_plain_one_does_not(
    client: TestClient, seed: Seed, exporter: InMemorySpanExporter
) -> None:
    streamed = client.post(CHAT, json=chat_body(stream=True), headers=user_headers(seed.alice_key))
    plain = client.post(CHAT, json=chat_body(), headers=user_headers(seed.alice_key))

    _, final = sse_events(streamed.text)[-1]
    generation = only(spans_of_trace(exporter, final["traceId"]), "chat ")
    assert generation.start_time is not None and generation.end_time is not None
    first_token = completion_start_us(generation)
    assert generation.start_time // 1000 <= first_token <= generation.end_time // 1000
    unstreamed = only(spans_of_trace(exporter, plain.json()["traceId"]), "chat ")
    assert LANGFUSE_OBSERVATION_COMPLETION_START_TIME not in attributes(unstreamed)


def test_only_the_streamed_answer_of_a_run_gets_a_completion_start_time(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The review's first LLM call (assess) is not streamed; its last one (summarize) is.
    # The review runs on the governance path only, which answers in one piece: run it here.
    review = default_registry().get("builtin:governance-review")
    assert review is not None
    caller = CallerContext(
        billing_account_id="acme", user_id="alice", session_id=alice_session("t-review"),
        request_id="r", run_id="run", trigger="schedule", graph_id=review.id,
    )
    executor = GraphExecutor(tracer=tracer_provider.get_tracer("t"), llm=OfflineProvider())
    chunks: list[str] = []

    async def on_chunk(text: str) -> None:
        chunks.append(text)

    async def run() -> None:
        # As the app's lifespan does: tools run in threads that keep the caller.
        asyncio.get_running_loop().set_default_executor(ContextPropagatingExecutor())
        with bind_caller(caller):
            messages = (ChatMessage("user", "review this"),)
            await executor.run(review, RunInput(messages=messages), on_chunk=on_chunk)

    asyncio.run(run())

    spans = exporter.get_finished_spans()
    assert chunks
    assess = generation_of(spans, only(spans, "node assess"))
    summarize = generation_of(spans, only(spans, "node summarize"))
    assert LANGFUSE_OBSERVATION_COMPLETION_START_TIME not in attributes(assess)
    assert LANGFUSE_OBSERVATION_COMPLETION_START_TIME in attributes(summarize)


def generation_of(spans: Sequence[ReadableSpan], node: ReadableSpan) -> ReadableSpan:
    """The one `chat` span that `node` started."""
    assert node.context is not None
    node_id = node.context.span_id
    return only([s for s in spans if s.parent is not None and s.parent.span_id == node_id], "chat ")


class PacedProvider(OfflineProvider):
    """Streams "Hel", then "lo" a little later, noting when it handed each piece over."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_over_ns: list[int] = []

    async def stream(
        self, messages: Sequence[ChatMessage], *, model: str, on_chunk: ChunkSink
    ) -> Completion:
        for piece in ("Hel", "lo"):
            if self.handed_over_ns:
                await asyncio.sleep(0.05)
            self.handed_over_ns.append(time.time_ns())
            await on_chunk(piece)
        return Completion(content="Hello", model=model, input_tokens=1, output_tokens=1)


def test_the_completion_start_time_is_the_first_chunks_not_a_later_ones(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = PacedProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    with TestClient(app) as client:
        response = client.post(CHAT, json=chat_body(stream=True),
                               headers=user_headers(seed.alice_key))

    _, final = sse_events(response.text)[-1]
    first_token = completion_start_us(only(spans_of_trace(exporter, final["traceId"]), "chat "))
    first, second = provider.handed_over_ns
    assert first // 1000 <= first_token < second // 1000
