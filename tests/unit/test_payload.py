import hashlib
import json
import time
from typing import Any

import pytest

from sessiontrace._payload import REDACTED, encode_payload, scrub


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    payload = {
        "messages": [{"role": "user", "content": "hi"}],
        "config": {
            "api_key": "abc",
            "nested": [{"Authorization": "x", "password": "p", "refresh_token": "r"}],
            "Cookie": "c",
            "clientSecret": "s",
            "X-Api-Key": "k",
        },
    }
    scrubbed = scrub(payload)
    assert scrubbed["messages"] == [{"role": "user", "content": "hi"}]
    config = scrubbed["config"]
    assert config["api_key"] == REDACTED
    assert config["Cookie"] == REDACTED
    assert config["clientSecret"] == REDACTED
    assert config["X-Api-Key"] == REDACTED
    assert config["nested"] == [
        {"Authorization": REDACTED, "password": REDACTED, "refresh_token": REDACTED}
    ]


def test_token_counts_are_not_mistaken_for_tokens() -> None:
    usage = {"input_tokens": 12, "max_tokens": 256, "completion_tokens": 3}
    assert scrub(usage) == usage


@pytest.mark.parametrize(
    ("text", "leak", "mask"),
    [
        ("key sk-proj-abcdefghijklmnop1234 here", "sk-proj-abcdefghijklmnop1234", REDACTED),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGci", "Bearer [REDACTED]"),
        ("mail alice.smith+ai@example.co.uk now", "alice.smith", "[EMAIL]"),
        ("card 4111 1111 1111 1111 exp", "4111 1111", "[CARD]"),
        ("card 5500-0000-0000-0004.", "5500-0000", "[CARD]"),
    ],
)
def test_secrets_and_pii_inside_strings_are_masked(text: str, leak: str, mask: str) -> None:
    masked = scrub({"content": text})["content"]
    assert leak not in masked
    assert mask in masked


def test_numbers_that_fail_luhn_are_left_alone() -> None:
    assert scrub("order 1234567890123 shipped") == "order 1234567890123 shipped"


def test_payload_within_cap_is_scrubbed_json() -> None:
    encoded = encode_payload({"q": "mail bob@example.com"}, max_bytes=1000)
    assert json.loads(encoded) == {"q": "mail [EMAIL]"}


def test_payload_over_cap_becomes_a_summary_with_size_and_hash() -> None:
    value = {"text": "x" * 20_000}
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    summary = json.loads(encode_payload(value, max_bytes=10_000))
    assert summary == {
        "omitted": "over_cap",
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "cap_bytes": 10_000,
    }


def test_cap_counts_utf8_bytes_not_characters() -> None:
    value = "é" * 600  # 1,200 bytes, 600 characters
    assert json.loads(encode_payload(value, max_bytes=1_000))["omitted"] == "over_cap"


def test_masked_content_keeps_only_hash_and_size() -> None:
    encoded = encode_payload({"content": "my diagnosis is private"}, max_bytes=1000, mask_content=True)
    summary = json.loads(encoded)
    assert set(summary) == {"omitted", "bytes", "sha256"}
    assert summary["omitted"] == "masked"
    assert "diagnosis" not in encoded


def test_nonpositive_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        encode_payload("x", max_bytes=0)


def test_scrubbing_a_long_unbroken_string_takes_linear_time() -> None:
    # A 32 KB token with no "@" once cost seconds in the e-mail pattern, on the request path.
    started = time.perf_counter()
    scrubbed = scrub("x" * 32_000 + " reach me at jane@example.com")
    assert time.perf_counter() - started < 0.5
    assert scrubbed.endswith("reach me at [EMAIL]")


def test_over_cap_payload_is_summarised_without_being_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sessiontrace._payload as payload

    def refuse(_: object) -> object:
        raise AssertionError("an over-cap payload must not be scrubbed")

    monkeypatch.setattr(payload, "scrub", refuse)
    summary = json.loads(encode_payload({"text": "y" * 5_000}, max_bytes=1_000))
    assert summary["omitted"] == "over_cap"
    masked = json.loads(encode_payload({"text": "y"}, max_bytes=1_000, mask_content=True))
    assert masked["omitted"] == "masked"


def test_masks_that_grow_the_payload_past_the_cap_still_give_a_summary() -> None:
    # 12 one-character secrets become 12 "[REDACTED]": under the cap raw, over it scrubbed.
    value = {f"t{i}_token": "x" for i in range(12)}
    raw = json.dumps(value, separators=(",", ":")).encode()
    cap = len(raw) + 10
    summary = json.loads(encode_payload(value, max_bytes=cap))
    assert summary["omitted"] == "over_cap"
    assert set(summary) == {"omitted", "bytes", "sha256", "cap_bytes"}


def test_values_that_are_not_plain_json_are_normalised_by_scrub() -> None:
    encoded = encode_payload({1: ("a", "b"), "when": object.__name__}, max_bytes=1_000)
    assert json.loads(encoded) == {"1": ["a", "b"], "when": "object"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: hunter2", "password: [REDACTED]"),
        ("use token=abc&page=2", "use token=[REDACTED]&page=2"),
        ("api_key: xyz", "api_key: [REDACTED]"),
        ("PASSWORD = hunter2 then", "PASSWORD = [REDACTED] then"),
        ("Api-Key:xyz, ok", "Api-Key:[REDACTED], ok"),
        ("access_token=t1 refresh", "access_token=[REDACTED] refresh"),
        ('{"client_secret": "two words"}', '{"client_secret": "[REDACTED]"}'),
        ("secret:'a b' done", "secret:'[REDACTED]' done"),
        ("max_tokens: 5 and tokenizer: bpe", "max_tokens: 5 and tokenizer: bpe"),
        ("the password is long", "the password is long"),
    ],
)
def test_inline_secret_assignments_in_free_text_are_masked(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "token" + " " * n,  # a separator that never comes
        lambda n: 'token:"' + "a" * n,  # a quote that never closes
        lambda n: "token " * (n // 6),
        lambda n: ("token:'" + "a" * 93 + "\n") * (n // 101),
        lambda n: "password:x " * (n // 11),
        lambda n: "api_" * (n // 4),
        lambda n: "a" * n,
    ],
    ids=["open-separator", "open-quote", "keywords", "open-quote-lines", "assignments",
         "key-prefixes", "one-word"],
)
def test_scrubbing_a_megabyte_of_adversarial_text_stays_linear(make: Any) -> None:
    # No timing assertion (a shared CI machine). Measured with scrub() on each of these
    # shapes, 100 KB vs 1 MB: 13-18 ms vs 122-179 ms, a ratio of 9.3-10.2, i.e. linear;
    # the assignment pattern is about half of it (61-82 ms per MB). A quadratic pattern
    # takes minutes on 1 MB.
    text = make(1_000_000)
    assert len(scrub(text)) >= len(text) // 2
