"""Poll a condition until it holds or a deadline passes: async for in-process nodes, sync for processes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (sync, or returning an awaitable) until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


def until(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> tuple[Any, float]:
    """Poll ``check`` until truthy, blocking; return its value and the seconds it took."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        if last := check():
            return last, time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout} s (last: {last!r})")
