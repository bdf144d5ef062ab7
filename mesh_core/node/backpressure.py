"""Writer backpressure (``memory_sync.max_lag_items``): a node's memory writes wait while the slowest active
replica has not applied more than that many of its earlier writes, instead of lag that grows without bound.

The writer keeps the log position of each of its own writes; the replicas already post how far they applied
the log (their acks, on every medium). When more than ``max_lag_items`` items may be unapplied, a write reads the
acks (at most every ``LAG_POLL_SECONDS``, however many writes wait: one read serves all that waited for it) and
drops what the slowest active worker has applied; past ``max_lag_wait_seconds`` it is refused (``ReplicasBehind``,
naming the replicas). Past half the limit one write looks ahead of time (the others go on), so writers meet the
limit together only when replicas are behind, not because nobody looked. A replica that is not active (suspect,
dead, gone) holds no one back. The same state is the sync lag the metrics show (``lag``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import Any

from ..backends.contracts import MemoryLog
from ..errors import BackendError, ReplicasBehind
from ..model import NodeRole, NodeStatus
from .context import NodeContext
from .membership import MembershipService

LAG_POLL_SECONDS = 0.02  # how often a held-back write looks at the replicas' acks again


@dataclasses.dataclass(frozen=True)
class ReplicaLag:
    """This node's writes the slowest active replica has not applied yet (``WriterBackpressure.lag``)."""

    items: int
    oldest_seconds: float  # how long ago the oldest of them was written (0 when none waits)
    behind: tuple[str, ...]  # the names of the replicas that have not applied it


class WriterBackpressure:
    """This node's writes not yet known applied by every active replica, and the wait they impose."""

    def __init__(self, ctx: NodeContext, members: MembershipService) -> None:
        self.ctx = ctx
        self.members = members
        # this node's writes in the medium, oldest first: (position, items, monotonic time written)
        self._unapplied: collections.deque[tuple[Any, int, float]] = collections.deque()
        self._unapplied_items = 0
        self._behind: list[str] = []  # the replicas that had not applied the oldest of them, when last looked
        self._looked_at = -LAG_POLL_SECONDS
        self._looks = 0  # reads of the acks so far
        self._lock = asyncio.Lock()

    def written(self, position: Any, items: int) -> None:
        """A write of ``items`` items the medium stored at ``position`` (None: queued here, not in the medium)."""
        if position is not None and self.ctx.config.memory_sync.max_lag_items:
            self._unapplied.append((position, items, time.monotonic()))
            self._unapplied_items += items

    async def hold_back(self) -> None:
        """Before a write: wait while the slowest active replica has not applied more than ``max_lag_items`` of
        this node's writes, at most ``max_lag_wait_seconds``, then refuse it (``ReplicasBehind``)."""
        cfg = self.ctx.config.memory_sync
        if not cfg.max_lag_items:
            return
        if self._unapplied_items <= cfg.max_lag_items:
            if self._unapplied_items > cfg.max_lag_items // 2 and not self._lock.locked():
                try:
                    await self._look()  # this write pays a read now and then; the ones meanwhile do not wait for it
                except BackendError:
                    pass  # a look ahead of time only: the write meets the medium's trouble itself (outbox or error)
            return
        counters = self.ctx.counters
        deadline = time.monotonic() + cfg.max_lag_wait_seconds
        held = False
        while True:
            await self._look()
            if self._unapplied_items <= cfg.max_lag_items:
                return
            if not held:
                held = True
                counters["memory_writes_held_back"] += 1
            if time.monotonic() >= deadline:
                counters["memory_writes_held_too_long"] += 1
                names = ", ".join(self._behind) or "?"
                raise ReplicasBehind(f"write not made: replicas {names} are more than {cfg.max_lag_items} items "
                                     f"behind this node's writes after {cfg.max_lag_wait_seconds:g} s",
                                     behind=list(self._behind))
            await asyncio.sleep(LAG_POLL_SECONDS)
            if self._unapplied_items <= cfg.max_lag_items:
                return  # another write's look, while this one slept, released it: no read of its own

    async def lag(self) -> ReplicaLag | None:
        """How far the slowest active replica is behind this node's own writes: the items not applied yet, the age
        of the oldest of them, the replicas behind; None when not followed (``max_lag_items`` 0)."""
        if not self.ctx.config.memory_sync.max_lag_items:
            return None
        await self._look()
        age = time.monotonic() - self._unapplied[0][2] if self._unapplied else 0.0
        return ReplicaLag(self._unapplied_items, age, tuple(self._behind))

    async def _look(self) -> None:
        """Drop the writes every active replica has applied (one look at the acks at a time, at most every
        LAG_POLL_SECONDS, however many writes wait)."""
        looks = self._looks
        async with self._lock:
            if self._looks != looks or time.monotonic() - self._looked_at < LAG_POLL_SECONDS:
                return  # looked while this one waited for the lock: reading again would only read the same
            log: MemoryLog = self.ctx.backend
            acks = await log.memory_acks()
            self._looked_at = time.monotonic()
            self._looks += 1
            replicas = {m.info.node_id: m.info.name for m in self.members.members()
                        if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER
                        and m.info.node_id != self.ctx.node_id}
            reached = log.cursor_reached
            slowest = [node_id for node_id in replicas if acks.get(node_id) is None]
            low: Any = None
            for node_id in replicas:
                cursor = acks.get(node_id)
                if cursor is not None and (low is None or not reached(cursor, low)):
                    low = cursor
            # positions arrive nearly in order: drop from the oldest while the slowest ack covers them
            while self._unapplied and not slowest and (low is None or reached(low, self._unapplied[0][0])):
                self._unapplied_items -= self._unapplied.popleft()[1]
            oldest = self._unapplied[0][0] if self._unapplied else None
            self._behind = sorted(name for node_id, name in replicas.items()
                                  if oldest is not None and not reached(acks.get(node_id), oldest))
