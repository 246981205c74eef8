"""`python -m service`: each command prints one JSON object; errors go to stderr as JSON."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_support import (
    SCHEDULER_TOKEN,
    chat_body,
    failed,
    ok,
    run_body,
    scheduler_headers,
    user_headers,
    wait_until,
)
from service.config import Settings
from service.main import create_app

REPO = Path(__file__).resolve().parents[2]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OTEL_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        SCHEDULER_API_TOKEN=SCHEDULER_TOKEN,
        DEPLOY_ENVIRONMENT="test",
        OTEL_SDK_DISABLED="true",
        PYTHONPATH=str(REPO),
    )
    return env


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Cli:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *args], cwd=tmp_path, env=cli_env,
            capture_output=True, text=True, timeout=60, check=False,
        )

    return run


def test_cli_creates_an_account_a_user_and_a_grant_the_service_then_accepts(
    cli: Cli, settings: Settings, tracer_provider: TracerProvider
) -> None:
    account = ok(cli("accounts", "create", "--billing-account", "acme"))
    user = ok(cli("users", "create", "--billing-account", "acme", "--user", "alice"))
    grant = ok(cli("grants", "create", "--billing-account", "acme", "--user", "alice",
                   "--graph", "builtin:chat", "--graph", "builtin:governance-review",
                   "--expires-at", "2099-01-01T00:00:00Z"))

    assert account["billingAccountId"] == "acme"
    assert user["userId"] == "alice" and user["billingAccountId"] == "acme"
    assert user["apiKey"].startswith("st_")
    assert grant["grantId"] and grant["graphs"] == ["builtin:chat", "builtin:governance-review"]
    assert grant["expiresAt"] == "2099-01-01T00:00:00+00:00"
    with TestClient(create_app(settings, tracer_provider=tracer_provider)) as client:
        chat = client.post("/api/v1/ai/chat", json=chat_body(),
                           headers=user_headers(user["apiKey"]))
        run = client.post("/api/internal/graphs/builtin:governance-review/runs",
                          json=run_body(grant["grantId"]), headers=scheduler_headers("cli-1"))
    assert chat.status_code == 200, chat.text
    assert run.status_code == 200 and run.json()["ok"] is True


def test_the_api_key_is_shown_once_and_stored_only_as_a_hash(
    cli: Cli, settings: Settings
) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    api_key = ok(cli("users", "create", "--billing-account", "acme", "--user", "alice"))["apiKey"]

    dump = "\n".join(sqlite3.connect(settings.database_url.removeprefix("sqlite:///")).iterdump())
    assert api_key not in dump
    assert "alice" in dump


def test_a_revoked_grant_is_refused_by_the_service(
    cli: Cli, settings: Settings, tracer_provider: TracerProvider
) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    ok(cli("users", "create", "--billing-account", "acme", "--user", "alice"))
    grant_id = ok(cli("grants", "create", "--billing-account", "acme", "--user", "alice",
                      "--graph", "builtin:chat"))["grantId"]

    revoked = ok(cli("grants", "revoke", grant_id))

    assert revoked["grantId"] == grant_id and revoked["revokedAt"]
    with TestClient(create_app(settings, tracer_provider=tracer_provider)) as client:
        response = client.post("/api/internal/graphs/builtin:chat/runs",
                               json=run_body(grant_id), headers=scheduler_headers("cli-2"))
    assert response.status_code == 403 and response.json()["error"] == "grant_revoked"


def test_an_account_created_with_mask_content_has_its_runs_recorded_as_hashes_only(
    cli: Cli, settings: Settings, tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    masked = ok(cli("accounts", "create", "--billing-account", "private", "--mask-content"))
    plain = ok(cli("accounts", "create", "--billing-account", "acme"))
    user = ok(cli("users", "create", "--billing-account", "private", "--user", "carol"))

    assert masked["maskContent"] is True and plain["maskContent"] is False
    with TestClient(create_app(settings, tracer_provider=tracer_provider)) as client:
        chat = client.post("/api/v1/ai/chat", json=chat_body("a confidential question"),
                           headers=user_headers(user["apiKey"]))
    assert chat.status_code == 200, chat.text
    (run,) = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert json.loads(str((run.attributes or {})["langfuse.trace.input"]))["omitted"] == "masked"
    for span in exporter.get_finished_spans():
        exported = json.dumps({key: str(value) for key, value in (span.attributes or {}).items()})
        assert "confidential" not in exported, span.name


def test_accounts_update_turns_masking_on_and_off_and_logs_each_change(
    cli: Cli, settings: Settings, tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    user = ok(cli("users", "create", "--billing-account", "acme", "--user", "carol"))

    def recorded_input() -> str:
        exporter.clear()
        with TestClient(create_app(settings, tracer_provider=tracer_provider)) as client:
            chat = client.post("/api/v1/ai/chat", json=chat_body("a confidential question"),
                               headers=user_headers(user["apiKey"]))
        assert chat.status_code == 200, chat.text
        (run,) = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
        return str((run.attributes or {})["langfuse.trace.input"])

    on = cli("accounts", "update", "--billing-account", "acme", "--mask-content")
    assert ok(on) == {"billingAccountId": "acme", "maskContent": True, "previousMaskContent": False}
    assert "billing account acme: mask_content changed from False to True" in on.stderr
    assert "confidential" not in recorded_input()

    off = cli("accounts", "update", "--billing-account", "acme", "--no-mask-content")
    assert ok(off)["maskContent"] is False and ok(off)["previousMaskContent"] is True
    assert "mask_content changed from True to False" in off.stderr
    assert "confidential" in recorded_input()

    assert "required" in failed(cli("accounts", "update", "--billing-account", "acme"))
    assert "does not exist" in failed(
        cli("accounts", "update", "--billing-account", "ghost", "--mask-content")
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("users", "create", "--billing-account", "ghost", "--user", "u"), "does not exist"),
        (("accounts", "create", "--billing-account", "bad id"), "billing account id"),
        (("grants", "create", "--billing-account", "acme", "--user", "alice",
          "--graph", "builtin:nope"), "unknown graph"),
        (("grants", "create", "--billing-account", "acme", "--user", "alice",
          "--graph", "builtin:chat", "--expires-at", "2001-01-01T00:00:00Z"), "in the past"),
        (("grants", "revoke", "grant_missing"), "does not exist"),
        (("grants", "create", "--billing-account", "acme"), "required"),
    ],
    ids=["unknown-account", "bad-account-id", "unknown-graph", "expired", "unknown-grant",
         "usage"],
)
def test_cli_errors_are_json_on_stderr_with_a_non_zero_exit(
    cli: Cli, args: tuple[str, ...], expected: str
) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    ok(cli("users", "create", "--billing-account", "acme", "--user", "alice"))

    assert expected in failed(cli(*args))


def test_creating_an_existing_account_fails(cli: Cli) -> None:
    ok(cli("accounts", "create", "--billing-account", "acme"))
    assert "already exists" in failed(cli("accounts", "create", "--billing-account", "acme"))


def test_serve_refuses_to_start_without_a_scheduler_token_outside_development(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "SCHEDULER_API_TOKEN": "", "DEPLOY_ENVIRONMENT": "production"}
    result = subprocess.run([sys.executable, "-m", "service", "serve"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode != 0
    assert "SCHEDULER_API_TOKEN" in json.loads(result.stderr.strip().splitlines()[-1])["error"]


def test_serve_announces_its_address_and_serves_until_interrupted(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced == {"serving": f"http://127.0.0.1:{port}"}
        assert wait_until(lambda: _ready(f"{announced['serving']}/readyz"), timeout=20), (
            "service never became ready"
        )
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
