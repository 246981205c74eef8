"""Request and response bodies of the API (camelCase on the wire)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from service.graphs import RunInput
from service.llm import ChatMessage

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ChatRunIds",
    "MessageBody",
    "RunInputBody",
    "RunRequest",
    "RunResponse",
]

_PRINTABLE_ASCII = r"^[\x20-\x7e]+$"
_NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]+$"
_RUN_ID = r"^[A-Za-z0-9._:-]+$"
_MAX_MESSAGES = 200
_MAX_CONTENT_CHARS = 32_000


class _ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
        extra="forbid", frozen=True,
    )


class MessageBody(_ApiModel):
    """A chat message as sent by clients."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=_MAX_CONTENT_CHARS)


def _run_input(messages: list[MessageBody], model: str | None) -> RunInput:
    return RunInput(
        messages=tuple(ChatMessage(role=m.role, content=m.content) for m in messages),
        model=model,
    )


class ChatRequest(_ApiModel):
    """`POST /api/v1/ai/chat`; without `stateKey` a new conversation starts.

    With `stream: true` the answer comes as server-sent events.
    """

    graph_id: str = Field(default="builtin:chat", min_length=3, max_length=200)
    messages: list[MessageBody] = Field(min_length=1, max_length=_MAX_MESSAGES)
    state_key: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=_NO_CONTROL_CHARS
    )
    model: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PRINTABLE_ASCII)
    stream: bool = False

    def run_input(self) -> RunInput:
        """The graph's input."""
        return _run_input(self.messages, self.model)


class ChatRunIds(_ApiModel):
    """What identifies a chat run: in its answer, its stream's last event and its error body."""

    run_id: str
    trace_id: str | None
    session_id: str
    state_key: str


class ChatResponse(ChatRunIds):
    """The answer of a chat run."""

    output: MessageBody


class RunInputBody(_ApiModel):
    """The input of a governance run."""

    messages: list[MessageBody] = Field(min_length=1, max_length=_MAX_MESSAGES)
    model: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PRINTABLE_ASCII)


class RunRequest(_ApiModel):
    """`POST /api/internal/graphs/{graphId}/runs`."""

    execution_grant_id: str = Field(min_length=1, max_length=128, pattern=_PRINTABLE_ASCII)
    schedule_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=_PRINTABLE_ASCII
    )
    scheduled_for: AwareDatetime | None = None
    input: RunInputBody
    run_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=_RUN_ID)

    def run_input(self) -> RunInput:
        """The graph's input."""
        return _run_input(self.input.messages, self.input.model)


class RunResponse(_ApiModel):
    """The outcome of a governance run; `error` only when `ok` is false."""

    ok: bool
    run_id: str
    trace_id: str | None
    session_id: str
    error: str | None = None
