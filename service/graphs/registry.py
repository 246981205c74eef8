"""Graphs by id (`provider:name`)."""

from __future__ import annotations

from collections.abc import Iterable

from service.graphs.builtin import BUILTIN_GRAPHS
from service.graphs.model import Graph

__all__ = ["GraphRegistry", "default_registry"]


class GraphRegistry:
    """An immutable lookup of graphs by id."""

    def __init__(self, graphs: Iterable[Graph]) -> None:
        self._graphs: dict[str, Graph] = {}
        for graph in graphs:
            if graph.id in self._graphs:
                raise ValueError(f"graph {graph.id!r} is registered twice")
            self._graphs[graph.id] = graph

    def get(self, graph_id: str) -> Graph | None:
        """The graph with this id, or None."""
        return self._graphs.get(graph_id)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every registered graph id."""
        return tuple(self._graphs)


def default_registry() -> GraphRegistry:
    """The registry of the service: the built-in graphs."""
    return GraphRegistry(BUILTIN_GRAPHS)
