"""Content that other libraries record on a bound session's spans: scrubbed and capped, or masked.

Instrumentations write prompts and completions after their span starts (openai-v2's
`gen_ai.input.messages`, OpenInference's `input.value`), as the application's user
typed them. The session processor rewrites them when the span ends, before any
exporter sees it, under the rules the library's own payloads follow
(`encode_payload`): secrets, e-mail addresses and card numbers masked, at most
`CONTENT_ATTRIBUTE_CAP` bytes a value, or only size and sha256 for a session bound
with `mask_content=True`.

No OpenTelemetry import: this module works on a span's attribute dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from typing import Any

from sessiontrace._payload import EncodedPayload, encode_text
from sessiontrace.attributes import GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES

__all__ = [
    "CONTENT_ATTRIBUTE_CAP",
    "CONTENT_KEYS",
    "content_keys",
    "rewrite_content",
]

# A third-party content value holds LLM messages, like the library's own LLM payloads.
CONTENT_ATTRIBUTE_CAP = 100_000

GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
INPUT_VALUE = "input.value"  # OpenInference
OUTPUT_VALUE = "output.value"  # OpenInference

# Exact names, looked up on every stamped span as it ends: the test costs a few dict
# lookups on a span that carries none (bench figures in the README).
CONTENT_KEYS = frozenset({
    GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_TOOL_CALL_ARGUMENTS, GEN_AI_TOOL_CALL_RESULT, INPUT_VALUE, OUTPUT_VALUE,
})
# OpenInference also flattens each message into indexed keys
# (`llm.input_messages.0.message.content`); they are searched for only on a span that
# has one of the keys above, as its LLM spans do (`input.value`). Roles and names stay.
_FLATTENED_PREFIXES = ("llm.input_messages.", "llm.output_messages.")
_FLATTENED_SUFFIXES = (".content", ".text", ".arguments")


def content_keys(attributes: Mapping[str, Any], *, mask_content: bool = False) -> list[str]:
    """The keys of `attributes` whose content is still to rewrite; empty for most spans.

    A value `encode_payload` wrote (an `EncodedPayload`: the application's own payload,
    recorded under these keys as the GenAI conventions say) is scrubbed and capped already,
    and is left out, unless the span's session masks content and the value is not a
    summary yet.
    """
    if attributes.keys().isdisjoint(CONTENT_KEYS):
        return []
    return [
        key for key, value in attributes.items()
        if (key in CONTENT_KEYS
            or (key.startswith(_FLATTENED_PREFIXES) and key.endswith(_FLATTENED_SUFFIXES)))
        and not (type(value) is EncodedPayload and not mask_content and _within_cap(value))
    ]


def rewrite_content(
    store: MutableMapping[str, Any],
    keys: list[str],
    *,
    mask_content: bool,
    max_value_len: int | None = None,
) -> None:
    """Replace each of `keys` in `store` by its scrubbed and capped, or masked, value.

    Text is rewritten by `encode_text` (the same rules and summary format as
    `encode_payload`); a sequence of text as one value: summarised whole when
    masked or over the cap, else each item scrubbed. Values of other types (a
    number, a flag) hold no text and stay. `max_value_len` is the span's
    attribute length limit, which the SDK applied to the original: the
    rewritten value is cut the same way.
    """
    for key in keys:
        value = store[key]
        if isinstance(value, str):
            store[key] = _limit(
                encode_text(value, max_bytes=CONTENT_ATTRIBUTE_CAP, mask_content=mask_content),
                max_value_len,
            )
        elif isinstance(value, (tuple, list)) and all(isinstance(item, str) for item in value):
            store[key] = _encode_texts(value, mask_content=mask_content, max_len=max_value_len)


def _encode_texts(
    items: tuple[str, ...] | list[str], *, mask_content: bool, max_len: int | None
) -> str | tuple[str, ...]:
    if not mask_content and _size(items) <= CONTENT_ATTRIBUTE_CAP:
        scrubbed = [encode_text(item, max_bytes=CONTENT_ATTRIBUTE_CAP) for item in items]
        if _size(scrubbed) <= CONTENT_ATTRIBUTE_CAP:
            return tuple(_limit(item, max_len) for item in scrubbed)
    # Masked or over the cap: the array as one JSON text, which encode_text summarises.
    whole = json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))
    return _limit(
        encode_text(whole, max_bytes=CONTENT_ATTRIBUTE_CAP, mask_content=mask_content), max_len
    )


def _within_cap(text: str) -> bool:
    # An encode_payload cap may exceed this one; UTF-8 takes at most 4 bytes a character.
    return len(text) * 4 <= CONTENT_ATTRIBUTE_CAP or (
        len(text.encode("utf-8", "surrogatepass")) <= CONTENT_ATTRIBUTE_CAP
    )


def _size(items: tuple[str, ...] | list[str]) -> int:
    return sum(len(item.encode("utf-8", "surrogatepass")) for item in items)


def _limit(text: str, max_len: int | None) -> str:
    return text if max_len is None else text[:max_len]
