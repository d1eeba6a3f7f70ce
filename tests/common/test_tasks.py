"""cancel_and_wait ends a task even when the task swallows a cancellation (as nats-py's
next_msg and Python 3.11's wait_for can), so a service's stop never hangs on it."""

from __future__ import annotations

import asyncio

from services.common.tasks import cancel_and_wait


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1  # what a retry loop does with a cancellation turned into an error

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, repeat_seconds=0.01), 5)
    assert task.cancelled() and swallowed == 2


async def test_an_ended_task_or_none_is_left_as_it_is() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait(task)
    await cancel_and_wait(None)
    assert task.result() == 1
