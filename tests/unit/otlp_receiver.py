"""A local OTLP/HTTP endpoint for unit tests of exporters: records each POST."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer


@dataclass
class OTLPReceiver:
    """Where to send, what arrived (path, content type, body), and the status to answer."""

    url: str
    status: int = 200
    received: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@contextmanager
def running_otlp_receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver(url="")

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(receiver.status)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Capture)
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
