"""The built-in graphs: `builtin:chat` and `builtin:governance-review`."""

from __future__ import annotations

import json

from service.graphs.model import Graph, Node, RunState
from service.graphs.runtime import NodeRuntime
from service.graphs.tools import account_policy, message_stats
from service.llm import ChatMessage

__all__ = ["CHAT", "GOVERNANCE_REVIEW", "BUILTIN_GRAPHS"]


async def _respond(state: RunState, runtime: NodeRuntime) -> None:
    completion = await runtime.chat(state.input.messages, model=state.model, is_answer=True)
    state.answer = completion.content


async def _gather(state: RunState, runtime: NodeRuntime) -> None:
    conversation = [{"role": m.role, "content": m.content} for m in state.input.messages]
    state.notes["policy"] = await runtime.tool(
        "account_policy", account_policy, {"topic": "governance"}
    )
    state.notes["stats"] = await runtime.tool(
        "message_stats", message_stats, {"messages": conversation}
    )


async def _assess(state: RunState, runtime: NodeRuntime) -> None:
    instructions = ChatMessage(
        role="system",
        content=(
            "You review activity for governance issues. Policy and statistics: "
            + json.dumps({"policy": state.notes["policy"], "stats": state.notes["stats"]})
        ),
    )
    completion = await runtime.chat((instructions, *state.input.messages), model=state.model)
    state.notes["assessment"] = completion.content


async def _summarize(state: RunState, runtime: NodeRuntime) -> None:
    messages = (
        ChatMessage(role="system", content="Summarize this governance assessment in two lines."),
        ChatMessage(role="user", content=str(state.notes["assessment"])),
    )
    completion = await runtime.chat(messages, model=state.model, is_answer=True)
    state.answer = completion.content


CHAT = Graph(
    id="builtin:chat",
    description="One LLM call answering the conversation.",
    nodes=(Node("respond", _respond),),
)

GOVERNANCE_REVIEW = Graph(
    id="builtin:governance-review",
    description="Gathers the account policy and statistics (tools), assesses, then summarizes.",
    nodes=(Node("gather", _gather), Node("assess", _assess), Node("summarize", _summarize)),
    # It reads the whole account's policy: only the governance path, whose
    # execution grant names who may run it, starts it; chat users cannot.
    triggers=frozenset({"schedule"}),
)

BUILTIN_GRAPHS: tuple[Graph, ...] = (CHAT, GOVERNANCE_REVIEW)
