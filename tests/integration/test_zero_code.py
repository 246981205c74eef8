"""Zero-code setup: a plain FastAPI app run under `opentelemetry-instrument` with the sessiontrace
distro and configurator exports every span of a request with the session its route bound.

The app (written by the test) does nothing for tracing but `bind_session` around a manual span and
an httpx call; `opentelemetry-instrument` adds the FastAPI and httpx instrumentations and, through
`OTEL_PYTHON_DISTRO=sessiontrace OTEL_PYTHON_CONFIGURATOR=sessiontrace`, makes the global provider
the one `configure_tracing` builds. It exports straight to the development sink, which holds it to
Langfuse's OTLP contract (Basic auth, protobuf). The ASGI `http send` spans start after the route's
`bind_session` block has exited: they carry the session because their parent (the server span,
stamped by `bind_session`) does.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import ManagedProcess, free_port, start_process, wait_for_http, wait_until
from devstack.stack import SinkHandle
from sessiontrace.attributes import (
    LANGFUSE_SESSION_ID,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_USER_ID,
    SESSION_ID,
    USER_ID,
)

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
SERVER, CLIENT = 2, 3  # OTLP span kinds

APP = '''
import os

import httpx
from fastapi import FastAPI, Request
from opentelemetry import trace

import sessiontrace

app = FastAPI()
tracer = trace.get_tracer("zero_code_app")


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/chat/{conversation}")
async def chat(conversation: str, request: Request) -> dict[str, object]:
    with sessiontrace.bind_session(
        session_id=f"zc:{conversation}", user_id="alice", trace_name="chat", tags=["zero-code"]
    ):
        # Read here, not as a parsed body parameter: FastAPI reads those before the route
        # runs, so their ASGI `http receive` span ends before any session is bound.
        question = (await request.json())["question"]
        with tracer.start_as_current_span("work") as work:
            async with httpx.AsyncClient() as client:
                answer = await client.get(os.environ["ZERO_CODE_DOWNSTREAM"])
    trace_id = trace.format_trace_id(work.get_span_context().trace_id)
    return {"traceId": trace_id, "question": question, "downstream": answer.status_code}
'''


@pytest.fixture
def downstream() -> Iterator[str]:
    """A plain HTTP server the app calls (no tracing of its own)."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/downstream"
    server.shutdown()
    server.server_close()


@pytest.fixture
def zero_code_app(tmp_path: Path, sink: SinkHandle, downstream: str) -> Iterator[str]:
    """The app under `opentelemetry-instrument ... uvicorn app:app`; yields its URL."""
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    basic = base64.b64encode(f"{sink.public_key}:{sink.secret_key}".encode()).decode()
    env = {
        "OTEL_PYTHON_DISTRO": "sessiontrace",
        "OTEL_PYTHON_CONFIGURATOR": "sessiontrace",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code-app",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"{sink.url}/api/public/otel",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Basic%20{basic}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "ZERO_CODE_DOWNSTREAM": downstream,
        # Whatever the developer's shell says: no spool, no other distro settings.
        "SESSIONTRACE_SPOOL_DIR": None,
        "OTEL_SDK_DISABLED": None,
        "OTEL_RESOURCE_ATTRIBUTES": None,
        "PYTHONPATH": None,
    }
    argv = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(port),
    ]
    process = start_process(
        "zero-code-app", argv, log_path=tmp_path / "app.log", env=env, cwd=tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
        yield url
    finally:
        _stop(process)


def _stop(process: ManagedProcess) -> None:
    # uvicorn shuts down gracefully on SIGTERM, then exits through that signal.
    code = process.stop()
    assert code in (0, -signal.SIGTERM), f"the app exited with {code}\n{process.describe()}"
    # opentelemetry-instrument logs a failed distro or configurator and runs the app untraced.
    assert "Failed to auto initialize" not in process.log(), process.describe()


def post_json(url: str, body: Mapping[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_every_span_of_a_zero_code_request_carries_the_bound_session(
    zero_code_app: str, sink: SinkHandle
) -> None:
    expected: dict[str, str] = {}  # trace id -> session bound by its request
    for _ in range(3):
        conversation = uuid.uuid4().hex
        answer = post_json(f"{zero_code_app}/chat/{conversation}", {"question": "why?"})
        assert answer["downstream"] == 200 and answer["question"] == "why?"
        expected[answer["traceId"]] = f"zc:{conversation}"

    def traces() -> dict[str, list[Mapping[str, Any]]] | None:
        grouped: dict[str, list[Mapping[str, Any]]] = {trace_id: [] for trace_id in expected}
        for span in sink.spans():
            if span["trace_id"] in grouped:
                grouped[span["trace_id"]].append(span)
        complete = all(
            any(span["kind"] == SERVER for span in spans) for spans in grouped.values()
        )
        return grouped if complete else None

    grouped = wait_until(traces, 30, message="the three request traces at the sink")
    assert isinstance(grouped, dict)
    for trace_id, session_id in expected.items():
        spans = grouped[trace_id]
        kinds = {(span["kind"], span["name"]) for span in spans}
        described = sorted(f"{kind}:{name}" for kind, name in kinds)
        assert (SERVER, "POST /chat/{conversation}") in kinds, described
        assert any(name == "work" for _, name in kinds), described
        assert any(kind == CLIENT for kind, _ in kinds), described
        # Started in the binding (receive) and after it exited (send, under the server span).
        for asgi in ("http receive", "http send"):
            assert any(name.endswith(asgi) for _, name in kinds), f"no {asgi} in {described}"
        for span in spans:
            attributes = span["attributes"]
            assert attributes.get(SESSION_ID) == session_id, (span["name"], attributes)
            assert attributes.get(LANGFUSE_SESSION_ID) == session_id, (span["name"], attributes)
            assert attributes.get(USER_ID) == attributes.get(LANGFUSE_USER_ID) == "alice"
            assert attributes.get(LANGFUSE_TRACE_NAME) == "chat", (span["name"], attributes)
            assert attributes.get(LANGFUSE_TRACE_TAGS) == ["zero-code"], (span["name"], attributes)
            assert span["resource_attributes"]["service.name"] == "zero-code-app"
            assert span["auth_ok"]
    # No span of any session landed in another trace, and no request trace was split.
    for span in sink.spans():
        session = span["attributes"].get(LANGFUSE_SESSION_ID)
        if session in expected.values():
            assert expected.get(span["trace_id"]) == session, (span["name"], span["trace_id"])
