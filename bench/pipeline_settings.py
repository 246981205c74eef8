"""The collector settings a pipeline benchmark ran with, read from otel-collector.yaml itself."""

from __future__ import annotations

from typing import Any

import yaml
from devstack.delivery import LANGFUSE_EXPORTER
from devstack.stack import COLLECTOR_CONFIG

__all__ = ["collector_settings"]


def _flat(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in _flat(inner, f"{prefix}{key}.")]
    return [f"`{prefix.rstrip('.')}: {value}`"]


def collector_settings() -> str:
    """The Langfuse exporter's sending queue and the memory_limiter, as the config spells them."""
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    queue = config["exporters"][LANGFUSE_EXPORTER]["sending_queue"]
    limiter = config["processors"]["memory_limiter"]
    return (
        f"sending_queue {', '.join(_flat(queue))}; memory_limiter {', '.join(_flat(limiter))}"
    )
