"""Execution grants: which billing account and user a governance run acts for, and on what."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from service.store.database import Database, StoreError, from_iso, to_iso, utc_now

__all__ = ["Grant", "GrantDenial", "check_grant", "create_grant", "get_grant", "revoke_grant"]


class GrantDenial(StrEnum):
    """Why a grant does not allow a run; the value is the API error code."""

    NOT_FOUND = "grant_not_found"
    EXPIRED = "grant_expired"
    REVOKED = "grant_revoked"
    GRAPH_NOT_COVERED = "graph_not_covered"


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """Permission for the scheduler to run `graphs` on behalf of a user of an account.

    `mask_content` is the account's, read with the grant: runs under it need no other query.
    """

    id: str
    billing_account_id: str
    user_id: str
    graphs: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    mask_content: bool


# A grant with its account's masking, in one query.
_SELECT_GRANT = (
    "SELECT execution_grants.*, billing_accounts.mask_content FROM execution_grants "
    "JOIN billing_accounts ON billing_accounts.id = execution_grants.billing_account_id "
    "WHERE execution_grants.id = ?"
)


def create_grant(
    db: Database,
    *,
    billing_account_id: str,
    user_id: str,
    graphs: Sequence[str],
    expires_at: dt.datetime | None = None,
) -> Grant:
    """Create a grant for a user of the billing account; StoreError if they do not match."""
    if not graphs:
        raise ValueError("a grant needs at least one graph")
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    with db.connect() as connection:
        row = connection.execute(
            "SELECT users.billing_account_id, billing_accounts.mask_content FROM users "
            "JOIN billing_accounts ON billing_accounts.id = users.billing_account_id "
            "WHERE users.id = ?",
            (user_id,),
        ).fetchone()
        if row is None or row["billing_account_id"] != billing_account_id:
            raise StoreError(
                f"user {user_id!r} does not exist in billing account {billing_account_id!r}"
            )
        grant = Grant(
            id="grant_" + secrets.token_hex(12),
            billing_account_id=billing_account_id,
            user_id=user_id,
            graphs=tuple(dict.fromkeys(graphs)),
            created_at=utc_now(),
            expires_at=expires_at,
            revoked_at=None,
            mask_content=bool(row["mask_content"]),
        )
        connection.execute(
            "INSERT INTO execution_grants "
            "(id, billing_account_id, user_id, graphs, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                grant.id, billing_account_id, user_id, json.dumps(list(grant.graphs)),
                to_iso(grant.created_at), None if expires_at is None else to_iso(expires_at),
            ),
        )
    return grant


def get_grant(db: Database, grant_id: str) -> Grant | None:
    """The grant with this id and its account's masking (one query), or None."""
    with db.connect() as connection:
        row = connection.execute(_SELECT_GRANT, (grant_id,)).fetchone()
    if row is None:
        return None
    created_at = from_iso(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return Grant(
        id=row["id"],
        billing_account_id=row["billing_account_id"],
        user_id=row["user_id"],
        graphs=tuple(json.loads(row["graphs"])),
        created_at=created_at,
        expires_at=from_iso(row["expires_at"]),
        revoked_at=from_iso(row["revoked_at"]),
        mask_content=bool(row["mask_content"]),
    )


def revoke_grant(db: Database, grant_id: str) -> Grant:
    """Revoke a grant (idempotent: a revoked grant keeps its first revocation time)."""
    with db.connect() as connection:
        updated = connection.execute(
            "UPDATE execution_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            (to_iso(utc_now()), grant_id),
        ).rowcount
    grant = get_grant(db, grant_id)
    if not updated or grant is None:
        raise StoreError(f"execution grant {grant_id!r} does not exist")
    return grant


def check_grant(
    grant: Grant | None, graph_id: str, *, now: dt.datetime | None = None
) -> GrantDenial | None:
    """Why `grant` may not run `graph_id` now, or None when it may."""
    if grant is None:
        return GrantDenial.NOT_FOUND
    moment = now or utc_now()
    if grant.revoked_at is not None:
        return GrantDenial.REVOKED
    if grant.expires_at is not None and grant.expires_at <= moment:
        return GrantDenial.EXPIRED
    if graph_id not in grant.graphs:
        return GrantDenial.GRAPH_NOT_COVERED
    return None
