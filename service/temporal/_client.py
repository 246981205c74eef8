"""Connecting to Temporal at TEMPORAL_ADDRESS, with the pydantic data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from service.config import Settings

__all__ = ["TemporalError", "connect"]


class TemporalError(Exception):
    """A Temporal operation failed in a way the operator can fix; the message says how."""


async def connect(settings: Settings) -> Client:
    """A client of TEMPORAL_ADDRESS in TEMPORAL_NAMESPACE; TemporalError when unset or unreachable."""
    if settings.temporal_address is None:
        raise TemporalError(
            "TEMPORAL_ADDRESS is not set: schedules live in Temporal only when it names the "
            "Temporal frontend (host:port)"
        )
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            # Schedules carry their typed entry (service.schedules.Schedule) as the workflow's
            # argument; workflows answer the route's RunResponse.
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:
        raise TemporalError(
            f"cannot reach Temporal at TEMPORAL_ADDRESS={settings.temporal_address} "
            f"(namespace {settings.temporal_namespace!r}): {exc}"
        ) from None
