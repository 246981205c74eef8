"""Tools of the built-in graphs: blocking functions run in the executor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.caller import require_caller

__all__ = ["account_policy", "message_stats"]

_POLICY = (
    "Runs act only within the billing account that granted them. Flag personal data, "
    "credentials and spending above plan limits."
)


def account_policy(arguments: Mapping[str, Any]) -> dict[str, str]:
    """The governance policy of the account the run acts for.

    The account comes from the bound caller, never from the arguments: the
    tool cannot be pointed at another account's policy.
    """
    caller = require_caller()
    topic = str(arguments.get("topic", "general"))
    return {"billingAccountId": caller.billing_account_id, "topic": topic, "policy": _POLICY}


def message_stats(arguments: Mapping[str, Any]) -> dict[str, int]:
    """Counts over the conversation under review."""
    messages = arguments.get("messages", [])
    texts = [str(m.get("content", "")) for m in messages if isinstance(m, Mapping)]
    return {
        "messages": len(texts),
        "words": sum(len(t.split()) for t in texts),
        "characters": sum(len(t) for t in texts),
    }
