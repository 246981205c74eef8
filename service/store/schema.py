"""The database schema as ordered migrations, the same statements for SQLite and Postgres.

`PRAGMA user_version` (SQLite) or the `schema_version` table (Postgres) counts those applied.
Append new migrations at the end, never edit an applied one: a database created by an older
version is brought forward on the next start-up. Times are ISO-8601 UTC text in both (the store
writes and reads them in one place, `service.store.database`), flags 0/1 integers.
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

# One record per Idempotency-Key of the internal runs route. Keys are global,
# not per billing account: the route has one principal (the scheduler token),
# which owns the key space, and the request hash covers the grant, so a key
# reused for another account is refused (422), never answered with its outcome.
_V2_IDEMPOTENCY_KEYS = (
    """
    CREATE TABLE idempotency_keys (
        key                 TEXT PRIMARY KEY,
        request_hash        TEXT NOT NULL,  -- sha256 of the canonical request
        status              TEXT NOT NULL CHECK (status IN ('pending', 'finished')),
        claim_id            TEXT NOT NULL,  -- the attempt allowed to finish the record
        attempts            INTEGER NOT NULL DEFAULT 1,
        graph_id            TEXT NOT NULL,
        grant_id            TEXT NOT NULL REFERENCES execution_grants(id),
        billing_account_id  TEXT NOT NULL,
        user_id             TEXT NOT NULL,
        schedule_id         TEXT,
        run_id              TEXT NOT NULL,
        session_id          TEXT NOT NULL,
        response            TEXT,  -- JSON {ok, runId, traceId, sessionId, error?} once finished
        created_at          TEXT NOT NULL,
        claimed_at          TEXT NOT NULL,  -- start of the current attempt
        finished_at         TEXT,
        CHECK ((status = 'finished') = (response IS NOT NULL AND finished_at IS NOT NULL))
    )
    """,
)

# Per-account privacy: runs of an account with mask_content = 1 record only the
# byte size and sha256 of their payloads on spans, never the text.
_V3_ACCOUNT_MASK_CONTENT = (
    "ALTER TABLE billing_accounts ADD COLUMN mask_content INTEGER NOT NULL DEFAULT 0 "
    "CHECK (mask_content IN (0, 1))",
)

# Pruning finds finished keys by age (IDEMPOTENCY_RETENTION_HOURS) without a full scan.
_V4_FINISHED_KEYS_BY_AGE = (
    "CREATE INDEX idempotency_keys_finished_at ON idempotency_keys (finished_at) "
    "WHERE status = 'finished'",
)

# Each migration is a tuple of statements run in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1_CORE, _V2_IDEMPOTENCY_KEYS, _V3_ACCOUNT_MASK_CONTENT, _V4_FINISHED_KEYS_BY_AGE,
)
