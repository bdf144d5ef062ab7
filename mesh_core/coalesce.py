"""``Coalescer``: concurrent calls of one kind run as one batch (a medium's writes, a node's local memory writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs concurrent calls of one kind as one batch: items in, one result per item out.

    By default one batch runs at a time, and the calls made while it runs make the next (a write to one store).
    With ``inline``, a call made while none runs, after a batch of one call, is a batch of its own run in the
    caller's task (a lone caller, one write after another: no task to start and no loop pass to wait for).
    With ``overlap``, the calls made in one event-loop pass make a batch that starts at the end of that pass,
    whether or not earlier batches are done (a batch that waits on the network for a while: the next ones do not
    queue behind it)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], *, overlap: bool = False,
                 inline: bool = False) -> None:
        self._run = run
        self._overlap = overlap
        self._inline = inline
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._flushing = False
        self._last_size = 1  # calls in the last batch run through ``_flush``

    async def __call__(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        if self._inline and not self._flushing and self._last_size <= 1:
            # Nothing runs and the last batch held one call: this call's items are the batch, run here. Calls made
            # meanwhile make the next batch; once batches grow, calls join them again (always inline, the first
            # call of each burst went alone and split it).
            self._flushing = True
            try:
                return await self._run(list(items))
            finally:
                if self._pending:
                    loop.create_task(self._flush())
                else:
                    self._flushing = False
        future: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((list(items), future))
        if not self._flushing:
            self._flushing = True
            if self._overlap:
                loop.call_soon(self._start_pass)
            else:
                loop.create_task(self._flush())
        return await future

    def _start_pass(self) -> None:
        batch, self._pending = self._pending, []
        self._flushing = False
        asyncio.get_running_loop().create_task(self._run_batch(batch))

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run_batch(batch)
        finally:
            self._flushing = False

    async def _run_batch(self, batch: list[tuple[list[T], asyncio.Future[list[R]]]]) -> None:
        flat = [item for items, _ in batch for item in items]
        self._last_size = len(batch)
        try:
            results = await self._run(flat)
        except BaseException as exc:  # hand the error to every waiter (the next batch runs all the same)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[start:start + len(items)])
            start += len(items)
