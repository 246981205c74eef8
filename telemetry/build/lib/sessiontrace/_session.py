"""Session id derivation: pure functions, no OpenTelemetry.

Ids are stable (one conversation, one schedule -> one session), ASCII, at most
200 characters, and never contain the raw state key, schedule id or
idempotency key: those may carry personal data, so only a hash is kept.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "MAX_SESSION_ID_LENGTH",
    "derive_adhoc_session_id",
    "derive_schedule_session_id",
    "derive_user_session_id",
    "validate_session_id",
]

MAX_SESSION_ID_LENGTH = 200
_BILLING_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGEST_CHARS = 32


def derive_user_session_id(billing_account_id: str, state_key: str) -> str:
    """Session of a user conversation: `ba:{account}:s:{sha256(state_key)[:32]}`."""
    return _derive("ba", "s", billing_account_id, state_key, "state_key")


def derive_schedule_session_id(billing_account_id: str, schedule_id: str) -> str:
    """Session shared by all runs of one schedule: `gov:{account}:s:{sha256(schedule_id)[:32]}`."""
    return _derive("gov", "s", billing_account_id, schedule_id, "schedule_id")


def derive_adhoc_session_id(billing_account_id: str, idempotency_key: str) -> str:
    """Session of an internal run without a schedule: `gov:{account}:k:{sha256(key)[:32]}`."""
    return _derive("gov", "k", billing_account_id, idempotency_key, "idempotency_key")


def validate_session_id(session_id: str) -> str:
    """Return `session_id` if Langfuse can group by it, else raise ValueError."""
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session id must be a non-empty string, got {session_id!r}")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise ValueError(
            f"session id is {len(session_id)} characters, at most {MAX_SESSION_ID_LENGTH} allowed"
        )
    if not session_id.isascii() or not session_id.isprintable():
        raise ValueError(f"session id must be printable ASCII, got {session_id!r}")
    return session_id


def _derive(prefix: str, kind: str, billing_account_id: str, key: str, key_name: str) -> str:
    if not isinstance(billing_account_id, str) or not _BILLING_ACCOUNT_ID.fullmatch(
        billing_account_id
    ):
        raise ValueError(
            "billing_account_id must match [A-Za-z0-9_-]{1,64}, "
            f"got {billing_account_id!r}"
        )
    if not isinstance(key, str) or not key:
        raise ValueError(f"{key_name} must be a non-empty string, got {key!r}")
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    return f"{prefix}:{billing_account_id}:{kind}:{digest}"
