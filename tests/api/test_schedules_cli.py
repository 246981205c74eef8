"""`python -m service schedules list|run`, and `serve` with a schedules file, as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from api_support import SCHEDULER_TOKEN, Seed, failed, free_port, ok, wait_until
from service.config import Settings
from sessiontrace import derive_schedule_session_id

REPO = Path(__file__).resolve().parents[2]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def schedules_file(tmp_path: Path, seed: Seed) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "schedules:\n"
        "  - id: governance:community\n"
        "    cron: '0 9 * * 1-5'\n"
        "    timezone: Europe/Paris\n"
        "    graph: builtin:governance-review\n"
        f"    grant: {seed.acme_grant}\n"
        "    input: {messages: [{role: user, content: review the week}]}\n"
        "  - id: governance:revoked\n"
        "    cron: '30 6 1 * *'\n"
        "    graph: builtin:chat\n"
        f"    grant: {seed.revoked_grant}\n"
        "    input: {messages: [{role: user, content: hi}]}\n"
    )
    return path


@pytest.fixture
def env(settings: Settings, schedules_file: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OTEL_"))}
    return {
        **inherited,
        "DATABASE_URL": settings.database_url,
        "SCHEDULER_API_TOKEN": SCHEDULER_TOKEN,
        "DEPLOY_ENVIRONMENT": "test",
        "OTEL_SDK_DISABLED": "true",
        "SCHEDULES_FILE": str(schedules_file),
        "SERVICE_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture
def cli(env: dict[str, str], tmp_path: Path) -> Cli:
    def run(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *args], cwd=tmp_path, env={**env, **overrides},
            capture_output=True, text=True, timeout=60, check=False,
        )

    return run


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The service, embedded scheduler on, as `python -m service serve` at SERVICE_URL.

    On exit it must stop cleanly on SIGINT, its scheduler cancelled.
    """
    url = env["SERVICE_URL"]
    port = url.rsplit(":", 1)[1]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", port],
            cwd=tmp_path, env={**env, "SCHEDULER_ENABLED": "true"}, stdout=output,
            stderr=subprocess.STDOUT, text=True,
        )
    try:
        up = wait_until(lambda: process.poll() is not None or _healthy(url), timeout=30)
        if not up or process.poll() is not None:
            pytest.fail(f"the service did not come up:\n{log.read_text()}")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output_text = log.read_text()
    assert process.returncode == 0, output_text
    assert "scheduler started: 2 schedule(s)" in output_text
    assert "scheduler stopped" in output_text


def test_schedules_list_prints_each_schedule_with_its_next_firing_time(
    cli: Cli, schedules_file: Path, seed: Seed
) -> None:
    listed = ok(cli("schedules", "list"))

    assert listed["schedulesFile"] == str(schedules_file)
    community, revoked = listed["schedules"]
    assert community["id"] == "governance:community"
    assert community["graph"] == "builtin:governance-review"
    assert community["grant"] == seed.acme_grant
    assert community["timezone"] == "Europe/Paris"
    assert community["nextFireAt"].endswith("Z")
    assert revoked["nextFireAt"].endswith("T06:30:00Z")


def test_schedules_list_without_a_schedules_file_lists_none(cli: Cli) -> None:
    assert ok(cli("schedules", "list", SCHEDULES_FILE=""))["schedules"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schedules:\n  - {id: governance:x, cron: '0 9 * *', graph: builtin:chat, grant: g,\n"
         "     input: {messages: [{role: user, content: hi}]}}\n",
         "schedule 'governance:x': field 'cron'"),
        ("schedules:\n  - {id: governance:x, cron: '0 9 * * *', graph: builtin:nope, grant: g,\n"
         "     input: {messages: [{role: user, content: hi}]}}\n",
         "schedule 'governance:x': field 'graph'"),
        ("schedules:\n  - {id: governance:x, cron: '0 9 * * *', graph: builtin:chat, grant: g,\n"
         "     timezon: Europe/Paris, input: {messages: [{role: user, content: hi}]}}\n",
         "schedule 'governance:x': field 'timezon' is not a schedule field"),
    ],
    ids=["bad-cron", "unknown-graph", "misspelt-field"],
)
def test_a_malformed_schedules_file_makes_list_and_serve_fail_naming_schedule_and_field(
    cli: Cli, schedules_file: Path, text: str, message: str
) -> None:
    schedules_file.write_text(text)

    assert message in failed(cli("schedules", "list"))
    assert message in failed(cli("serve", "--port", "1"))


def test_schedules_run_fires_through_the_served_process_and_a_repeat_is_replayed(
    cli: Cli, served: str
) -> None:
    monday = ("schedules", "run", "governance:community", "--scheduled-for", "2026-11-23T08:00:00Z")

    first = ok(cli(*monday))
    again = ok(cli(*monday))
    tuesday = ok(cli("schedules", "run", "governance:community",
                     "--scheduled-for", "2026-11-24T08:00:00Z"))
    now = ok(cli("schedules", "run", "governance:community"))

    assert first["ok"] is True
    assert first["sessionId"] == derive_schedule_session_id("acme", "governance:community")
    assert again == first
    assert tuesday["runId"] != first["runId"] and now["runId"] not in (first["runId"],
                                                                       tuesday["runId"])
    assert tuesday["sessionId"] == now["sessionId"] == first["sessionId"]


def test_schedules_run_fails_with_the_services_reason_when_it_refuses(
    cli: Cli, served: str, seed: Seed
) -> None:
    message = failed(cli("schedules", "run", "governance:revoked"))

    assert "answered 403" in message
    assert f"execution grant {seed.revoked_grant!r} has been revoked" in message


def test_schedules_run_exits_non_zero_when_the_run_started_and_failed(cli: Cli) -> None:
    failed_run = {
        "ok": False, "runId": "run-1", "traceId": "trace-1", "sessionId": "gov:acme:s:1",
        "error": "node 'assess' failed: LLM answered 503",
    }
    with _answering(200, failed_run) as url:
        result = cli("schedules", "run", "governance:community", SERVICE_URL=url)

    message = failed(result)
    assert "ran and failed: node 'assess' failed: LLM answered 503" in message
    assert "run-1" in message and "trace-1" in message


@contextmanager
def _answering(status: int, body: dict[str, object]) -> Iterator[str]:
    """An HTTP server answering every POST with `status` and `body`; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_schedules_run_fails_clearly_when_the_service_is_unreachable(
    cli: Cli, env: dict[str, str]
) -> None:
    message = failed(cli("schedules", "run", "governance:community"))

    assert f"cannot reach the service at SERVICE_URL={env['SERVICE_URL']}" in message


def test_schedules_run_of_an_unknown_schedule_names_the_known_ones(cli: Cli) -> None:
    message = failed(cli("schedules", "run", "governance:nope"))

    assert "no schedule 'governance:nope'" in message
    assert "governance:community, governance:revoked" in message


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
