import hashlib

import pytest

from sessiontrace import (
    MAX_SESSION_ID_LENGTH,
    derive_adhoc_session_id,
    derive_schedule_session_id,
    derive_user_session_id,
    validate_session_id,
)


def sha32(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def test_user_session_id_is_account_and_hashed_state_key() -> None:
    assert derive_user_session_id("acme", "thread-1") == f"ba:acme:s:{sha32('thread-1')}"


def test_schedule_session_id_is_account_and_hashed_schedule() -> None:
    assert (
        derive_schedule_session_id("acme", "governance:community")
        == f"gov:acme:s:{sha32('governance:community')}"
    )


def test_adhoc_session_id_is_account_and_hashed_idempotency_key() -> None:
    assert derive_adhoc_session_id("acme", "key-1") == f"gov:acme:k:{sha32('key-1')}"


def test_same_inputs_give_same_session_and_different_inputs_differ() -> None:
    assert derive_user_session_id("acme", "t") == derive_user_session_id("acme", "t")
    assert derive_user_session_id("acme", "t") != derive_user_session_id("acme", "u")
    assert derive_user_session_id("acme", "t") != derive_user_session_id("other", "t")
    # A schedule and an ad-hoc key with the same text must not collide.
    assert derive_schedule_session_id("acme", "x") != derive_adhoc_session_id("acme", "x")


def test_raw_state_key_never_appears_in_the_session_id() -> None:
    secret = "alice@example.com private thread"
    session_id = derive_user_session_id("acme", secret)
    assert "alice" not in session_id and "example" not in session_id


@pytest.mark.parametrize("account", ["", "has space", "a" * 65, "acme/evil", "café", "a:b"])
def test_bad_billing_account_id_raises_clear_error(account: str) -> None:
    with pytest.raises(ValueError, match="billing_account_id must match"):
        derive_user_session_id(account, "thread-1")


def test_empty_key_raises_clear_error() -> None:
    with pytest.raises(ValueError, match="schedule_id must be a non-empty string"):
        derive_schedule_session_id("acme", "")


def test_ids_are_ascii_and_within_langfuse_limit_for_the_longest_inputs() -> None:
    account = "A" * 64
    for session_id in (
        derive_user_session_id(account, "ü" * 10_000),
        derive_schedule_session_id(account, "s" * 10_000),
        derive_adhoc_session_id(account, "k" * 10_000),
    ):
        assert session_id.isascii()
        assert len(session_id) <= MAX_SESSION_ID_LENGTH
        assert validate_session_id(session_id) == session_id


@pytest.mark.parametrize("bad", ["", "x" * 201, "sess\u00e9", "line\nbreak"])
def test_validate_session_id_rejects_what_langfuse_cannot_group(bad: str) -> None:
    with pytest.raises(ValueError, match="session id"):
        validate_session_id(bad)
