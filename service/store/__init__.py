"""Persistence: a SQLite file holding billing accounts, users and execution grants."""

from service.store.accounts import (
    BillingAccount,
    NewUser,
    User,
    authenticate_user,
    create_billing_account,
    create_user,
    hash_api_key,
    validate_billing_account_id,
    validate_user_id,
)
from service.store.database import Database, StoreError
from service.store.grants import (
    Grant,
    GrantDenial,
    check_grant,
    create_grant,
    get_grant,
    revoke_grant,
)

__all__ = [
    "BillingAccount",
    "Database",
    "Grant",
    "GrantDenial",
    "NewUser",
    "StoreError",
    "User",
    "authenticate_user",
    "check_grant",
    "create_billing_account",
    "create_grant",
    "create_user",
    "get_grant",
    "hash_api_key",
    "revoke_grant",
    "validate_billing_account_id",
    "validate_user_id",
]
