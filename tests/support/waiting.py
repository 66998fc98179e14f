"""Waiting for a condition, never for a duration: the one polling helper of every test layer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None],
    timeout: float = 30.0,
    what: str = "",
    interval: float = 0.2,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy and return that.

    The timeout only bounds a wait that would otherwise hang: it is never what
    a test waits for. On timeout the failure names `what`, the last value, and
    what `diagnose` says (logs, pod states).
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    details = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last value {last!r}{details}")
