"""Bearer credentials: parsing and constant-time comparison, no I/O."""

from __future__ import annotations

import hmac
import re

__all__ = [
    "MAX_AUTHORIZATION_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "bearer_token",
    "is_valid_idempotency_key",
    "token_matches",
]

# Longer headers are refused before any parsing or hashing: no work for junk.
MAX_AUTHORIZATION_LENGTH = 512
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_BEARER = re.compile(r"Bearer +([\x21-\x7e]+)", re.IGNORECASE)
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization or len(authorization) > MAX_AUTHORIZATION_LENGTH:
        return None
    match = _BEARER.fullmatch(authorization.strip())
    return match.group(1) if match else None


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected token matches nothing."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def is_valid_idempotency_key(key: str) -> bool:
    """Printable ASCII, 1 to MAX_IDEMPOTENCY_KEY_LENGTH characters."""
    return len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and bool(_PRINTABLE_ASCII.fullmatch(key))
