"""The demo traffic of `make run`, sent the way real clients send it.

A billing account, a user and an execution grant are created with the service's own CLI; then
one user chat (`POST /api/v1/ai/chat` with the user's API key) and two governance runs of one
schedule (`POST /api/internal/graphs/builtin:governance-review/runs` with the scheduler token,
distinct Idempotency-Keys, the same scheduleId), so the two governance runs share a session and
the chat has its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from devstack.processes import REPO_ROOT, python_module

__all__ = [
    "CHAT_GRAPH",
    "DEMO_BILLING_ACCOUNT",
    "DEMO_SCHEDULE_ID",
    "DEMO_USER",
    "GOVERNANCE_GRAPH",
    "DemoAccount",
    "DemoError",
    "RunResult",
    "fire_demo_runs",
    "governance_run",
    "provision_demo",
    "service_cli",
    "user_chat",
]

DEMO_BILLING_ACCOUNT = "demo"
DEMO_USER = "demo-user"
CHAT_GRAPH = "builtin:chat"
GOVERNANCE_GRAPH = "builtin:governance-review"
DEMO_SCHEDULE_ID = "governance:community"


class DemoError(RuntimeError):
    """A CLI command or an API call of the demo did not succeed; the message says which."""


@dataclass(frozen=True)
class DemoAccount:
    """What provisioning created: the user's API key and the grant the scheduler acts under."""

    billing_account_id: str
    user_id: str
    grant_id: str
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class RunResult:
    """One answered run: the trace and session the service reported, and whom it ran for."""

    label: str
    trigger: str
    trace_id: str
    session_id: str
    user_id: str


def service_cli(database_url: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run `python -m service ARGS` against `database_url`; its JSON answer, or DemoError."""
    env = {**os.environ, "DATABASE_URL": database_url, "DEPLOY_ENVIRONMENT": "development"}
    completed = subprocess.run(
        python_module("service", *args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    command = "python -m service " + " ".join(args)
    if completed.returncode != 0:
        raise DemoError(
            f"`{command}` failed with exit code {completed.returncode}: "
            f"{(completed.stderr or completed.stdout).strip()}"
        )
    try:
        answer = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise DemoError(f"`{command}` printed no JSON: {completed.stdout!r}") from exc
    if not isinstance(answer, dict):
        raise DemoError(f"`{command}` printed {answer!r}, expected a JSON object")
    return answer


def provision_demo(
    database_url: str,
    *,
    billing_account: str = DEMO_BILLING_ACCOUNT,
    user: str = DEMO_USER,
    graphs: tuple[str, ...] = (GOVERNANCE_GRAPH,),
) -> DemoAccount:
    """Create a billing account, a user with an API key, and an execution grant for `graphs`."""
    service_cli(database_url, "accounts", "create", "--billing-account", billing_account)
    created = service_cli(
        database_url, "users", "create", "--billing-account", billing_account, "--user", user
    )
    graph_args = [arg for graph in graphs for arg in ("--graph", graph)]
    grant = service_cli(
        database_url,
        "grants", "create", "--billing-account", billing_account, "--user", user, *graph_args,
    )
    return DemoAccount(
        billing_account_id=billing_account,
        user_id=user,
        grant_id=str(grant["grantId"]),
        api_key=str(created["apiKey"]),
    )


def user_chat(
    client: httpx.Client, account: DemoAccount, *, text: str, state_key: str | None = None
) -> RunResult:
    """One chat run as the account's user."""
    body: dict[str, Any] = {"graphId": CHAT_GRAPH, "messages": [{"role": "user", "content": text}]}
    if state_key is not None:
        body["stateKey"] = state_key
    response = client.post(
        "/api/v1/ai/chat", json=body, headers={"Authorization": f"Bearer {account.api_key}"}
    )
    return _result("user chat", "user", response, account.user_id)


def governance_run(
    client: httpx.Client,
    *,
    scheduler_token: str,
    account: DemoAccount,
    schedule_id: str,
    idempotency_key: str,
    scheduled_for: dt.datetime,
    label: str = "governance run",
) -> RunResult:
    """One governance run of `schedule_id`, as the scheduler sends it."""
    body = {
        "executionGrantId": account.grant_id,
        "scheduleId": schedule_id,
        "scheduledFor": scheduled_for.isoformat(),
        "input": {"messages": [{"role": "user", "content": "Review this week's activity."}]},
    }
    headers = {"Authorization": f"Bearer {scheduler_token}", "Idempotency-Key": idempotency_key}
    response = client.post(
        f"/api/internal/graphs/{GOVERNANCE_GRAPH}/runs", json=body, headers=headers
    )
    return _result(label, "schedule", response, account.user_id)


def fire_demo_runs(
    client: httpx.Client,
    account: DemoAccount,
    *,
    scheduler_token: str,
    schedule_id: str = DEMO_SCHEDULE_ID,
) -> list[RunResult]:
    """One user chat, then two governance runs of one schedule (consecutive hourly slots)."""
    results = [user_chat(client, account, text="Summarise this week's community activity.")]
    # A fresh suffix per invocation: rerunning the demo never replays an earlier run's key.
    nonce = uuid.uuid4().hex[:8]
    slot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    for index, scheduled_for in enumerate((slot - dt.timedelta(hours=1), slot), start=1):
        results.append(
            governance_run(
                client,
                scheduler_token=scheduler_token,
                account=account,
                schedule_id=schedule_id,
                idempotency_key=f"{schedule_id}:{scheduled_for:%Y-%m-%dT%H:%MZ}:{nonce}",
                scheduled_for=scheduled_for,
                label=f"governance run {index}/2",
            )
        )
    return results


def _result(label: str, trigger: str, response: httpx.Response, user_id: str) -> RunResult:
    request = f"{response.request.method} {response.request.url.path}"
    if response.status_code != 200:
        raise DemoError(
            f"{label}: {request} answered {response.status_code}: {response.text[:500]}"
        )
    body = response.json()
    if body.get("ok") is False:
        raise DemoError(f"{label}: {request} ran but failed: {body.get('error')}")
    if not body.get("traceId"):
        raise DemoError(f"{label}: {request} returned no traceId (is OTEL_SDK_DISABLED set?)")
    return RunResult(label, trigger, str(body["traceId"]), str(body["sessionId"]), user_id)
