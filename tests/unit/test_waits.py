"""``mesh_core.waits``: bounded waits that answer, time out, and never lose a cancel that comes with the answer
(``asyncio.wait_for`` on 3.11 returns the answer and drops such a cancel)."""

from __future__ import annotations

import asyncio

import pytest

from mesh_core.waits import wait_event, within


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # already set


async def test_a_cancel_that_comes_with_the_event_reaches_the_waiter() -> None:
    event = asyncio.Event()
    waiter = asyncio.ensure_future(wait_event(event, 5))
    await asyncio.sleep(0)  # it waits
    event.set()
    waiter.cancel()  # in the same loop pass
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_within_answers_or_times_out_and_keeps_a_cancel() -> None:
    assert await within(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(5), 0.01)
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(within(answer, 5))
    await asyncio.sleep(0)
    answer.set_result("late")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
