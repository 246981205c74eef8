"""What run spans record: payload attributes by kind and cap, outcomes, SSE framing, prices."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from service.config import ModelPrice
from service.graphs.outcome import error_type, recording_outcome
from service.graphs.payloads import PayloadRecorder
from service.llm import ChatMessage, Completion, LLMError
from service.streaming import format_event
from sessiontrace.attributes import (
    GEN_AI_INPUT_MESSAGES,
    LANGFUSE_OBSERVATION_INPUT,
    LANGFUSE_OBSERVATION_LEVEL,
)

READABLE = PayloadRecorder(mask_content=False)
MASKED = PayloadRecorder(mask_content=True)


def test_the_run_input_is_the_last_user_message_even_when_others_follow_it() -> None:
    messages = (ChatMessage("user", "first"), ChatMessage("user", "last"),
                ChatMessage("assistant", "draft"))

    encoded = READABLE.run_input(messages)

    assert json.loads(encoded) == {"role": "user", "content": "last"}


@pytest.mark.parametrize(
    ("kilobytes", "summarized"),
    [(("run", 49), False), (("run", 51), True), (("llm", 99), False), (("llm", 101), True),
     (("tool", 9), False), (("tool", 11), True)],
    ids=["run-under", "run-over", "llm-under", "llm-over", "tool-under", "tool-over"],
)
def test_each_kind_of_payload_has_its_own_cap(
    kilobytes: tuple[str, int], summarized: bool
) -> None:
    kind, size = kilobytes
    text = "x" * (size * 1000)
    builders: dict[str, Callable[[], AttributeValue]] = {
        "run": lambda: READABLE.run_input((ChatMessage("user", text),)),
        "llm": lambda: READABLE.llm_input((ChatMessage("user", text),))[GEN_AI_INPUT_MESSAGES],
        "tool": lambda: READABLE.tool_input({"q": text})[LANGFUSE_OBSERVATION_INPUT],
    }
    attribute = builders[kind]()

    assert ('"omitted":"over_cap"' in str(attribute)) is summarized


def test_a_masked_recorder_records_only_size_and_hash_for_every_kind() -> None:
    completion = Completion(content="secret answer", model="m", input_tokens=1, output_tokens=1)
    message = (ChatMessage("user", "secret question"),)
    every = [
        ("run input", MASKED.run_input(message)), ("run output", MASKED.run_output("secret")),
        *MASKED.llm_input(message).items(), *MASKED.llm_output(completion).items(),
        *MASKED.tool_input({"q": "secret"}).items(), *MASKED.tool_output({"a": "x"}).items(),
    ]

    assert len(every) == 6
    for key, value in every:
        assert set(json.loads(str(value))) == {"omitted", "bytes", "sha256"}, key
        assert "secret" not in str(value)


def test_an_error_is_typed_by_its_qualified_class_name() -> None:
    assert error_type(KeyError("k")) == "KeyError"
    assert error_type(LLMError("x")) == "service.llm.base.LLMError"


def test_a_span_left_by_an_exception_is_an_error_and_by_a_cancellation_only_a_warning(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("t")
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("failed", record_exception=False,
                                          set_status_on_exception=False) as span:
            with recording_outcome(span, mask_content=False):
                raise ValueError("boom for jane@example.com")
    with pytest.raises(KeyboardInterrupt):
        with tracer.start_as_current_span("aborted", record_exception=False,
                                          set_status_on_exception=False) as span:
            with recording_outcome(span, mask_content=False):
                raise KeyboardInterrupt

    failed, aborted = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "ValueError"
    assert (failed.attributes or {})[LANGFUSE_OBSERVATION_LEVEL] == "ERROR"
    (event,) = failed.events
    assert (event.attributes or {})["exception.message"] == "boom for [EMAIL]"
    assert "jane@example.com" not in str((event.attributes or {})["exception.stacktrace"])
    assert aborted.status.status_code is StatusCode.UNSET
    assert (aborted.attributes or {})[LANGFUSE_OBSERVATION_LEVEL] == "WARNING"
    assert not aborted.events


def test_a_server_sent_event_keeps_its_json_on_one_data_line() -> None:
    assert format_event("chunk", {"content": "two\nlines"}) == (
        b'event: chunk\ndata: {"content":"two\\nlines"}\n\n'
    )


def test_a_price_is_per_thousand_tokens_for_input_and_output_separately() -> None:
    price = ModelPrice(input_per_1k=0.001, output_per_1k=0.002)

    assert price.cost(input_tokens=1500, output_tokens=500) == pytest.approx(0.0025)
