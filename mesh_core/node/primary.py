"""master_slave memory sync: one primary orders every write; the others hand theirs to it.

The primary is whoever holds the medium's ``memory-primary`` lease. One node
is preferred: the one named by ``memory_sync.primary``, or when none is named
the active coordination_hub with the lowest id (``membership.preferred_hub``;
with no hub active, nobody is preferred and every node contends). The
preference is not a single point of failure: the preferred node always
contends for the lease; the others contend only while it is not active, so a
standby (the next hub first, since it becomes the preferred one) takes over
when it dies, and a standby that sees it active again stops renewing and acts
as primary no longer once its own lease would have lapsed, after which the
preferred node takes the lease (never two primaries at once). A write is forwarded to the primary as an internal
task, so it survives a failover like any task does; a forwarded write that
fails is cancelled, so it is never applied behind its caller's back: the
primary commits to a write before applying it (``TaskContext.commit``), and a
cancel that comes later leaves it to end succeeded, which its caller is told.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from ..backends.contracts import MembershipMedium
from ..errors import MeshError, SyncTimeout, TaskFailed, TaskNotFound, TaskTimeout
from ..handlers import TaskContext, make_spec
from ..membership import preferred_hub
from ..model import NodeInfo, NodeStatus, NodeType, Task, TaskStatus, new_task_id
from .context import NodeContext
from .membership import MembershipService
from .memory import MemoryService
from .results import Results
from .sync import MemorySync
from .tasks import TaskService

FORWARD_WRITE = "_memory_write"  # the internal task type of a write handed to the primary
PRIMARY_LEASE = "memory-primary"
FORWARD_RETRIES = 20  # a forwarded write survives this many failed attempts (failovers) before it fails
# Forwards one write takes at most: a client's goes to any worker, which hands it to the primary. Two nodes that
# each hold the other primary (a moment of an election) would otherwise hand it back and forth without end, a new
# task per hop; past this the hop fails, and the task's retries find the primary once the election settles.
FORWARD_HOPS_MAX = 2
# A withdrawn write's node confirms the cancel (its final state) within this many task leases: a live one at once,
# a dead one once its lease lapses and a sweeper ends the task.
WITHDRAW_LEASES = 2
_FORWARDED = contextvars.ContextVar("forwarded_hops", default=0)  # hops behind the forwarded write being applied


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
        self._held_until = 0.0  # monotonic time until which this node's own lease surely holds

    @property
    def medium(self) -> MembershipMedium:
        return self.ctx.backend

    def install(self) -> None:
        """Route writes through the primary; a worker also serves forwarded writes (even planning_only)."""
        self.memory.forwarder = self.forward
        if self.ctx.is_worker:
            self.ctx.handlers.add(make_spec(FORWARD_WRITE, self._apply_forwarded_write))

    def _alive(self, node_id: str | None) -> bool:
        if node_id == self.ctx.node_id:
            return time.monotonic() < self._held_until  # our own lease, judged without asking the medium
        return bool(node_id) and self.members.status_of(node_id or "") is NodeStatus.ACTIVE

    def _preferred(self) -> str | None:
        """The preferred primary's node id while it is active (this node's own id when it is the one): the
        configured one, else the lowest-id active coordination_hub; None when there is neither."""
        me, named = self.ctx.node_id, self.ctx.config.memory_sync.primary
        if named:
            if named == self.ctx.name:
                return me
            return next((m.info.node_id for m in self.members.members()
                         if m.info.name == named and m.status is NodeStatus.ACTIVE), None)
        active = [m.info for m in self.members.members() if m.status is NodeStatus.ACTIVE and m.info.node_id != me]
        if self.ctx.is_worker and self.ctx.enabled and self.ctx.config.node_type == NodeType.COORDINATION_HUB:
            active.append(NodeInfo(node_id=me, name=self.ctx.name, node_type=NodeType.COORDINATION_HUB))
        return preferred_hub(active)

    async def elect(self) -> None:
        """Take or renew the lease, unless the configured primary is active and this node is not it."""
        me, preferred = self.ctx.node_id, self._preferred()
        if preferred is not None and preferred != me:
            # Hand the role back: stop renewing; our lease lapses, then the preferred node takes it.
            self.node_id = me if self._alive(me) else preferred
            return
        asked = time.monotonic()
        ttl = self.ctx.timings.primary_lease_s
        self.node_id = await self.medium.hold_lease(PRIMARY_LEASE, me, ttl)
        # Measured from before the call, so we stop acting as primary before the medium frees the lease.
        self._held_until = asked + ttl if self.node_id == me else 0.0

    async def current(self) -> str:
        """The primary, electing one if needed; raises SyncTimeout when none is alive through a failover."""
        deadline = time.monotonic() + self.ctx.timings.primary_wait_s
        if self.node_id != self.ctx.node_id and self._preferred() == self.ctx.node_id:
            await self.elect()  # the preferred node takes the role back as soon as the standby's lease is free
        while True:
            if self._alive(self.node_id):
                assert self.node_id is not None
                return self.node_id
            if time.monotonic() > deadline:
                raise SyncTimeout("no memory primary is alive (master_slave)", missing=["primary"],
                                  hint="the write was not applied anywhere; retry it")
            await self.elect()
            if not self._alive(self.node_id):
                await asyncio.sleep(min(0.2, self.ctx.config.heartbeat_interval_seconds))

    async def forward(self, memory_type: str, value: Any, priority: int, key: str, tombstone: bool) -> bool:
        """Hand the write to the primary unless this node is it; True when it went there and was applied.

        A client hands it to any worker, which forwards it in turn. A forwarded write that does not
        succeed in time is cancelled, so a failed write is never applied later."""
        primary = await self.current() if self.ctx.is_worker else None
        if primary == self.ctx.node_id:
            return False
        hops = _FORWARDED.get() + 1
        if hops > FORWARD_HOPS_MAX:
            why = (f"write to {key!r} came here through {hops - 1} forwards, and this node holds "
                   f"{(primary or '?')[:12]} the memory primary: the nodes disagree on it (an election under way), "
                   "so it is not handed on again")
            self.ctx.problem("memory_forwards_refused", why)
            raise SyncTimeout(why, missing=["primary"], hint="its task is retried as the election settles")
        if primary is not None:
            await self._until_it_serves(primary)
        exclude = set() if primary is None else {m.info.node_id for m in self.members.members()} - {primary}
        payload = {"memory_type": memory_type, "value": value, "priority": priority, "key": key,
                   "tombstone": tombstone, "hops": hops}
        task = Task(task_id=new_task_id(), task_type=FORWARD_WRITE, payload=payload,
                    submitter_id=self.ctx.node_id, submitted_at=time.time(), max_retries=FORWARD_RETRIES, context={})
        await self.tasks.enqueue_routed(task, exclude, awaited=True)
        try:
            await self.results.wait_for(task.task_id, timeout=self.ctx.timings.forwarded_write_wait_s)
        except (TaskTimeout, TaskFailed) as exc:
            await self._withdraw(task.task_id, key, exc)
        if self.ctx.is_worker:
            await self.sync.sync_now()  # read your own write
        return True

    async def _until_it_serves(self, primary: str) -> None:
        """Wait, up to ``primary_wait_s``, until this node's view has the primary serving forwarded writes. A node
        that just started is active with the record it joined with, which lists no task types until its first
        heartbeat as a worker: a primary elected in that second made every forwarded write fail at once, as if
        every node were full. Past the wait, routing refuses it as before."""
        deadline = time.monotonic() + self.ctx.timings.primary_wait_s
        while not any(n.node_id == primary and FORWARD_WRITE in n.task_types for n in self.members.workers()):
            if time.monotonic() > deadline or not self._alive(primary):
                return
            await asyncio.sleep(min(0.05, self.ctx.config.heartbeat_interval_seconds))
            await self.members.refresh()

    async def _withdraw(self, task_id: str, key: str, failure: MeshError) -> None:
        """Cancel a forwarded write that failed or took too long; return when it succeeded after all.

        The answer is the task's final state: a write whose handler passed its point of no return when the
        cancel came is applied and ends succeeded, and the caller is told so. Raises SyncTimeout saying it was
        withdrawn when the task ended without applying it, or when its node did not confirm the cancel within
        two leases (a node stopped or cut off), that it is withdrawn unless that node had begun to apply it."""
        deadline = time.monotonic() + WITHDRAW_LEASES * self.ctx.timings.task_lease_s
        while True:  # a cancel the owner did not receive (a call that failed under load) is asked again
            try:
                await self.tasks.cancel(task_id)
                break
            except TaskNotFound:
                break  # not known anywhere reachable now: its final state, if any comes, decides below
            except MeshError:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(0.2, self.ctx.config.heartbeat_interval_seconds))
        try:
            task = await self.results.wait_task(task_id, timeout=max(0.1, deadline - time.monotonic()))
        except MeshError as exc:
            self.ctx.problem("memory_withdrawals_unconfirmed", f"write to {key!r}: {exc.message}")
            raise SyncTimeout(f"write to {key!r} was not applied by a memory primary in time ({failure.message}) "
                              "and was withdrawn, but the node holding it has not confirmed it stopped: it is "
                              "not applied unless that node had already begun to apply it", missing=["primary"],
                              hint=f"read {key!r} before writing it again") from None
        if task.status is TaskStatus.SUCCEEDED:
            return
        raise SyncTimeout(f"write to {key!r} was not applied by a memory primary: {failure.message}",
                          missing=["primary"], hint="it was withdrawn and will not be applied; retry it")

    async def _apply_forwarded_write(self, payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        hops = payload.get("hops", 1)  # a node of before the count sent none: one hop
        if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= FORWARD_HOPS_MAX:
            hops = FORWARD_HOPS_MAX  # a count that makes no sense: handed on no further
        if not ctx.commit():  # withdrawn by its caller before it was applied: end cancelled, write nothing
            raise SyncTimeout(f"write to {payload.get('key')!r} was withdrawn before it was applied",
                              missing=["primary"])
        token = _FORWARDED.set(hops)
        try:
            key = await self.memory.write(payload["memory_type"], payload["value"], payload.get("priority", 5),
                                          key=payload["key"], tombstone=bool(payload.get("tombstone")))
        finally:
            _FORWARDED.reset(token)
        return {"key": key, "primary": self.node_id}
