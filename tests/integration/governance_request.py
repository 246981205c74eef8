"""The request a scheduler sends for one firing of the demo governance schedule."""

from __future__ import annotations

import httpx

from devstack.demo import GOVERNANCE_GRAPH, DemoAccount
from devstack.stack import ServiceHandle

__all__ = ["FIRING_KEY", "run_request"]

FIRING_KEY = "governance:community:2026-11-23T08:00:00Z"


def run_request(
    service: ServiceHandle, account: DemoAccount, key: str = FIRING_KEY
) -> httpx.Response:
    """POST the internal runs route under `key`, as the scheduler would (waits up to 120 s)."""
    with httpx.Client(base_url=service.url, timeout=120) as client:
        return client.post(
            f"/api/internal/graphs/{GOVERNANCE_GRAPH}/runs",
            headers={"Authorization": f"Bearer {service.scheduler_token}", "Idempotency-Key": key},
            json={
                "executionGrantId": account.grant_id,
                "scheduleId": "governance:community",
                "scheduledFor": "2026-11-23T08:00:00Z",
                "input": {"messages": [{"role": "user", "content": "Review this week."}]},
            },
        )
