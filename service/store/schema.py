"""The database schema as ordered migrations; `PRAGMA user_version` counts those applied.

Append new migrations at the end, never edit an applied one: a database
created by an older version is brought forward on the next start-up.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

_V1_CORE = (
    """
    CREATE TABLE billing_accounts (
        id          TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE users (
        id                  TEXT PRIMARY KEY,
        billing_account_id  TEXT NOT NULL REFERENCES billing_accounts(id),
        api_key_hash        TEXT NOT NULL UNIQUE,  -- sha256 hex, the key itself is never stored
        created_at          TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE execution_grants (
        id                  TEXT PRIMARY KEY,
        billing_account_id  TEXT NOT NULL REFERENCES billing_accounts(id),
        user_id             TEXT NOT NULL REFERENCES users(id),
        graphs              TEXT NOT NULL,  -- JSON array of the graph ids it may run
        created_at          TEXT NOT NULL,
        expires_at          TEXT,
        revoked_at          TEXT
    )
    """,
)

# Each migration is a tuple of statements run in one transaction. Next: the
# governance issue's idempotency records (key, request hash, state, stored
# outcome) go here as migration 2.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1_CORE,)
