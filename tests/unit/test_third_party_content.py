"""Content that other instrumentations record inside a bound session leaves scrubbed, capped or masked."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessiontrace import _content, _payload
from sessiontrace import (
    CONTENT_ATTRIBUTE_CAP,
    SessionContext,
    SessionSpanProcessor,
    bind_session,
    binding,
    encode_payload,
)
from sessiontrace.attributes import GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, SESSION_ID

MakeSession = Callable[..., SessionContext]

INPUT_VALUE = "input.value"  # OpenInference
OUTPUT_VALUE = "output.value"
SECRET_KEY = "sk-" + "a1B2c3D4e5F6g7H8i9J0"
ADDRESS = "alice@example.com"
# How openai-v2 records a prompt: the GenAI message shape, as JSON, written after span start.
RAW_PROMPT = json.dumps([{
    "role": "user",
    "parts": [{"type": "text", "content": f"mail {ADDRESS} my key {SECRET_KEY} please"}],
}])


def _record(provider: TracerProvider, attributes: dict[str, Any]) -> None:
    """What an instrumentation does: start its span, then write the content, then end it."""
    span = provider.get_tracer("opentelemetry.instrumentation.openai_v2").start_span("chat gpt")
    span.set_attributes(attributes)
    span.end()


def _only_span(exporter: InMemorySpanExporter) -> dict[str, Any]:
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    return dict(span.attributes)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_raw_prompt_in_a_bound_session_is_exported_scrubbed(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    with binding(make_session()):
        _record(provider, {GEN_AI_INPUT_MESSAGES: RAW_PROMPT})

    exported = _only_span(exporter)[GEN_AI_INPUT_MESSAGES]
    assert ADDRESS not in exported and SECRET_KEY not in exported
    # Still the messages, scrubbed as encode_payload scrubs the service's own.
    assert exported == encode_payload(json.loads(RAW_PROMPT), max_bytes=CONTENT_ATTRIBUTE_CAP)
    content = json.loads(exported)[0]["parts"][0]["content"]
    assert content == "mail [EMAIL] my key [REDACTED] please"


def test_openinference_text_values_are_scrubbed_as_text_not_requoted(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    with binding(make_session()):
        _record(provider, {
            INPUT_VALUE: f"write to {ADDRESS}",
            OUTPUT_VALUE: "Authorization: Bearer abcdefghijklmnop",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": f"key {SECRET_KEY}",
        })

    attributes = _only_span(exporter)
    assert attributes[INPUT_VALUE] == "write to [EMAIL]"
    assert attributes[OUTPUT_VALUE] == "Authorization: Bearer [REDACTED]"
    assert attributes["llm.input_messages.0.message.content"] == "key [REDACTED]"
    assert attributes["llm.input_messages.0.message.role"] == "user"


def test_content_over_the_cap_is_summarised_by_size_and_hash(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    huge = json.dumps([{"role": "user", "parts": [
        {"type": "text", "content": f"{ADDRESS} " + "x" * CONTENT_ATTRIBUTE_CAP},
    ]}])
    with binding(make_session()):
        _record(provider, {GEN_AI_OUTPUT_MESSAGES: huge})

    summary = json.loads(_only_span(exporter)[GEN_AI_OUTPUT_MESSAGES])
    assert summary == {
        "omitted": "over_cap",
        "bytes": len(huge.encode("utf-8")),
        "sha256": _sha256(huge),
        "cap_bytes": CONTENT_ATTRIBUTE_CAP,
    }


def test_session_with_mask_content_keeps_only_size_and_hash(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    content = {
        GEN_AI_INPUT_MESSAGES: RAW_PROMPT,
        GEN_AI_OUTPUT_MESSAGES: '[{"role":"assistant","parts":[]}]',
        INPUT_VALUE: "what is my balance?",
        OUTPUT_VALUE: "42",
    }
    with bind_session(session_id="s-masked", user_id="alice", mask_content=True):
        _record(provider, {**content, "gen_ai.request.model": "gpt-x"})

    attributes = _only_span(exporter)
    for key, raw in content.items():
        assert json.loads(attributes[key]) == {
            "omitted": "masked", "bytes": len(raw.encode("utf-8")), "sha256": _sha256(raw),
        }, key
    assert attributes["gen_ai.request.model"] == "gpt-x"  # not content: kept
    assert attributes["sessiontrace.content"] == "masked"


def test_masking_holds_for_a_span_that_ends_after_its_block(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    # A stream consumed after the route's block exited: the span ends outside the binding.
    with binding(make_session(mask_content=True)):
        span = provider.get_tracer("openinference").start_span("llm")
    span.set_attribute(INPUT_VALUE, f"mail {ADDRESS}")
    span.end()

    summary = json.loads(_only_span(exporter)[INPUT_VALUE])
    assert summary["omitted"] == "masked"


def test_span_outside_any_session_is_left_alone(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    _record(provider, {GEN_AI_INPUT_MESSAGES: RAW_PROMPT, INPUT_VALUE: ADDRESS})

    attributes = _only_span(exporter)
    assert SESSION_ID not in attributes
    assert attributes[GEN_AI_INPUT_MESSAGES] == RAW_PROMPT
    assert attributes[INPUT_VALUE] == ADDRESS


def test_payloads_encoded_by_the_library_come_back_unchanged(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    messages = [{"role": "user", "parts": [{"type": "text", "content": f"hi {ADDRESS} 1234"}]}]
    scrubbed = encode_payload(messages, max_bytes=CONTENT_ATTRIBUTE_CAP)
    # Hashes whose hex digits could pass for a card number: a summary is never scrubbed.
    summaries = [
        encode_payload(f"payload {index}", max_bytes=CONTENT_ATTRIBUTE_CAP, mask_content=True)
        for index in range(200)
    ]
    with binding(make_session()):
        _record(provider, {GEN_AI_INPUT_MESSAGES: scrubbed})
        for summary in summaries:
            _record(provider, {GEN_AI_OUTPUT_MESSAGES: summary})

    first, *rest = exporter.get_finished_spans()
    assert _attributes(first)[GEN_AI_INPUT_MESSAGES] == scrubbed
    assert [_attributes(span)[GEN_AI_OUTPUT_MESSAGES] for span in rest] == summaries


def test_a_payload_encoded_by_the_library_is_not_scrubbed_again_unless_the_session_masks(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rewrites: list[str] = []

    def counted(text: str, **kwargs: Any) -> str:
        rewrites.append(text)
        return _payload.encode_text(text, **kwargs)  # what _content calls it by

    monkeypatch.setattr(_content, "encode_text", counted)
    messages = [{"role": "user", "parts": [{"type": "text", "content": f"hi {ADDRESS}"}]}]
    encoded = encode_payload(messages, max_bytes=CONTENT_ATTRIBUTE_CAP)
    with binding(make_session()):
        _record(provider, {GEN_AI_INPUT_MESSAGES: encoded})
    assert rewrites == []  # scrubbed once, by encode_payload
    # A plain str holding the same text (or made from it) is another library's: scrubbed.
    with binding(make_session()):
        _record(provider, {GEN_AI_INPUT_MESSAGES: str(encoded) + " "})
    assert len(rewrites) == 1
    # A masking session masks it, even though it was only scrubbed.
    with binding(make_session(mask_content=True)):
        _record(provider, {GEN_AI_INPUT_MESSAGES: encoded})

    first, second, masked = exporter.get_finished_spans()
    assert _attributes(first)[GEN_AI_INPUT_MESSAGES] == encoded
    assert ADDRESS not in _attributes(second)[GEN_AI_INPUT_MESSAGES]
    assert json.loads(_attributes(masked)[GEN_AI_INPUT_MESSAGES])["omitted"] == "masked"


def test_rewritten_content_respects_the_attribute_length_limit(
    exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    provider = TracerProvider(span_limits=SpanLimits(max_attribute_length=40))
    provider.add_span_processor(SessionSpanProcessor(strict=True))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with binding(make_session(mask_content=True)):
        _record(provider, {INPUT_VALUE: "a question"})

    value = _only_span(exporter)[INPUT_VALUE]
    assert len(value) == 40
    assert value.startswith('{"omitted":"masked"')


def test_a_sequence_of_texts_is_scrubbed_item_by_item(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    with binding(make_session()):
        _record(provider, {INPUT_VALUE: [f"to {ADDRESS}", "plain"]})

    assert _only_span(exporter)[INPUT_VALUE] == ("to [EMAIL]", "plain")


def test_content_of_a_span_started_from_a_captured_context_is_scrubbed(
    provider: TracerProvider, exporter: InMemorySpanExporter, make_session: MakeSession
) -> None:
    # Started from a captured context outside the block, as a callback would.
    with binding(make_session()):
        captured = otel_context.get_current()
    span = provider.get_tracer("t").start_span("callback", context=captured)
    span.set_attribute(GEN_AI_INPUT_MESSAGES, RAW_PROMPT)
    span.end()

    assert ADDRESS not in _only_span(exporter)[GEN_AI_INPUT_MESSAGES]


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


def test_scrubbing_shortcuts_mask_exactly_what_the_full_patterns_mask() -> None:
    # _mask_string skips a pattern when the text lacks what every match needs, since it now
    # runs on every content value of every bound span; the result must not change.
    old_card = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")

    def every_pattern(text: str) -> str:
        text = _payload._API_KEY.sub(_payload.REDACTED, text)
        text = _payload._AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {_payload.REDACTED}", text)
        text = _payload._SECRET_ASSIGNMENT.sub(_payload._mask_assignment, text)
        text = _payload._EMAIL.sub("[EMAIL]", text)
        return old_card.sub(_payload._mask_card, text)

    # Pieces of every pattern, and the non-ASCII letters re.IGNORECASE takes for ASCII ones.
    pieces = [
        "sk-", "pk-", "abcdEFGH12345678", "Bearer ", "BASIC ", "beaRer\t", "token", "TOKEN",
        "passwd", "Password", "pwd", "api_key", "API-KEY", "private_key", "credentials",
        "secret", "=", ": ", '"', "'", "\n", " ", "@", "a.b", "example.com", "4111 1111 1111 1111",
        "4111111111111111", "-", "1234", "\u0130", "\u0131", "\u017f", "\u212a", "é", "x",
        "ſecret", "\u212aey", "prıvate_key", "to\u212aen",
    ]
    rng = random.Random(11)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _payload._mask_string(text) == every_pattern(text), repr(text)


def test_only_a_masking_session_stamps_the_content_key(make_session: MakeSession) -> None:
    # One more key on every span of a masking session, none on the others.
    assert "sessiontrace.content" not in make_session().span_attributes
    assert make_session(mask_content=True).span_attributes["sessiontrace.content"] == "masked"
