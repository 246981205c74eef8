"""Billing accounts and their users; a user's API key is kept only as a sha256 hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from service.store.database import Database, StoreError, to_iso, utc_now

__all__ = [
    "BillingAccount",
    "NewUser",
    "User",
    "account_masks_content",
    "authenticate_user",
    "create_billing_account",
    "create_user",
    "hash_api_key",
    "set_account_mask_content",
    "validate_billing_account_id",
    "validate_user_id",
]

logger = logging.getLogger(__name__)

# The same rule telemetry applies when deriving session ids from the account.
_BILLING_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")
_API_KEY_PREFIX = "st_"


@dataclass(frozen=True, slots=True)
class BillingAccount:
    """An account that runs are billed to and grouped by.

    With `mask_content`, its runs record payload hashes on spans, never text.
    """

    id: str
    created_at: dt.datetime
    mask_content: bool = False


@dataclass(frozen=True, slots=True)
class User:
    """A user of one billing account, with the account's `mask_content` (read with the user)."""

    id: str
    billing_account_id: str
    mask_content: bool


@dataclass(frozen=True, slots=True)
class NewUser:
    """A freshly created user with its API key: the only time the key is visible."""

    user: User
    api_key: str


def validate_billing_account_id(value: str) -> str:
    """`value` if it is a valid billing account id, else ValueError."""
    if not _BILLING_ACCOUNT_ID.fullmatch(value):
        raise ValueError(f"billing account id must match [A-Za-z0-9_-]{{1,64}}, got {value!r}")
    return value


def validate_user_id(value: str) -> str:
    """`value` if it is a valid user id, else ValueError."""
    if not _USER_ID.fullmatch(value):
        raise ValueError(f"user id must match [A-Za-z0-9_.@:-]{{1,128}}, got {value!r}")
    return value


def hash_api_key(api_key: str) -> str:
    """The stored form of an API key (keys are random, so a plain sha256 suffices)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def create_billing_account(
    db: Database, billing_account_id: str, *, mask_content: bool = False
) -> BillingAccount:
    """Create a billing account; StoreError if it exists."""
    validate_billing_account_id(billing_account_id)
    account = BillingAccount(
        id=billing_account_id, created_at=utc_now(), mask_content=mask_content
    )
    with db.connect() as connection:
        inserted = connection.execute(
            "INSERT INTO billing_accounts (id, created_at, mask_content) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (account.id, to_iso(account.created_at), int(account.mask_content)),
        ).rowcount
    if not inserted:
        raise StoreError(f"billing account {billing_account_id!r} already exists")
    return account


def set_account_mask_content(
    db: Database, billing_account_id: str, *, mask_content: bool
) -> tuple[BillingAccount, bool]:
    """Turn content masking of an account on or off; the account and its previous setting.

    StoreError if the account does not exist. Every call is logged, a change
    at INFO with both values: who masks content is a privacy decision.
    Runs already started keep the setting they started with.
    """
    with db.connect(write=True) as connection:
        row = connection.execute(
            "SELECT created_at, mask_content FROM billing_accounts WHERE id = ?"
            + connection.dialect.for_update,
            (billing_account_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"billing account {billing_account_id!r} does not exist")
        previous = bool(row["mask_content"])
        connection.execute(
            "UPDATE billing_accounts SET mask_content = ? WHERE id = ?",
            (int(mask_content), billing_account_id),
        )
    if previous != mask_content:
        logger.info(
            "billing account %s: mask_content changed from %s to %s",
            billing_account_id, previous, mask_content,
        )
    else:
        logger.info("billing account %s: mask_content stays %s", billing_account_id, previous)
    account = BillingAccount(
        id=billing_account_id, created_at=dt.datetime.fromisoformat(row["created_at"]),
        mask_content=mask_content,
    )
    return account, previous


def account_masks_content(db: Database, billing_account_id: str) -> bool:
    """Whether runs of the account may record only hashes of their payloads.

    An unknown account counts as masked: when in doubt, no text leaves the process. Requests
    get the flag with their user or grant (`authenticate_user`, `get_grant`), not from here.
    """
    with db.connect() as connection:
        row = connection.execute(
            "SELECT mask_content FROM billing_accounts WHERE id = ?", (billing_account_id,)
        ).fetchone()
    return row is None or bool(row["mask_content"])


def create_user(db: Database, *, billing_account_id: str, user_id: str) -> NewUser:
    """Create a user of an existing billing account with a new API key."""
    validate_billing_account_id(billing_account_id)
    validate_user_id(user_id)
    api_key = _API_KEY_PREFIX + secrets.token_urlsafe(32)
    with db.connect() as connection:
        account = connection.execute(
            "SELECT mask_content FROM billing_accounts WHERE id = ?", (billing_account_id,)
        ).fetchone()
        if account is None:
            raise StoreError(f"billing account {billing_account_id!r} does not exist")
        # Race-free across processes: of two creating one user, one inserts, one is told.
        inserted = connection.execute(
            "INSERT INTO users (id, billing_account_id, api_key_hash, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (user_id, billing_account_id, hash_api_key(api_key), to_iso(utc_now())),
        ).rowcount
    if not inserted:
        raise StoreError(f"user {user_id!r} already exists")
    user = User(
        id=user_id, billing_account_id=billing_account_id,
        mask_content=bool(account["mask_content"]),
    )
    return NewUser(user=user, api_key=api_key)


def authenticate_user(db: Database, api_key: str) -> User | None:
    """The user owning `api_key`, with its account's masking (one query), or None."""
    with db.connect() as connection:
        row = connection.execute(
            "SELECT users.id, users.billing_account_id, billing_accounts.mask_content "
            "FROM users JOIN billing_accounts ON billing_accounts.id = users.billing_account_id "
            "WHERE users.api_key_hash = ?",
            (hash_api_key(api_key),),
        ).fetchone()
    if row is None:
        return None
    return User(
        id=row["id"], billing_account_id=row["billing_account_id"],
        mask_content=bool(row["mask_content"]),
    )
