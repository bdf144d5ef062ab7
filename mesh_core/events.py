"""Frozen engine events and the ``subscribe()`` fan-out.

Each subscriber has its own bounded queue; a slow subscriber loses its oldest
events (counted in ``dropped``) rather than slowing the engine or growing
memory without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per event class, filled on first use


@dataclass(frozen=True)
class Event:
    at: float = field(default_factory=time.time, kw_only=True)
    # One per task transition or memory item: a log at level warning leaves these out.
    routine: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: event fields are flat values, and this runs once per event per printer.
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        data = {name: getattr(self, name) for name in names}
        data["event"] = self.kind
        return data


@dataclass(frozen=True)
class NodeJoined(Event):
    node_id: str
    name: str
    node_type: str
    incarnation: int


@dataclass(frozen=True)
class NodeStatusChanged(Event):
    node_id: str
    name: str
    old: str
    new: str
    incarnation: int


@dataclass(frozen=True)
class TaskUpdated(Event):
    routine: ClassVar[bool] = True
    task_id: str
    task_type: str
    status: str
    node_id: str | None = None
    node_name: str | None = None
    attempt: int = 0
    why: str = ""
    error: str | None = None


@dataclass(frozen=True)
class MemoryChanged(Event):
    routine: ClassVar[bool] = True
    memory_type: str
    key: str
    origin: str
    outcome: str  # applied | ignored | resolved | sibling | local
    strategy: str = ""


@dataclass(frozen=True)
class ConflictOpened(Event):
    conflict_id: str
    memory_type: str
    key: str
    nodes: tuple[str, ...]
    strategy: str


@dataclass(frozen=True)
class ConflictResolved(Event):
    conflict_id: str
    key: str
    choice: str


@dataclass(frozen=True)
class BackendStatus(Event):
    backend: str
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class Problem(Event):
    """Something was refused or went wrong without stopping the node (counted)."""

    counter: str
    detail: str


class EventBus:
    """Fan-out of events to any number of async subscribers."""

    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._quiet: set[asyncio.Queue[Event | None]] = set()  # subscribers that skip routine events
        self.dropped = 0

    def wants_routine(self) -> bool:
        """Whether any subscriber takes per-task and per-item events (else they need not be built at all)."""
        return len(self._quiet) < len(self._queues)

    def publish(self, event: Event) -> None:
        self.publish_many((event,))

    def publish_many(self, events: Sequence[Event]) -> None:
        """``publish`` each event in turn, in one pass per subscriber (a batch of applied writes makes thousands)."""
        for queue in tuple(self._queues):
            quiet = queue in self._quiet
            for event in events:
                if event.routine and quiet:
                    continue
                if queue.full():
                    queue.get_nowait()
                    self.dropped += 1
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        async for batch in self.subscribe_batches():
            for event in batch:
                yield event

    async def subscribe_batches(self, limit: int = 1000, *, routine: bool = True) -> AsyncIterator[list[Event]]:
        """Like ``subscribe``, but everything already queued comes at once (up to ``limit``):
        one wake-up per burst for a printer that writes many lines in one go. Without
        ``routine`` the per-task and per-item events are never queued for this subscriber."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        if not routine:
            self._quiet.add(queue)
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < limit and not queue.empty():
                    batch.append(queue.get_nowait())
                events = [e for e in batch if e is not None]
                if events:
                    yield events
                if len(events) < len(batch):
                    return
        finally:
            self._queues.discard(queue)
            self._quiet.discard(queue)

    def close(self) -> None:
        for queue in tuple(self._queues):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
