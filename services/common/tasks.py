"""Ending a service's background tasks (refresh loops, timers, drains) on stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# A cancellation can be swallowed: on Python 3.11 `asyncio.wait_for` returns the result when its
# inner future completes as it is cancelled, and nats-py turns a CancelledError into an error a
# retry loop catches. So the cancel is repeated at this period until the task has ended.
CANCEL_REPEAT_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[Any] | None, repeat_seconds: float = CANCEL_REPEAT_SECONDS) -> None:
    """Cancel `task` (if any) and wait until it has ended, so nothing of it runs after stop returns;
    its CancelledError is the expected end, not an error."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=repeat_seconds)
    with contextlib.suppress(asyncio.CancelledError):
        await task
