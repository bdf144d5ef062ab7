"""Membership: this node's record and heartbeat, the view of the mesh, trust, and who sweeps.

The failure detector itself is the pure ``mesh_core.membership`` table; this
service feeds it the medium's records, read at a time on this process's
monotonic clock (records' ages on the medium's clock count only at first
sight; see that module).

Self-knowledge: while a heartbeat is under way the loop keeps watching the
clock (a hung medium call is not cancelled: its hooks renew leases); when the
last successful heartbeat is older than ``suspect_after_seconds`` on this
process's monotonic clock, the node is cut off: it shows itself degraded and
suspect in its own view (never dead), and the claim loop takes no new work,
all before the others can judge it dead (``node_timeout_seconds``). The next
successful heartbeat ends it. A Redis call hangs at most
``redis.socket_timeout_seconds``; meanwhile no new heartbeat is started.

Its own clock: every view measures this process's wall clock against the
medium's reference (``MeshSnapshot.reference_wall``). Off by more than
``max_clock_offset_seconds`` plus the reading's error, the node fences itself:
it refuses to stamp memory writes (``fence_writes``), shows itself degraded
with the offset in its status and heartbeat, until a view finds it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from ..backends.contracts import TOPIC_MEMBERS, MembershipMedium, MeshSnapshot
from ..clock import HybridLogicalClock, clock_refusal, own_clock_offset
from ..errors import BackendError, ClockSkewed
from ..events import NodeJoined, NodeStatusChanged
from ..membership import Change, DetectorConfig, Member, MembershipTable, sweeper
from ..model import LIVE, NodeInfo, NodeRole, NodeStatus, Task
from ..routing import AffinityBook, AffinityStats
from ..security import NOT_ALLOWED, Trust, memory_origin, memory_parts, node_parts, sign, task_parts, task_submitter
from .context import TOPIC_RECORD, NodeContext, log

Hook = Callable[[], Awaitable[Any]]
# A node stays flagged as skewed this long after its last stamp was clamped (its old stamps keep arriving).
SKEW_FLAG_SECONDS = 60.0
# A task's submitter the view does not know is looked up again at most this often: a client writes no node record,
# so without this every task a client submitted cost its worker one read of every record before it ran.
LOOKUP_AGAIN_SECONDS = 1.0
LOOKUPS_KEPT = 4096


def _whose(why: str, origin: str) -> str:
    """A refusal said of a record: the allowlist judges its ``origin``, the signature the record itself."""
    if not why:
        return ""
    return f"{origin} {why}" if why == NOT_ALLOWED else f"it {why}"


def _claim_down(node: NodeInfo) -> bool:
    """Whether ``node``'s heartbeat says its claim loop is down (a malformed field says nothing)."""
    down = node.metrics.get("loops_down")
    return isinstance(down, list) and "claim" in down


class MembershipService:
    """The judged view of the mesh, refreshed from the medium; this node's heartbeat."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.table = MembershipTable(DetectorConfig(cfg.suspect_after_seconds, ctx.timings.dead_after_s))
        self._last_beat_ok = time.monotonic()
        self.view = MeshSnapshot([], 0.0)
        self.view_at = 0.0
        self.affinity: AffinityBook | None = None
        self.generation = 0  # bumped on every membership change (joins, status changes)
        self._workers: list[NodeInfo] | None = None  # active workers as the router sees them (cached per view)
        self.trust = Trust(tuple(cfg.security.allowlist), cfg.security.api_key)
        self.known: dict[str, NodeInfo] = {}  # every node record of the last view, clients included
        self._looked_up: OrderedDict[str, float] = OrderedDict()  # unknown submitter → when it was last looked up
        self.untrusted: set[str] = set()  # nodes whose records were refused in the last view
        self._refused: set[tuple[str, str]] = set()  # (kind, origin) already logged
        self._process = psutil.Process()
        # Wired by the manager: what the other services add to this node's record and rounds.
        self.running: Callable[[], int] = lambda: 0
        self.metric_sources: list[Callable[[], dict[str, Any]]] = []
        self.heartbeat_hooks: list[Hook] = []  # after each heartbeat (lease renewal, primary election)
        self.sweep_hooks: list[tuple[float, Hook]] = []  # on the sweeping node: (every seconds, hook)
        # on a client, where each node keeps its own store (a client's own log): (every seconds, hook)
        self.client_sweep_hooks: list[tuple[float, Hook]] = []
        self._swept_at: dict[int, float] = {}
        self._skew: dict[str, tuple[float, float]] = {}  # node id → (seconds ahead, monotonic time of last clamp)
        self.clock_offset: float | None = None  # this node's wall clock off the medium's, past the bound

    @property
    def medium(self) -> MembershipMedium:
        return self.ctx.backend

    # -- this node -------------------------------------------------------------------------------
    def local_info(self) -> NodeInfo:
        ctx = self.ctx
        assert ctx.identity is not None and ctx.profile is not None
        running = self.running()
        queued = max(0, self.view.queued.get(ctx.node_id, 0) - running)
        handlers = ctx.handlers
        info = NodeInfo(
            node_id=ctx.identity.node_id, name=ctx.identity.name, node_type=ctx.profile.node_type,
            role=ctx.role, host=socket.gethostname(), port=ctx.config.port, pid=os.getpid(),
            incarnation=ctx.identity.incarnation,
            capabilities=handlers.capabilities() | ctx.profile.capabilities,
            task_types=handlers.task_types() if ctx.is_worker else frozenset(),
            capacity=ctx.config.max_capacity, running=running, queued=queued,
            metrics=self.metrics(), started_at=ctx.started_at, last_seen=time.time(), left=not ctx.enabled)
        if ctx.config.security.api_key:
            info.signature = sign(ctx.config.security.api_key, *node_parts(info))
        return info

    def metrics(self) -> dict[str, Any]:
        cpu = rss_mb = 0.0
        with contextlib.suppress(psutil.Error):
            cpu = psutil.cpu_percent(interval=None)
            rss_mb = self._process.memory_info().rss / 2**20
        out: dict[str, Any] = {"cpu_percent": cpu, "memory_mb": round(rss_mb, 1)}
        for source in self.metric_sources:
            out.update(source())
        out["counters"] = dict(self.ctx.counters)
        out["clock_skewed"] = self._own_skew()  # so every reader, one-shot clients too, sees the flag
        if self.clock_offset is not None:
            out["clock_offset_s"] = round(self.clock_offset, 3)  # measured by itself: writes refused
        profile = self.ctx.profile
        if profile is not None and profile.metrics is not None:
            out.update(profile.metrics())
        return out

    async def heartbeat(self) -> None:
        await self.medium.heartbeat(self.local_info())

    async def leave(self) -> None:
        with contextlib.suppress(BackendError):
            await self.medium.leave(self.local_info())

    # -- clocks -------------------------------------------------------------------------------------
    def merge_clock(self, hlc: HybridLogicalClock, stamp: int, origin: str) -> None:
        """Merge a stamp from node ``origin`` into ``hlc``; one too far ahead is clamped, counted, its node flagged."""
        _, ahead = hlc.merge(stamp)
        if not ahead:
            return
        if origin not in self._own_skew():
            self.ctx.problem("clock_skew_clamped", f"node {origin[:12]} stamps {ahead:.1f} s ahead of this clock "
                                                   f"(over max_clock_offset_seconds): clamped, flagged skewed")
        else:
            self.ctx.counters["clock_skew_clamped"] += 1
        self._skew[origin] = (ahead, time.monotonic())

    def check_own_clock(self, snap: MeshSnapshot) -> None:
        """Measure this node's wall clock against the medium's reference in ``snap``; fence or unfence writes."""
        if snap.reference_wall is None:
            return
        bound = self.ctx.config.max_clock_offset_seconds
        offset = own_clock_offset(snap.local_wall, snap.reference_wall, snap.reference_error, bound)
        if offset is not None and self.clock_offset is None and self.ctx.is_worker:  # a client's write says it
            self.ctx.problem("clock_skewed_self", clock_refusal(offset, bound))
        elif offset is None and self.clock_offset is not None:
            log.info("this node's clock is back within max_clock_offset_seconds %g: writes resume", bound)
        self.clock_offset = offset

    def fence_writes(self) -> None:
        """Raise ``ClockSkewed`` (counted ``clock_skew_refused``) while this node's clock is off the mesh's."""
        if self.clock_offset is not None:
            self.ctx.counters["clock_skew_refused"] += 1
            raise ClockSkewed(clock_refusal(self.clock_offset, self.ctx.config.max_clock_offset_seconds),
                              offset=self.clock_offset)

    def _own_skew(self) -> dict[str, float]:
        horizon = time.monotonic() - SKEW_FLAG_SECONDS
        return {node: round(ahead, 3) for node, (ahead, at) in self._skew.items() if at >= horizon}

    def skewed(self) -> dict[str, float]:
        """Nodes whose clocks run ahead past ``max_clock_offset_seconds``: node id → seconds ahead.

        Seen here, or reported by any known node in its heartbeat (the largest report wins)."""
        out = self._own_skew()
        if self.clock_offset is not None:
            out[self.ctx.node_id] = round(self.clock_offset, 3)
        for member in self.table.members():
            measured = member.info.metrics.get("clock_offset_s")  # its own measure against the medium
            if isinstance(measured, (int, float)) and not isinstance(measured, bool):
                out[member.info.node_id] = float(measured)
            reported = member.info.metrics.get("clock_skewed")
            if not isinstance(reported, dict):
                continue
            for node, ahead in reported.items():
                if isinstance(node, str) and isinstance(ahead, (int, float)) and not isinstance(ahead, bool):
                    out[node] = max(out.get(node, 0.0), float(ahead))
        return out

    # -- the view ----------------------------------------------------------------------------------
    def members(self) -> list[Member]:
        return self.table.members()

    def status_of(self, node_id: str) -> NodeStatus | None:
        return self.table.status_of(node_id)

    def active_ids(self) -> set[str]:
        return {m.info.node_id for m in self.table.members() if m.status is NodeStatus.ACTIVE}

    def live_ids(self, *, workers_only: bool = False) -> set[str]:
        """Active and suspect nodes: every node that may still be alive (a suspect one is only late so far)."""
        return {m.info.node_id for m in self.table.members()
                if m.status in LIVE and not (workers_only and m.info.role is not NodeRole.WORKER)}

    def away_worker_ids(self, within: float) -> set[str]:
        """Workers not live (declared dead, or stopped) whose last heartbeat this node saw under ``within`` seconds
        ago: away for a moment so far (a restart, a pause, a cut link), maybe back soon."""
        now = time.monotonic()
        return {m.info.node_id for m in self.table.members()
                if m.status not in LIVE and m.info.role is NodeRole.WORKER and now - m.beat_at < within}

    def workers(self) -> list[NodeInfo]:
        """Active worker nodes, as the router sees them (rebuilt once per view): a node whose claim loop is
        down (restarting after a failure, as its heartbeat says) gets no new work while another can take it."""
        if self._workers is None:
            self._workers = [m.info for m in self.table.members()
                             if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER
                             and not _claim_down(m.info)]
        return self._workers

    def suspect_workers(self) -> list[NodeInfo]:
        """Worker nodes that missed heartbeats for ``suspect_after`` but are not declared dead yet."""
        return [m.info for m in self.table.members()
                if m.status is NodeStatus.SUSPECT and m.info.role is NodeRole.WORKER]

    def restarting_workers(self) -> list[NodeInfo]:
        """Active worker nodes whose claim loop is down (restarting): the router's last resort."""
        return [m.info for m in self.table.members()
                if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER and _claim_down(m.info)]

    def note_queued(self, node_id: str, depth: int | None = None) -> None:
        """Count one more task queued on ``node_id`` in this view (or set its depth), until the next refresh."""
        queued = self.view.queued
        queued[node_id] = depth if depth is not None else queued.get(node_id, 0) + 1

    def is_fresh(self, seconds: float) -> bool:
        return time.monotonic() - self.view_at < seconds

    async def refresh(self) -> MeshSnapshot:
        """Read the mesh from the medium, judge every node, publish what changed."""
        # stamps younger than suspect_after change no verdict: the medium need not read them (see its contract);
        # for this read only (a parameter, not a setting: a read by anything else meanwhile gets every stamp)
        snap = await self.medium.snapshot(self.ctx.config.suspect_after_seconds)
        self.view = snap
        self.view_at = time.monotonic()
        self.check_own_clock(snap)
        visible = []
        self.known = {node.node_id: node for node in snap.nodes}
        untrusted = set()
        for node in snap.nodes:
            why = self.distrust(node)
            if why:
                untrusted.add(node.node_id)
                if node.node_id not in self.untrusted:  # a record re-read every view is refused once, not each time
                    self.refuse("nodes", node.node_id, f"node {node.name} ({node.node_id[:12]}, host {node.host}) "
                                f"{why}: ignored, no work routed to it, nothing it writes applied")
            elif node.role is NodeRole.WORKER:
                visible.append(node)
        self.untrusted = untrusted
        self.table.self_id = self.ctx.node_id
        changes = self.table.observe(visible, time.monotonic(), store_now=snap.now, judged=snap.judged,
                                     aged=snap.aged)
        self._workers = None  # the router's list is rebuilt from the new records on next use
        self.affinity = self._build_affinity()
        if changes:
            self.generation += 1
        self._publish(changes)
        return snap

    def _publish(self, changes: list[Change]) -> None:
        for change in changes:
            node = change.node
            if change.joined:
                self.ctx.publish(NodeJoined(node_id=node.node_id, name=node.name, node_type=node.node_type.value,
                                            incarnation=node.incarnation))
                if change.new is not NodeStatus.ACTIVE:
                    self.ctx.publish(NodeStatusChanged(node_id=node.node_id, name=node.name, old="new",
                                                       new=change.new.value, incarnation=node.incarnation))
            else:
                assert change.old is not None
                self.ctx.publish(NodeStatusChanged(node_id=node.node_id, name=node.name, old=change.old.value,
                                                   new=change.new.value, incarnation=node.incarnation))

    # -- trust: every ingest path asks these, and nothing refused is applied ------------------------------
    def distrust(self, node: NodeInfo) -> str:
        """Why a node record is not trusted ('' when it is): allowlist, then the api_key signature."""
        if self.trust.believes_all:
            return ""
        return self.trust.refuses((node.node_id, node.name, node.host), node.signature, node_parts(node))

    def distrust_task(self, task: Task) -> str:
        """Why a task is not to be run ('' when it may): its submitter (judged by its node record when this
        node has seen one, else by the id, name and host the task names, covered by its signature) and the
        task's own signature."""
        if self.trust.believes_all:
            return ""
        submitter = self.known.get(task.submitter_id or "")
        if submitter is not None and (why := self.distrust(submitter)):
            return f"its submitter {why}"
        identity = (submitter.node_id, submitter.name, submitter.host) if submitter else task_submitter(task)
        return _whose(self.trust.refuses(identity, task.signature, task_parts(task)), "its submitter")

    def distrust_memory(self, wire: dict[str, Any]) -> str:
        """Why a memory frame is not to be applied ('' when it may): its origin as the frame names it
        (covered by the signature) and the signature."""
        if self.trust.believes_all:
            return ""  # nothing to check: the frame's parts are not built (a catch-up reads thousands)
        return _whose(self.trust.refuses(memory_origin(wire), wire.get("s"), memory_parts(wire)), "its origin")

    async def learn(self) -> None:
        """Read the node records again (not judging liveness): for a record from a node joined since the view."""
        self.known = {node.node_id: node for node in (await self.medium.snapshot()).nodes}

    def worth_looking_up(self, node_id: str | None) -> bool:
        """Whether a task's submitter is worth reading the records again for (``learn``): one the view does not
        know, not looked up in the last ``LOOKUP_AGAIN_SECONDS`` (a node that joined since the view is found by the
        first lookup; a client, which writes no record, is judged by its task's signed context meanwhile)."""
        if not node_id or node_id in self.known:
            return False
        now = time.monotonic()
        last = self._looked_up.get(node_id)
        if last is not None and now - last < LOOKUP_AGAIN_SECONDS:
            return False
        self._looked_up[node_id] = now
        self._looked_up.move_to_end(node_id)
        while len(self._looked_up) > LOOKUPS_KEPT:
            self._looked_up.popitem(last=False)
        return True

    def refuse(self, kind: str, origin: str, detail: str) -> None:
        """Count a refused record as ``refused_<kind>``; log it once per origin."""
        if (kind, origin) in self._refused:
            self.ctx.counters[f"refused_{kind}"] += 1
            return
        self._refused.add((kind, origin))
        self.ctx.problem(f"refused_{kind}", detail)

    def _build_affinity(self) -> AffinityBook | None:
        """Every node's smoothed success per task type, from the metrics in its heartbeat."""
        if not self.ctx.config.task_distribution.task_affinity_enabled:
            return None
        book = AffinityBook()
        for member in self.table.members():
            for task_type, stats in (member.info.metrics.get("affinity") or {}).items():
                try:
                    success, latency, samples = float(stats[0]), float(stats[1]), int(stats[2])
                except (TypeError, ValueError, IndexError):
                    continue
                entry = book.stats.setdefault((member.info.node_id, task_type), AffinityStats())
                entry.success, entry.latency_s, entry.samples = success, latency, samples
        return book

    def is_sweeper(self) -> bool:
        """Whether this node sweeps (``mesh_core.membership.sweeper``: a coordination_hub first; every node on a
        medium where each owner sweeps its own tasks)."""
        if self.medium.sweeps_own_tasks:
            return True
        return sweeper(self.table.active()) == self.ctx.node_id

    # -- loops ---------------------------------------------------------------------------------------
    async def view_loop(self) -> None:
        """Refresh the view; on the sweeping node, run the sweep hooks each at its own period (on a client, where
        each node keeps its own store, the client's)."""
        ctx = self.ctx
        period = min(0.5, ctx.config.heartbeat_interval_seconds / 2)
        hooks = self.sweep_hooks if ctx.is_worker else self.client_sweep_hooks if self.medium.sweeps_own_tasks else []
        while not ctx.closing:
            await ctx.wait_wake(TOPIC_MEMBERS, period)
            try:
                await self.refresh()
                # a worker sweeps while it takes part (enabled); a client never joins
                if hooks and (ctx.enabled or not ctx.is_worker) and self.is_sweeper():
                    for index, (every, hook) in enumerate(hooks):
                        if time.monotonic() - self._swept_at.get(index, -every) >= every:
                            self._swept_at[index] = time.monotonic()
                            await hook()
                ctx.backend_ok(True)
            except BackendError as exc:
                ctx.backend_ok(False, str(exc))
                ctx.problem("backend_errors", str(exc))
                await asyncio.sleep(period)

    async def heartbeat_loop(self) -> None:
        """Publish this node's record every heartbeat interval, then run the heartbeat hooks; notice being cut off."""
        ctx = self.ctx
        suspect_after = ctx.config.suspect_after_seconds
        self._last_beat_ok = time.monotonic()
        while not ctx.closing:
            interval = ctx.config.heartbeat_interval_seconds
            # Until cut off, wake by the deadline too, so a failing medium is noticed at suspect_after; and at once
            # when this node's record changed in what others route by.
            await ctx.wait_wake(TOPIC_RECORD, interval if ctx.cut_off else min(
                interval, max(0.05, self._last_beat_ok + suspect_after - time.monotonic())))
            if not ctx.enabled:
                self._last_beat_ok = time.monotonic()  # not heartbeating on purpose is not being cut off
                continue
            beat = asyncio.ensure_future(self._beat())
            # A hung medium call is not cancelled (its hooks renew leases), but the deadline is watched meanwhile.
            while not (await asyncio.wait({beat}, timeout=suspect_after / 4))[0]:
                self._check_cut_off()
            try:
                beat.result()
                self._last_beat_ok = time.monotonic()
                self._cut_off(False)
                ctx.backend_ok(True)
            except BackendError as exc:
                ctx.backend_ok(False, str(exc))
                ctx.problem("backend_errors", str(exc))
            self._check_cut_off()

    async def _beat(self) -> None:
        await self.heartbeat()
        for hook in self.heartbeat_hooks:
            await hook()

    def _check_cut_off(self) -> None:
        if time.monotonic() - self._last_beat_ok >= self.ctx.config.suspect_after_seconds:
            self._cut_off(True)

    def _cut_off(self, cut: bool) -> None:
        """Mark this node cut off from its medium (degraded, suspect in its own view, claiming nothing) or back."""
        ctx = self.ctx
        if cut == ctx.cut_off:
            return
        if cut:
            why = self.medium.why_stalled()
            ctx.problem("cut_off", f"no heartbeat reached the medium for {ctx.config.suspect_after_seconds:g} s: "
                                   "degraded, claiming no new work" + (f" ({why})" if why else ""))
            ctx.backend_ok(False, "cut off from the medium")
        ctx.cut_off = cut
        self._publish(self.table.set_self_suspect(cut, time.monotonic()))
