"""Waiting in tests: poll a condition until it holds, failing after a generous deadline that
names what never happened (a deadline, never a speed: the machine is shared)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEADLINE = 30.0  # seconds


async def eventually(
    what: str, check: Callable[[], object], timeout: float = DEADLINE, interval: float = 0.02
) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
