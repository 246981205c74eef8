"""Waiting for a background thread in library tests, which run without devstack installed."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, *, message: str = "it") -> None:
    """Poll `predicate` every 10 ms; AssertionError naming `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.1f}s waiting for {message}"
        time.sleep(0.01)
