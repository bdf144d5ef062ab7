"""A stream's send queue (the wire's, both ways): a bounded queue of envelopes whose one writer wakes in the next
event-loop pass, merges what is queued into one write, and lets ``CORK_PASSES`` passes go by first so that what one
burst of work posts goes in one write; and one outgoing call's side of its writes (``StreamWrites``)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

MERGE_MAX = 256  # queued envelopes merged into one write at most
# Loop passes a woken writer lets go by before it takes what is queued: what one burst of work posts (a batch of
# results, their copies, their acks) goes in one write. Each write costs a send system call that, on a small
# machine, is as dear as the work that made it: writing at once halved the tasks/s at 64 in flight; two passes
# gave the most there and at 1,024 (bench tasks --backend grpc), and cost idle latency nothing measurable.
CORK_PASSES = 2


async def corked() -> None:
    """Let ``CORK_PASSES`` loop passes go by (a woken writer, before it takes what is queued)."""
    for _ in range(CORK_PASSES):
        await asyncio.sleep(0)


class StreamWrites:
    """One outgoing call's side of its writes: whether it ended, the queue it waits on, what it handed over."""

    def __init__(self) -> None:
        self.ended = False
        self.queue: SendQueue | None = None  # while the writes wait for something to send
        self.writing: Any = None

    def end(self) -> list[Any]:
        """Ends the writes and returns what was handed over and not written (nothing else leaves the queue)."""
        self.ended = True
        if self.queue is not None:
            self.queue.wake(False)
        unwritten = [] if self.writing is None else [self.writing]
        self.writing = None
        return unwritten


class SendQueue:
    """A bounded queue of envelopes for one stream, whose one reader wakes in the next event-loop pass.

    ``put`` resolves the reader's own future (no task and ``asyncio.wait`` per wait, as ``asyncio.Queue.get``
    needed, which also took three passes, by accident): how long the writer then waits for more is ``CORK_PASSES``,
    on purpose."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[bool] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, envelope: Any) -> bool:
        """Queue ``envelope``; False when the queue is full."""
        if len(self._items) >= self.limit:
            return False
        self._items.append(envelope)
        self.wake()
        return True

    def take(self, max_message_bytes: int) -> Any:
        """The oldest envelope with what else is queued merged into it (repeated parts concatenate), up to
        ``MERGE_MAX`` envelopes and about half of ``max_message_bytes``: one write for a burst, never one too
        large to send."""
        items = self._items
        envelope = items.popleft()
        budget = max_message_bytes // 2
        size = envelope.ByteSize()
        merged = 1
        while merged < MERGE_MAX and items:
            extra = items[0].ByteSize()
            if size + extra > budget:
                break
            envelope.MergeFrom(items.popleft())
            size += extra
            merged += 1
        return envelope

    def clear(self) -> None:
        self._items.clear()

    def wake(self, woken: bool = True) -> None:
        """Resume the reader waiting in ``wait`` (with ``woken``), if one is."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(woken)

    async def wait(self, timeout: float | None = None) -> bool:
        """Until something is queued or ``wake`` is called (True, or what ``wake`` was given); False after
        ``timeout`` seconds with nothing queued."""
        if self._items:
            return True
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire, waiter) if timeout is not None else None
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(bool(self._items))
