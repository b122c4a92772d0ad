"""Waiting on a condition instead of sleeping a fixed time.

A test that sleeps guesses how long the machine needs; on a shared CI machine the guess is
wrong both ways. These waits return as soon as the condition holds, so their bounds can be
generous (minutes where a busy machine may need them) at no cost when the machine is idle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: The default bound: long enough for a loaded 2-core machine, never reached when all is well.
TIMEOUT_S = 60.0


def wait_until(
    condition: Callable[[], T], *, timeout: float = TIMEOUT_S, what: str = "", every: float = 0.05
) -> T:
    """``condition()``'s first value that is neither None nor False (a frame counts as found),
    polled every ``every`` seconds; an AssertionError naming ``what`` if none came within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(every)


async def until(
    condition: Callable[[], object], *, timeout: float = TIMEOUT_S, what: str = ""
) -> None:
    """The event-loop form of ``wait_until``: other tasks run while it waits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        await asyncio.sleep(0.05)
