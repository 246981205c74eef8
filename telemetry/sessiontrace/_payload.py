"""Payload encoding for span attributes: scrub secrets and PII, cap size, or hash only.

Pure functions, no OpenTelemetry: whatever a span records as input or output
passes through `encode_payload` first, so nothing sensitive leaves the process.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "EncodedPayload",
    "encode_payload",
    "scrub",
]

REDACTED = "[REDACTED]"

_SENSITIVE_KEY_PARTS = (
    "secret", "password", "passwd", "apikey", "authorization", "cookie", "credential",
    "privatekey",
)
_KEY_SEPARATORS = re.compile(r"[\s_\-.]")
_API_KEY = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# Matches start only where a local part can start: without the lookbehind, a
# long run of word characters with no "@" costs quadratic time (3 s for 32 KB).
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
# Starts with the digit and looks behind it (no digit or dash before it), the same matches
# as a leading look-behind, but re skips to the next digit in C: 3x faster on prose.
_CARD_CANDIDATE = re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])")
# What `_summary` writes, and nothing else: a value of this shape holds no content.
_SUMMARY = re.compile(
    r'\{"omitted":"(?:masked|over_cap)","bytes":\d+,"sha256":"[0-9a-f]{64}"(?:,"cap_bytes":\d+)?\}'
)
# An inline assignment in free text: `password: hunter2`, `token=abc`, `"api_key": "x y"`.
# The key is matched from its secret-naming end ("access_token" from "token"), so the
# pattern starts with a literal word, never with an open-ended run: each start costs at
# most one separator and one value, and every scan stops at the next quote or newline,
# which keeps it linear (tests/unit/test_payload.py, 1 MB of adversarial text).
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>token|secret|passw(?:or)?d|pwd|api[_-]?key|private[_-]?key|credentials?)"
    r"(?P<separator>[\"']?[ \t]*[:=][ \t]*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&]+)",
    re.IGNORECASE,
)


# What _SECRET_ASSIGNMENT's keys contain, lowercased; and the letters re.IGNORECASE matches
# to ASCII ones (İ ı to i, ſ to s, the Kelvin sign to k), so `in` tests see what re sees.
_SECRET_WORDS = ("token", "secret", "passw", "pwd", "api", "private", "credential")
_CASE_EQUIVALENTS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

# Compact JSON that keeps non-ASCII text as it is. One encoder for every call: json.dumps
# with these options builds a new one each time, a third of what a small payload costs.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The fewest digits _CARD_CANDIDATE matches.
_CARD_MIN_DIGITS = 13

# `_is_sensitive_key`'s answers by key; started afresh when full, so keys a client
# makes up cannot grow it without bound. Setting and clearing a dict is atomic under
# the GIL, and two threads that compute the same answer store the same thing.
_SENSITIVE_KEYS: dict[str, bool] = {}
_SENSITIVE_KEYS_MAX = 1024


class EncodedPayload(str):
    """Text that `encode_payload` wrote: scrubbed (or a summary), within its cap.

    A marker, as markupsafe's `Markup` marks escaped text: where the session processor
    scrubs what other libraries record (sessiontrace._content), it leaves such a value as
    it is instead of scrubbing it a second time, 30-50 us a chat span. Anything made from
    it (a slice, a concatenation) is a plain str again, and is scrubbed.
    """

    __slots__ = ()


def scrub(value: Any) -> Any:
    """A copy of `value` with secret-looking keys redacted and secrets in strings masked."""
    if isinstance(value, str):
        return _mask_string(value)
    if type(value) is dict or isinstance(value, Mapping):  # the ABC test is the slow one
        return {
            str(key): REDACTED if _is_sensitive_key(str(key)) else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _mask_string(str(value))


def encode_payload(value: Any, *, max_bytes: int, mask_content: bool = False) -> str:
    """Scrub `value` and encode it as JSON, within `max_bytes` of UTF-8.

    Past the cap, or always with `mask_content`, the text is replaced by a
    JSON summary holding only its byte size and sha256. The size is taken
    before scrubbing, so a payload that cannot be kept is never scrubbed:
    scrubbing is the costly part, and a request near the body limit would
    otherwise hold the event loop for a noticeable time.

    The text is an `EncodedPayload`, a str the session processor knows is
    scrubbed already (sessiontrace._content).
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    unscrubbed = _encode(value)
    if unscrubbed is not None:
        raw = unscrubbed[1]
        if mask_content:
            return EncodedPayload(_summary("masked", raw))
        if len(raw) > max_bytes:
            return EncodedPayload(_summary("over_cap", raw, cap=max_bytes))
    cleaned = scrub(value)
    # Equal only when scrubbing masked nothing and changed no type (a tuple becomes a
    # list, a key a str): then it encodes to the very same text, already at hand.
    if unscrubbed is not None and cleaned == value:
        encoded, scrubbed = unscrubbed
    else:
        encoded = _JSON.encode(cleaned)
        scrubbed = encoded.encode("utf-8")
    if mask_content:
        return EncodedPayload(_summary("masked", scrubbed))
    # Masks can be longer than what they replace, so check again.
    if len(scrubbed) > max_bytes:
        return EncodedPayload(_summary("over_cap", scrubbed, cap=max_bytes))
    return EncodedPayload(encoded)


def encode_text(text: str, *, max_bytes: int, mask_content: bool = False) -> str:
    """`encode_payload` for text that is already encoded: scrubbed as text, never re-quoted.

    A JSON object or array (an instrumentation's messages) is scrubbed as the
    value it holds and re-encoded compactly, exactly as `encode_payload` would;
    other text is scrubbed as it stands. Caps and masking as in
    `encode_payload`, with the size and sha256 of `text` itself. A summary
    that `encode_payload` wrote comes back unchanged: it holds no content, and
    scrubbing could take its hash for a card number.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if _SUMMARY.fullmatch(text):
        return text
    # "surrogatepass": text that is not valid UTF-8 is still measured, never raises.
    raw = text.encode("utf-8", "surrogatepass")
    if mask_content:
        return _summary("masked", raw)
    if len(raw) > max_bytes:
        return _summary("over_cap", raw, cap=max_bytes)
    if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            return encode_payload(value, max_bytes=max_bytes)
    scrubbed = _mask_string(text)
    encoded = scrubbed.encode("utf-8", "surrogatepass")
    # Masks can be longer than what they replace, so check again.
    return _summary("over_cap", encoded, cap=max_bytes) if len(encoded) > max_bytes else scrubbed


def _encode(value: Any) -> tuple[str, bytes] | None:
    try:
        text = _JSON.encode(value)
        return text, text.encode("utf-8")
    except (TypeError, ValueError):
        return None  # not plain JSON (odd keys or types): scrub() normalises it first


def _summary(reason: str, raw: bytes, *, cap: int | None = None) -> str:
    summary: dict[str, Any] = {
        "omitted": reason,
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if cap is not None:
        summary["cap_bytes"] = cap
    return json.dumps(summary, separators=(",", ":"))


def _is_sensitive_key(key: str) -> bool:
    # Payloads repeat a few keys ("role", "content", "parts"): the answer is kept, as the
    # test costs 2-4 us a key and scrubbing a chat message tests four of them.
    known = _SENSITIVE_KEYS.get(key)
    if known is None:
        known = _key_is_sensitive(key)
        if len(_SENSITIVE_KEYS) >= _SENSITIVE_KEYS_MAX:
            _SENSITIVE_KEYS.clear()
        _SENSITIVE_KEYS[key] = known
    return known


def _key_is_sensitive(key: str) -> bool:
    normalized = _KEY_SEPARATORS.sub("", key.lower())
    # "access_token", "token", "csrfToken" are secrets; "max_tokens" and
    # "input_tokens" are counts.
    if normalized.endswith("token"):
        return True
    return any(part in normalized for part in _SENSITIVE_KEY_PARTS)


def _mask_string(text: str) -> str:
    # Each pattern runs only on text holding what every match of it needs: most text lacks
    # them, and each pattern costs 15-70 us a KB where these tests cost well under 1 us.
    # The masks written here hold none of them, so testing the original text is enough.
    # Case-insensitive patterns also match four non-ASCII letters to ASCII ones.
    if text.isalpha():
        return text  # every pattern needs a digit, a space or a sign: a role, a type
    folded = (text if text.isascii() else text.translate(_CASE_EQUIVALENTS)).lower()
    if "k-" in text:
        text = _API_KEY.sub(REDACTED, text)
    if "bearer" in folded or "basic" in folded:
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if ("=" in text or ":" in text) and any(word in folded for word in _SECRET_WORDS):
        text = _SECRET_ASSIGNMENT.sub(_mask_assignment, text)
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    # Roles, types, names: too short to hold a card number, and the most common texts.
    if len(text) < _CARD_MIN_DIGITS:
        return text
    return _CARD_CANDIDATE.sub(_mask_card, text)


def _mask_assignment(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('key')}{match.group('separator')}{quote}{REDACTED}{quote}"


def _mask_card(match: re.Match[str]) -> str:
    digits = [int(c) for c in match.group(0) if c.isdigit()]
    return "[CARD]" if _luhn_valid(digits) else match.group(0)


def _luhn_valid(digits: list[int]) -> bool:
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0
