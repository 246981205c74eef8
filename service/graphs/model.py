"""What a graph is: named nodes run in order over a shared run state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.llm import ChatMessage
from service.caller import Trigger

if TYPE_CHECKING:
    from service.graphs.runtime import NodeRuntime

__all__ = ["ALL_TRIGGERS", "Graph", "Node", "NodeFunction", "RunInput", "RunState"]

# The paths a run can come from: "user" (the chat route), "schedule" (the governance route).
ALL_TRIGGERS: frozenset[Trigger] = frozenset({"user", "schedule"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInput:
    """What a run starts from: the conversation so far and an optional model override."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None


@dataclass(slots=True, kw_only=True)
class RunState:
    """Mutable state handed from node to node; `answer` is the run's output."""

    input: RunInput
    model: str
    notes: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None


NodeFunction = Callable[["RunState", "NodeRuntime"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Node:
    """One step of a graph; its work happens inside a span named after it."""

    name: str
    run: NodeFunction


@dataclass(frozen=True, slots=True, kw_only=True)
class Graph:
    """A graph of nodes, addressed as `provider:name`.

    `triggers` are the paths that may run it: "user" (chat, any signed-in
    user) and "schedule" (the governance route, with an execution grant).
    """

    id: str
    description: str
    nodes: tuple[Node, ...]
    triggers: frozenset[Trigger] = ALL_TRIGGERS

    def __post_init__(self) -> None:
        provider, _, name = self.id.partition(":")
        if not provider or not name or ":" in name:
            raise ValueError(f"graph id must be 'provider:name', got {self.id!r}")
        if not self.nodes:
            raise ValueError(f"graph {self.id!r} has no nodes")
        if not self.triggers or not self.triggers <= ALL_TRIGGERS:
            raise ValueError(
                f"graph {self.id!r}: triggers must be a non-empty subset of "
                f"{sorted(ALL_TRIGGERS)}, got {sorted(self.triggers)}"
            )

    def runs_on(self, trigger: Trigger) -> bool:
        """Whether a run coming from `trigger`'s path may run this graph."""
        return trigger in self.triggers
