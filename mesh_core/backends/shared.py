"""What every shared-store medium has in common, written once.

Coalescers (concurrent calls of one kind run as one batch) and the reading of
stored task attempts. Backends build on these so each concrete medium stays small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from ..model import Attempt

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs concurrent calls of one kind as one batch: items in, one result per item out."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._flushing = False

    async def __call__(self, items: Sequence[T]) -> list[R]:
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(items), future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                flat = [item for items, _ in batch for item in items]
                try:
                    results = await self._run(flat)
                except BaseException as exc:  # hand the error to every waiter, keep flushing
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                start = 0
                for items, future in batch:
                    if not future.done():
                        future.set_result(results[start:start + len(items)])
                    start += len(items)
        finally:
            self._flushing = False


def attempts_from_rows(rows: Iterable[tuple[Any, ...]]) -> list[Attempt]:
    return [Attempt(attempt=r[0], node_id=r[1], node_name=r[2] or "", started_at=r[3],
                    finished_at=r[4], error=r[5]) for r in rows]
