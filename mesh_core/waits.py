"""Bounded waits that never swallow a cancel.

On Python 3.11, ``asyncio.wait_for`` can return (or time out) in the same loop pass as a cancel of its caller and
drop that cancel: the caller goes on as if it had not been cancelled, and whoever cancelled it (a ``close``, a
caller's own timeout) waits for it in vain. ``asyncio.timeout`` delivers the cancel; these wrap it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set or ``timeout`` seconds passed; True when it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``awaitable``'s result, or TimeoutError after ``timeout`` seconds (``asyncio.wait_for`` without its lost
    cancels)."""
    async with asyncio.timeout(timeout):
        return await awaitable
