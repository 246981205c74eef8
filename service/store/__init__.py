"""Persistence in one SQLite file: accounts, users, execution grants, idempotency keys."""

from service.store.accounts import (
    BillingAccount,
    NewUser,
    User,
    account_masks_content,
    authenticate_user,
    create_billing_account,
    create_user,
    hash_api_key,
    set_account_mask_content,
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
from service.store.idempotency import (
    Claim,
    ClaimedRun,
    IdempotencyRecord,
    IdempotencyStatus,
    claim_idempotency_key,
    finish_idempotency_key,
    get_idempotency_record,
    release_idempotency_key,
)

__all__ = [
    "BillingAccount",
    "Claim",
    "ClaimedRun",
    "Database",
    "Grant",
    "GrantDenial",
    "IdempotencyRecord",
    "IdempotencyStatus",
    "NewUser",
    "StoreError",
    "User",
    "account_masks_content",
    "set_account_mask_content",
    "authenticate_user",
    "check_grant",
    "claim_idempotency_key",
    "create_billing_account",
    "create_grant",
    "create_user",
    "finish_idempotency_key",
    "get_grant",
    "get_idempotency_record",
    "hash_api_key",
    "release_idempotency_key",
    "revoke_grant",
    "validate_billing_account_id",
    "validate_user_id",
]
