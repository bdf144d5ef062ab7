"""master_slave memory sync: one primary orders every write; the others hand theirs to it.

The primary is the node named by ``memory_sync.primary`` while it is alive,
otherwise whoever holds the medium's ``memory-primary`` lease (taken when it
lapses). A write is forwarded to it as an internal task, so it survives a
failover like any task does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ..backends.contracts import MembershipMedium
from ..errors import SyncTimeout
from ..handlers import TaskContext, make_spec
from ..model import NodeStatus, Task
from .context import NodeContext
from .membership import MembershipService
from .memory import MemoryService
from .results import Results
from .sync import MemorySync
from .tasks import TaskService

FORWARD_WRITE = "_memory_write"  # the internal task type of a write handed to the primary
PRIMARY_LEASE = "memory-primary"
FORWARD_RETRIES = 20  # a forwarded write survives this many failed attempts (failovers) before it fails


class Primary:
    """Elects and finds the memory primary; forwards writes to it."""

    def __init__(self, ctx: NodeContext, members: MembershipService, tasks: TaskService, results: Results,
                 memory: MemoryService, sync: MemorySync) -> None:
        self.ctx = ctx
        self.members = members
        self.tasks = tasks
        self.results = results
        self.memory = memory
        self.sync = sync
        self.node_id: str | None = None  # the primary as last elected here

    @property
    def medium(self) -> MembershipMedium:
        return self.ctx.backend

    def install(self) -> None:
        """Route writes through the primary; a worker also serves forwarded writes (even planning_only)."""
        self.memory.forwarder = self.forward
        if self.ctx.is_worker:
            self.ctx.handlers.add(make_spec(FORWARD_WRITE, self._apply_forwarded_write))

    def _alive(self, node_id: str | None) -> bool:
        return bool(node_id) and (node_id == self.ctx.node_id or self.members.status_of(node_id or "")
                                  is NodeStatus.ACTIVE)

    async def elect(self) -> None:
        """The configured primary if it is alive, else whoever holds the lease (taken when it lapses)."""
        named = self.ctx.config.memory_sync.primary
        if named:
            if named == self.ctx.name:
                self.node_id = self.ctx.node_id
            else:
                self.node_id = next((m.info.node_id for m in self.members.members()
                                     if m.info.name == named and m.status is NodeStatus.ACTIVE), None)
            return
        self.node_id = await self.medium.hold_lease(PRIMARY_LEASE, self.ctx.node_id,
                                                    self.ctx.timings.primary_lease_s)

    async def current(self) -> str:
        """The primary, electing one if needed; raises SyncTimeout when none is alive through a failover."""
        deadline = time.monotonic() + self.ctx.timings.primary_wait_s
        while True:
            if self._alive(self.node_id):
                assert self.node_id is not None
                return self.node_id
            if time.monotonic() > deadline:
                raise SyncTimeout("no memory primary is alive (master_slave)", missing=["primary"])
            await self.elect()
            if not self._alive(self.node_id):
                await asyncio.sleep(min(0.2, self.ctx.config.heartbeat_interval_seconds))

    async def forward(self, memory_type: str, value: Any, priority: int, key: str, tombstone: bool) -> bool:
        """Hand the write to the primary unless this node is it; True when it went there and was applied.

        A client hands it to any worker, which forwards it in turn."""
        primary = await self.current() if self.ctx.is_worker else None
        if primary == self.ctx.node_id:
            return False
        exclude = set() if primary is None else {m.info.node_id for m in self.members.members()} - {primary}
        payload = {"memory_type": memory_type, "value": value, "priority": priority, "key": key,
                   "tombstone": tombstone}
        task = Task(task_id=uuid.uuid4().hex, task_type=FORWARD_WRITE, payload=payload,
                    submitter_id=self.ctx.node_id, submitted_at=time.time(), max_retries=FORWARD_RETRIES, context={})
        await self.tasks.enqueue_routed(task, exclude)
        await self.results.wait_for(task.task_id, timeout=self.ctx.timings.forwarded_write_wait_s)
        if self.ctx.is_worker:
            await self.sync.sync_now()  # read your own write
        return True

    async def _apply_forwarded_write(self, payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        key = await self.memory.write(payload["memory_type"], payload["value"], payload.get("priority", 5),
                                      key=payload["key"], tombstone=bool(payload.get("tombstone")))
        return {"key": key, "primary": self.node_id}
