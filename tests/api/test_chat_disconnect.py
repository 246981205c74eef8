"""A client that drops a chat waiting for its (non-streamed) answer aborts the run."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from api_support import Seed, chat_body
from service.config import Settings
from service.main import create_app
from sessiontrace.attributes import LANGFUSE_OBSERVATION_STATUS_MESSAGE
from trace_support import LEVEL, StallingProvider, attributes, only, outcomes, traces, wait_until

SERVER_SPAN = "POST /api/v1/ai/chat"


def test_a_client_dropping_a_plain_chat_aborts_its_run_and_every_span_says_so(
    settings: Settings, tracer_provider: TracerProvider, exporter: InMemorySpanExporter,
    seed: Seed,
) -> None:
    provider = StallingProvider()
    app = create_app(settings, tracer_provider=tracer_provider, llm_provider=provider)
    body = json.dumps(chat_body(stateKey="t-drop")).encode()
    request = (
        b"POST /api/v1/ai/chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {seed.alice_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with _serving(app) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request)
            assert wait_until(provider.started.is_set, 10), "the run never reached its LLM call"
        # The connection is closed: uvicorn tells the app the client disconnected.
        server_span_ended = wait_until(
            lambda: any(s.name == SERVER_SPAN for s in exporter.get_finished_spans()), 10
        )

    assert server_span_ended, [s.name for s in exporter.get_finished_spans()]
    ((_, spans),) = traces(exporter).items()
    assert outcomes(spans) == ["aborted"]
    for name in ("invoke_agent", "node respond", "chat "):
        span = only(spans, name)
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert attributes(span)[LEVEL] == "WARNING", span.name
        assert attributes(span)[LANGFUSE_OBSERVATION_STATUS_MESSAGE] == (
            "aborted: the client disconnected"
        ), span.name
    assert only(spans, SERVER_SPAN).status.status_code is not StatusCode.ERROR


@contextmanager
def _serving(app: FastAPI) -> Iterator[int]:
    """Serve `app` with uvicorn on a free port in a thread; the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
