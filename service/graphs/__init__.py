"""Graphs (`provider:name`), their registry and the executor that runs them."""

from service.graphs.executor import GraphExecutor, GraphRunError, RunOutcome, current_trace_id
from service.graphs.model import Graph, Node, RunInput, RunState
from service.graphs.registry import GraphRegistry, default_registry
from service.graphs.runtime import NodeRuntime

__all__ = [
    "Graph",
    "GraphExecutor",
    "GraphRegistry",
    "GraphRunError",
    "Node",
    "NodeRuntime",
    "RunInput",
    "RunOutcome",
    "RunState",
    "default_registry",
    "current_trace_id",
]
