"""An OpenAI-compatible chat-completions endpoint whose answers wait for the test.

Tests that need a run held mid-flight (a replica killed, a database locked while the run
ends) point the service's LLM_BASE_URL at it: each call is counted, then answered once the
test sets `release`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devstack.processes import free_port

__all__ = ["LLMStub", "serve_llm_stub"]

# How long a held call waits for `release` before it answers anyway.
_HOLD_SECONDS = 120
_ANSWER = json.dumps({
    "model": "stub-model",
    "choices": [{"message": {"role": "assistant", "content": "all quiet"}}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2},
}).encode()


@dataclass
class LLMStub:
    """The endpoint's base URL, the event that releases its answers, and its call count."""

    url: str
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_call(self) -> None:
        with self._lock:
            self.calls += 1


@contextmanager
def serve_llm_stub() -> Iterator[LLMStub]:
    """Serve an `LLMStub` on a free loopback port; on exit, release every call and stop."""
    port = free_port()
    stub = LLMStub(url=f"http://127.0.0.1:{port}/v1")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stub.count_call()
            stub.release.wait(timeout=_HOLD_SECONDS)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(_ANSWER)))
                self.end_headers()
                self.wfile.write(_ANSWER)
            except OSError:
                pass  # the process that asked was killed

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.release.set()
        server.shutdown()
        server.server_close()
