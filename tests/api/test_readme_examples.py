"""README.md, "Use it in your app": its snippets, run as written.

The chat route and the cron job are copied here line for line (the first test fails when they
drift apart). They use the global provider, as the README has them, recorded by the library's own
pytest fixture `sessiontrace_global_spans`: `configure_tracing(..., set_global=True)` returns a
global provider that already has a SessionSpanProcessor unchanged, so no OTLP exporter is built.
The zero-code variant runs the same route under `opentelemetry-instrument` in a child process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan

# The README's imports, verbatim.
from fastapi import FastAPI, Request
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sessiontrace import bind_session, configure_tracing, derive_user_session_id
from sessiontrace import bind_session, derive_schedule_session_id

from sessiontrace import SpanRecorder, assert_every_span_has_a_session
from sessiontrace.attributes import LANGFUSE_SESSION_ID, LANGFUSE_TRACE_NAME, USER_ID

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


async def answer(question: str) -> str:
    """Stands in for the app's LLM call: a span of its own, like an instrumented client's."""
    with trace.get_tracer("llm").start_as_current_span("llm.chat"):
        return f"you asked: {question}"


def summarize(account: str) -> None:
    """Stands in for the cron job's work."""
    with trace.get_tracer("llm").start_as_current_span("llm.summarize"):
        pass


def create_chat_app() -> FastAPI:
    """The README's FastAPI chat route."""
    configure_tracing(service_name="chat-api", set_global=True)
    app = FastAPI()
    FastAPIInstrumentor.instrument_app(app)

    @app.post("/chat/{conversation_id}")
    async def chat(conversation_id: str, request: Request) -> dict[str, str]:
        account, user = "acme", "alice"  # from your authentication, never from the request
        with bind_session(
            session_id=derive_user_session_id(account, conversation_id),
            user_id=user, trace_name="chat", tags=["web"],
        ):
            question = (await request.json())["question"]  # read inside the binding
            return {"answer": await answer(question)}

    return app


# The README's cron job.
tracer = trace.get_tracer("reports")


def nightly_report(account: str, schedule_id: str) -> None:
    """Called by your scheduler (cron, APScheduler, Celery beat) at every firing."""
    with bind_session(
        session_id=derive_schedule_session_id(account, schedule_id),  # one per schedule
        user_id=f"schedule:{schedule_id}", trace_name="nightly-report", tags=["cron"],
    ):
        with tracer.start_as_current_span("nightly-report"):  # each firing: a trace
            summarize(account)


def _section_blocks(language: str) -> list[list[str]]:
    text = README.read_text()
    section = text.split("\n## Use it in your app\n", 1)[1].split("\n## ", 1)[0]
    return [
        block.splitlines()
        for block in re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)
    ]


def _contains_run(lines: list[str], run: list[str]) -> bool:
    return any(lines[i : i + len(run)] == run for i in range(len(lines) - len(run) + 1))


def test_readme_snippets_are_the_code_these_tests_run() -> None:
    source = [line.strip() for line in Path(__file__).read_text().splitlines() if line.strip()]
    blocks = _section_blocks("python")
    assert len(blocks) == 2
    for block in blocks:
        lines = [line.strip() for line in block if line.strip()]
        imports = [line for line in lines if line.startswith(("from ", "import "))]
        body = [line for line in lines if line not in imports]
        assert all(line in source for line in imports)
        assert _contains_run(source, body), body
    (command,) = _section_blocks("sh")
    assert [line for line in command if line.startswith("OTEL_")] == ZERO_CODE_ENVIRONMENT


def _sessions(spans: tuple[ReadableSpan, ...]) -> set[object]:
    return {(span.attributes or {}).get(LANGFUSE_SESSION_ID) for span in spans}


def test_every_span_of_the_chat_route_carries_the_conversations_session(
    sessiontrace_global_spans: SpanRecorder,
) -> None:
    with TestClient(create_chat_app()) as client:
        first = client.post("/chat/c-1", json={"question": "why?"})
        second = client.post("/chat/c-1", json={"question": "and then?"})
    assert first.json() == {"answer": "you asked: why?"}
    assert second.status_code == 200

    spans = sessiontrace_global_spans.spans
    session = derive_user_session_id("acme", "c-1")
    sessiontrace_global_spans.assert_every_span_has_a_session(session_id=session)
    names = {span.name for span in spans}
    assert {"POST /chat/{conversation_id}", "llm.chat"} <= names
    assert len({span.context.trace_id for span in spans if span.context}) == 2
    assert {(span.attributes or {}).get(USER_ID) for span in spans} == {"alice"}
    assert {(span.attributes or {}).get(LANGFUSE_TRACE_NAME) for span in spans} == {"chat"}


def test_every_firing_of_one_schedule_shares_its_session(
    sessiontrace_global_spans: SpanRecorder,
) -> None:
    nightly_report("acme", "nightly")
    nightly_report("acme", "nightly")
    first_two = sessiontrace_global_spans.spans
    nightly_report("acme", "weekly")

    assert_every_span_has_a_session(
        first_two, session_id=derive_schedule_session_id("acme", "nightly")
    )
    assert [span.name for span in first_two] == ["llm.summarize", "nightly-report"] * 2
    assert len({span.context.trace_id for span in first_two if span.context}) == 2
    weekly = sessiontrace_global_spans.spans[len(first_two) :]
    assert _sessions(weekly) == {derive_schedule_session_id("acme", "weekly")}


# The README's zero-code command, up to the program it starts.
ZERO_CODE_ENVIRONMENT = [
    "OTEL_PYTHON_DISTRO=sessiontrace OTEL_PYTHON_CONFIGURATOR=sessiontrace \\",
    "OTEL_SERVICE_NAME=chat-api OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 \\",
]

# The chat route without its two set-up lines (opentelemetry-instrument does both), driven in
# process; a recorder on the global provider reports what every span carried.
ZERO_CODE_APP = textwrap.dedent('''
    import json
    from fastapi import FastAPI, Request
    from fastapi.testclient import TestClient
    from opentelemetry import trace
    from sessiontrace import SessionSpanProcessor, SpanRecorder, bind_session
    from sessiontrace import derive_user_session_id

    provider = trace.get_tracer_provider()
    recorder = SpanRecorder(provider)
    app = FastAPI()

    @app.post("/chat/{conversation_id}")
    async def chat(conversation_id: str, request: Request) -> dict[str, str]:
        account, user = "acme", "alice"
        with bind_session(
            session_id=derive_user_session_id(account, conversation_id),
            user_id=user, trace_name="chat", tags=["web"],
        ):
            question = (await request.json())["question"]
            with trace.get_tracer("llm").start_as_current_span("llm.chat"):
                return {"answer": question}

    with TestClient(app) as client:
        client.post("/chat/c-1", json={"question": "why?"})
    recorder.assert_every_span_has_a_session(session_id=derive_user_session_id("acme", "c-1"))
    print(json.dumps({
        "processors": [type(p).__name__ for p in provider._active_span_processor._span_processors],
        "spans": sorted(span.name for span in recorder.spans),
    }))
''')


@pytest.fixture
def otlp_endpoint() -> Iterator[tuple[str, list[str]]]:
    """Answers every OTLP/HTTP export with 200 and records the paths and content types."""
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(f"{self.path} {self.headers['Content-Type']}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_the_zero_code_command_stamps_every_span_of_the_route(
    otlp_endpoint: tuple[str, list[str]],
) -> None:
    url, received = otlp_endpoint
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SESSIONTRACE_"))
    }
    for line in ZERO_CODE_ENVIRONMENT:
        for setting in line.rstrip(" \\").split():
            name, value = setting.split("=", 1)
            env[name] = value
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = url  # the README's collector, here a local receiver
    argv = [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", ZERO_CODE_APP]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["processors"][:2] == ["SessionSpanProcessor", "BatchSpanProcessor"]
    assert {"POST /chat/{conversation_id}", "llm.chat"} <= set(report["spans"])
    assert received and all(r == "/v1/traces application/x-protobuf" for r in received)
