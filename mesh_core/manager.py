"""AgentMeshManager: one node's lifecycle and the public API; wires the rooms together.

Loops (all on one event loop):
- heartbeat: publish this node's record and load, renew the leases of running tasks;
- membership: read the mesh, judge liveness, publish events, and (on the
  sweeping node) re-route work stranded on dead nodes or lapsed leases;
- claim: start tasks assigned here, woken by the backend the moment work lands;
- results: resolve ``wait_for`` callers when their tasks finish;
- memory: apply other nodes' memory writes to the local replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from . import codec
from .backends import create_backend
from .backends.contracts import (
    TOPIC_CANCEL,
    TOPIC_MEMBERS,
    TOPIC_MEMORY,
    TOPIC_RESULTS,
    TOPIC_TASKS,
    Assignment,
    Backend,
    Completion,
    Finished,
    MeshSnapshot,
    Reassignment,
)
from .clock import HybridLogicalClock
from .config import MeshConfig
from .errors import (
    BackendError,
    CodecError,
    MemoryNotFound,
    MeshError,
    NoCapacity,
    SyncTimeout,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownTaskType,
    UsageError,
)
from .events import (
    BackendStatus,
    ConflictOpened,
    ConflictResolved,
    Event,
    EventBus,
    MemoryChanged,
    NodeJoined,
    NodeStatusChanged,
    Problem,
    TaskUpdated,
)
from .handlers import HandlerRegistry, TaskContext, load_plugins, make_spec
from .identity import Identity, acquire, ephemeral
from .membership import DetectorConfig, Member, MembershipTable
from .memory.digest import BUCKETS, bucket_of, differing, digests
from .memory.resolve import (
    SIBLING_WARNING,
    Ranking,
    Resolution,
    apply_remote,
    local_sibling,
    local_write,
    merge_items,
    resolve_manually,
)
from .memory.store import ReplicaStore, item_from_wire, item_to_wire
from .model import (
    Conflict,
    MemoryItem,
    NodeInfo,
    NodeRole,
    NodeStatus,
    NodeType,
    Task,
    TaskPriority,
    TaskStatus,
)
from .nodes import NodeProfile, create_specialized_node
from .routing import AffinityBook, AffinityStats, RouteRequest, route
from .security import allowed, memory_parts, node_parts, sign, task_parts, verify
from .tasks import DeadLetter, RetryPolicy, after_failure, classify_stranded

log = logging.getLogger("mesh")

CLAIM_POLL_SECONDS = 0.5
RESULTS_POLL_SECONDS = 0.5
HORIZON_CHECK_SECONDS = 5.0  # how often a node looks whether compaction dropped entries it never read
ACK_EVERY_SECONDS = 0.5  # memory stream acks (they feed compaction; strong writes ack at once)
PRUNE_EVERY_SECONDS = 5.0  # how often the sweeping node applies task retention
PRUNE_BATCH = 5000  # tasks deleted per backend call
OWN_TRACK_LIMIT = 100_000  # own submissions kept in memory so their results need no read of the task
RECENT_KEEP = 10_000  # results of own tasks that arrived before anyone waited for them
OWN_STALE_SECONDS = 5.0  # an own task without a result after this long is checked by the periodic sweep
FORWARD_WRITE = "_memory_write"  # master_slave: a write handed to the primary
VIEW_FRESH_SECONDS = 0.05  # a refusal looks at the mesh again only if its view is older than this


@dataclass
class _Running:
    task: Task
    job: asyncio.Task[None] | None = None
    lost: bool = False
    cancelled: bool = False
    refused: bool = False  # not signed with the mesh's api_key: never run, failed without retry
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Recollection:
    """What ``recall_item`` found: the value, and every concurrent sibling when in conflict."""

    key: str
    memory_type: str
    value: Any
    siblings: tuple[MemoryItem, ...]
    origin: str
    hlc: int


class AgentMeshManager:
    """One node of the mesh. ``async with AgentMeshManager(config) as mesh: ...``"""

    def __init__(self, config: MeshConfig | None = None, *, role: NodeRole = NodeRole.WORKER,
                 backend: Backend | None = None) -> None:
        self.config = config or MeshConfig()
        self.role = role
        self.events = EventBus()
        self.handlers = HandlerRegistry()
        self.counters: Counter[str] = Counter()
        self.table = MembershipTable(DetectorConfig(self.config.suspect_after_seconds,
                                                    self.config.node_timeout_seconds))
        self.hlc = HybridLogicalClock()
        self.limits = codec.CodecLimits(
            max_frame_bytes=self.config.max_frame_bytes,
            compress_threshold=self.config.memory_sync.compression_threshold_bytes,
            compression_enabled=self.config.memory_sync.compression_enabled)
        td = self.config.task_distribution
        self.retry_policy = RetryPolicy(td.retry_failed_tasks, td.max_task_retries, td.retry_backoff_seconds,
                                        td.retry_backoff_max_seconds)
        self._backend = backend
        self.backend_reason = "given by the caller" if backend else ""
        self.identity: Identity | None = None
        self.profile: NodeProfile | None = None
        self.replica: ReplicaStore | None = None
        self.enabled = False
        self.healthy = True
        self.started_at = 0.0
        self._accepting = False
        self._running: dict[str, _Running] = {}
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}
        self._own: dict[str, Task] = {}  # own submissions not finished yet, oldest first
        self._recent: OrderedDict[str, Task] = OrderedDict()  # own finished tasks nobody waited for yet
        self._wake = {t: asyncio.Event() for t in (TOPIC_TASKS, TOPIC_RESULTS, TOPIC_MEMBERS, TOPIC_MEMORY,
                                                    TOPIC_CANCEL)}
        self._loops: list[asyncio.Task[None]] = []
        self._view = MeshSnapshot([], 0.0)
        self._affinity: AffinityBook | None = None
        self._ranking: Ranking | None = None
        self._primary: str | None = None
        self._refused: set[str] = set()
        self._view_at = 0.0
        self._pruned_at = 0.0
        self._acked_cursor: Any = None
        self._horizon_checked_at = -HORIZON_CHECK_SECONDS
        self._acked_at = 0.0
        self._bootstrapped = False  # this replica has loaded every key's newest entries once
        self._workers: list[NodeInfo] | None = None  # active workers as the router sees them (cached per view)
        self._rr: Counter[str] = Counter()
        self._stats: dict[str, AffinityStats] = {}  # task type -> this node's smoothed success and latency
        self._done = 0
        self._failed = 0
        self._latency_ms = 0.0
        self._finished_cursor: Any = None
        self._waiter_generation = 0
        self._memory_cursor: Any = None
        self._process = psutil.Process()
        self._rng = random.Random()
        self._stopping = False
        self._closing = False

    # -- properties ------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise MeshError("the mesh manager is not started", hint="await mesh.start() first")
        return self._backend

    @property
    def node_id(self) -> str:
        return self.identity.node_id if self.identity else ""

    @property
    def name(self) -> str:
        return self.identity.name if self.identity else ""

    @property
    def is_worker(self) -> bool:
        return self.role is NodeRole.WORKER

    def local_info(self) -> NodeInfo:
        assert self.identity is not None and self.profile is not None
        queued = max(0, self._view.queued.get(self.node_id, 0) - len(self._running))
        info = NodeInfo(
            node_id=self.identity.node_id, name=self.identity.name, node_type=self.profile.node_type,
            role=self.role, host=socket.gethostname(), port=self.config.port, pid=os.getpid(),
            incarnation=self.identity.incarnation,
            capabilities=self.handlers.capabilities() | self.profile.capabilities,
            task_types=self.handlers.task_types() if self.is_worker else frozenset(),
            capacity=self.config.max_capacity, running=len(self._running), queued=queued,
            metrics=self.metrics(), started_at=self.started_at, last_seen=time.time(), left=not self.enabled)
        if self.config.security.api_key:
            info.signature = sign(self.config.security.api_key, *node_parts(info))
        return info

    def metrics(self) -> dict[str, Any]:
        finished = self._done + self._failed
        with contextlib.suppress(psutil.Error):
            cpu = psutil.cpu_percent(interval=None)
            rss_mb = self._process.memory_info().rss / 2**20
        return {
            "cpu_percent": cpu, "memory_mb": round(rss_mb, 1), "tasks_done": self._done,
            "tasks_failed": self._failed, "error_rate": (self._failed / finished) if finished else 0.0,
            "avg_response_ms": round(self._latency_ms, 2),
            "affinity": {k: [round(v.success, 3), round(v.latency_s, 4), v.samples] for k, v in self._stats.items()},
            "counters": dict(self.counters), "memory_items": self.replica.count() if self.replica else 0,
            **(self.profile.metrics() if self.profile is not None and self.profile.metrics is not None else {}),
        }

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> AgentMeshManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        cfg = self.config
        self.started_at = time.time()
        self.identity = acquire(cfg.state_dir, cfg.node_name) if self.is_worker else ephemeral()
        try:
            self.profile = create_specialized_node(cfg.node_type, cfg)
            if self.is_worker:
                for spec in self.profile.handlers:
                    self.handlers.add(spec)
                # A planning_only node with disable_execution serves its planning types and nothing else.
                for spec in load_plugins(cfg.handlers) if not self.profile.disable_execution else ():
                    self.handlers.add(spec)
            if cfg.memory_sync.strategy == "master_slave" and self.is_worker:
                # Infrastructure, not work: even a planning_only node accepts a forwarded write.
                self.handlers.add(make_spec(FORWARD_WRITE, self._apply_forwarded_write))
            self.replica = ReplicaStore(self.identity.replica_path, cfg.memory_sync.history_size)
            self.hlc = HybridLogicalClock(last=max(int(self.replica.get_meta("hlc") or 0), self.replica.max_hlc()))
            self._memory_cursor = self.replica.get_meta("memory_cursor")
            self._bootstrapped = self.replica.get_meta("memory_bootstrapped") is not None
            if self._backend is None:
                self._backend, self.backend_reason = create_backend(cfg, self.limits)
            self._backend.on_signal(self._on_signal)
            await self._backend.open(self.local_info())
            _, self._finished_cursor = await self._backend.finished_for(self.node_id, None)
            await self._refresh_view()
            if cfg.enabled and self.is_worker:
                await self.enable(rejoin=False)
        except BaseException:
            await self._teardown()
            raise
        self._spawn(self._membership_loop(), self._results_loop())
        if self.is_worker:
            self._spawn(self._heartbeat_loop(), self._claim_loop(), self._memory_loop(), self._cancel_loop())
            if self.profile.on_start is not None:
                await self.profile.on_start(self)

    def _spawn(self, *coros: Any) -> None:
        for coro in coros:
            self._loops.append(asyncio.get_running_loop().create_task(coro))

    async def stop(self) -> None:
        """Leave gracefully: running tasks get the grace period, then are handed back."""
        if self._stopping:
            return
        self._stopping = True
        try:
            if self.enabled and self._backend is not None:
                await self.disable()
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        if self.profile is not None and self.profile.on_stop is not None:
            with contextlib.suppress(Exception):
                await self.profile.on_stop(self)
        self._closing = True
        for loop_task in self._loops:
            loop_task.cancel()
        for loop_task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
        self._loops.clear()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                await self._backend.close()
        if self.replica is not None:
            self.replica.set_meta("hlc", str(self.hlc.last))
            self.replica.close()
            self.replica = None
        if self.identity is not None:
            self.identity.release()
        self.events.close()

    async def enable(self, *, rejoin: bool = True) -> None:
        """Join (or rejoin, as a new incarnation) and start taking work."""
        if self.enabled:
            return
        if rejoin and self.identity is not None:
            self.identity.bump()
        self.enabled = True
        self._accepting = self.is_worker
        await self.backend.heartbeat(self.local_info())
        await self._refresh_view()
        self._wake[TOPIC_TASKS].set()

    async def disable(self) -> None:
        """Stop taking work, let running tasks finish within the grace period, hand back the rest, leave."""
        if not self.enabled:
            return
        self._accepting = False
        deadline = time.monotonic() + self.config.shutdown_grace_seconds
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for entry in list(self._running.values()):
            entry.lost = True
            if entry.job:
                entry.job.cancel()
        for entry in list(self._running.values()):
            if entry.job:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await entry.job
        try:
            await self._hand_back()
        finally:
            self.enabled = False
            with contextlib.suppress(BackendError):
                await self.backend.leave(self.local_info())

    async def _hand_back(self) -> None:
        mine = await self.backend.stranded([self.node_id], time.time())
        moves = []
        for task in mine:
            if task.node_id != self.node_id:
                continue
            moves.append(self._move(task, bump=task.status is TaskStatus.RUNNING, exclude={self.node_id},
                                    error=f"handed back by {self.name} (leaving)" if task.status is TaskStatus.RUNNING
                                    else None))
        if moves:
            await self.backend.move(moves)

    # -- signals and events ------------------------------------------------------
    def _on_signal(self, topic: str) -> None:
        event = self._wake.get(topic)
        if event is not None:
            event.set()

    def _publish(self, event: Event) -> None:
        self.events.publish(event)

    def _problem(self, counter: str, detail: str) -> None:
        self.counters[counter] += 1
        log.warning("%s: %s", counter, detail)
        self._publish(Problem(counter=counter, detail=detail))

    async def subscribe(self) -> AsyncIterator[Event]:
        async for event in self.events.subscribe():
            yield event

    async def subscribe_batches(self, *, routine: bool = True) -> AsyncIterator[list[Event]]:
        """Events in bursts: whatever was published since the last batch, in order (without the
        per-task and per-item ones when ``routine`` is False)."""
        async for batch in self.events.subscribe_batches(routine=routine):
            yield batch

    async def _wait_wake(self, topic: str, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races a wake-up.
        event = self._wake[topic]
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        event.clear()

    def _backend_ok(self, ok: bool, detail: str = "") -> None:
        if ok != self.healthy:
            self.healthy = ok
            self._publish(BackendStatus(backend=self.backend.name, healthy=ok, detail=detail))

    # -- membership ----------------------------------------------------------------
    async def _refresh_view(self) -> MeshSnapshot:
        snap = await self.backend.snapshot()
        self._view = snap
        self._view_at = time.monotonic()
        visible = []
        for node in snap.nodes:
            if node.role is not NodeRole.WORKER:
                continue
            why = self._distrust(node)
            if why:
                if node.node_id not in self._refused:
                    self._refused.add(node.node_id)
                    self._problem("rejected_nodes", f"node {node.name} ({node.node_id[:12]}, host {node.host}) "
                                                    f"{why}: ignored, no work routed to it")
                continue
            visible.append(node)
        changes = self.table.observe(visible, snap.now)
        self._workers = None  # the router's list is rebuilt from the new records on next use
        self._affinity = self._build_affinity()
        if changes and self.config.memory_sync.source_priority:
            self._ranking = self._build_ranking()
        for change in changes:
            node = change.node
            if change.joined:
                self._publish(NodeJoined(node_id=node.node_id, name=node.name, node_type=node.node_type.value,
                                         incarnation=node.incarnation))
                if change.new is not NodeStatus.ACTIVE:
                    self._publish(NodeStatusChanged(node_id=node.node_id, name=node.name, old="new",
                                                    new=change.new.value, incarnation=node.incarnation))
            else:
                assert change.old is not None
                self._publish(NodeStatusChanged(node_id=node.node_id, name=node.name, old=change.old.value,
                                                new=change.new.value, incarnation=node.incarnation))
        return snap

    def _distrust(self, node: NodeInfo) -> str:
        """Why a node record is not trusted ('' when it is): allowlist, then the api_key signature."""
        if not allowed(node, self.config.security.allowlist):
            return "is not on the allowlist"
        key = self.config.security.api_key
        if key and not verify(key, node.signature, *node_parts(node)):
            return "is not signed with this mesh's api_key" if not node.signature else "has a bad signature"
        return ""

    def _build_affinity(self) -> AffinityBook | None:
        """Every node's smoothed success per task type, from the metrics in its heartbeat."""
        if not self.config.task_distribution.task_affinity_enabled:
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

    async def _membership_loop(self) -> None:
        period = min(0.5, self.config.heartbeat_interval_seconds / 2)
        while not self._closing:
            await self._wait_wake(TOPIC_MEMBERS, period)
            try:
                await self._refresh_view()
                if self.is_worker and self.enabled and self._is_sweeper():
                    await self._sweep()
                    if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
                        self._pruned_at = time.monotonic()
                        await self.prune_tasks()
                        await self.compact_memory()
                self._backend_ok(True)
            except BackendError as exc:
                self._backend_ok(False, str(exc))
                self._problem("backend_errors", str(exc))
                await asyncio.sleep(period)

    async def prune_tasks(self) -> int:
        """Delete finished tasks past the retention limits (the sweeping node does this every few seconds)."""
        td = self.config.task_distribution
        gone = 0
        while True:
            n = await self.backend.prune(td.tasks_kept, td.dead_letters_kept, PRUNE_BATCH)
            gone += n
            if n < PRUNE_BATCH or self._closing:
                break
            await asyncio.sleep(0)  # a big backlog goes in slices; the node keeps serving between them
        if gone:
            self.counters["tasks_pruned"] += gone
        return gone

    async def compact_memory(self) -> int:
        """Drop memory stream entries that every active node has applied (the sweeping node does this).

        A node that was away, or joins later, gets what was dropped from anti-entropy, which reads the
        newest entry per key and origin.
        """
        acks = await self.backend.memory_acks()
        active = {m.info.node_id for m in self.table.members() if m.status is NodeStatus.ACTIVE}
        cursors = [acks.get(node_id) for node_id in active]
        if not cursors or any(c is None for c in cursors):
            return 0  # someone has applied nothing yet: keep everything for it
        low = cursors[0]
        for cursor in cursors[1:]:
            if not self.backend.cursor_reached(cursor, low):
                low = cursor
        dropped = await self.backend.compact_memory(low)
        if dropped:
            self.counters["memory_log_compacted"] += dropped
        return dropped

    def _is_sweeper(self) -> bool:
        active = [m.info.node_id for m in self.table.members() if m.status is NodeStatus.ACTIVE]
        return bool(active) and min(active) == self.node_id

    async def _sweep(self) -> None:
        statuses = {m.info.node_id: m.status.value for m in self.table.members()}
        gone = [node_id for node_id, status in statuses.items() if status in ("dead", "left")]
        now = self._view.now
        candidates = await self.backend.stranded(gone, now)
        moves = []
        for s in classify_stranded(candidates, statuses, now):
            if s.task.not_before > now:
                continue
            held_by = {s.task.node_id} if s.task.node_id else set()
            moves.append(self._move(s.task, bump=s.started, exclude=held_by,
                                    error=f"re-routed: {s.reason} ({s.task.node_name})" if s.started else None))
        for task in candidates:
            if task.status is not TaskStatus.PENDING or task.not_before > now:
                continue
            try:
                decision = self._route(task, set())
            except MeshError:
                continue  # still no room: it stays pending, untouched
            self._view.queued[decision.node_id] = self._view.queued.get(decision.node_id, 0) + 1
            moves.append(Reassignment(task.task_id, task.attempt, None, decision.node_id, decision.node_name,
                                      decision.why, bump_attempt=False))
        if moves:
            results = await self.backend.move(moves)
            for move, ok in zip(moves, results, strict=True):
                if ok:
                    self.counters["rerouted"] += 1
                    self._publish(TaskUpdated(task_id=move.task_id, task_type="", status="assigned" if move.node_id
                                              else "pending", node_id=move.node_id, node_name=move.node_name,
                                              why=move.why))

    def _move(self, task: Task, *, bump: bool, exclude: set[str], error: str | None = None,
              count_failure: bool = False, not_before: float = 0.0) -> Reassignment:
        """A fenced move of ``task`` to the best other node, or back to the mesh-wide pending list."""
        try:
            decision = self._route(task, exclude)
        except MeshError:
            try:
                decision = self._route(task, set())
            except MeshError as exc:
                return Reassignment(task.task_id, task.attempt, task.node_id, None, None, f"waiting: {exc.message}",
                                    not_before=not_before, bump_attempt=bump, error=error,
                                    count_failure=count_failure, final_status=TaskStatus.PENDING)
        self._view.queued[decision.node_id] = self._view.queued.get(decision.node_id, 0) + 1
        return Reassignment(task.task_id, task.attempt, task.node_id, decision.node_id, decision.node_name,
                            decision.why, not_before=not_before, bump_attempt=bump, error=error,
                            count_failure=count_failure)

    def _route(self, task: Task, exclude: set[str]) -> Any:
        workers = self._workers
        if workers is None:
            workers = self._workers = [m.info for m in self.table.members()
                                       if m.status is NodeStatus.ACTIVE and m.info.role is NodeRole.WORKER]
        req = RouteRequest(task.task_type, task.required_capabilities, task.preferred_node_types, frozenset(exclude))
        algorithm = self.config.task_distribution.load_balancing_algorithm
        decision = route(req, workers, self._view.queued, algorithm=algorithm, affinity=self._affinity,
                         round_robin_counter=self._rr[task.task_type], rng=self._rng)
        self._rr[task.task_type] += 1
        return decision

    # -- heartbeat and leases --------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval_seconds
        lease = self.config.node_timeout_seconds
        while not self._closing:
            await asyncio.sleep(interval)
            if not self.enabled:
                continue
            try:
                await self.backend.heartbeat(self.local_info())
                if self.config.memory_sync.strategy == "master_slave":
                    await self._elect_primary()
                held = [(e.task.task_id, e.task.attempt) for e in self._running.values() if not e.lost]
                if held:
                    kept = await self.backend.renew(self.node_id, held, lease)
                    for task_id, _ in held:
                        if task_id not in kept:
                            self._lose(task_id, "lease lost (the task was re-routed)")
                self._backend_ok(True)
            except BackendError as exc:
                self._backend_ok(False, str(exc))
                self._problem("backend_errors", str(exc))

    def _lose(self, task_id: str, why: str) -> None:
        entry = self._running.get(task_id)
        if entry is None or entry.lost:
            return
        entry.lost = True
        self._problem("tasks_lost", f"task {task_id} attempt {entry.task.attempt}: {why}")
        if entry.job:
            entry.job.cancel()

    async def _cancel_loop(self) -> None:
        """Stop running tasks whose cancel was asked for (woken at once; polled while work runs)."""
        while not self._closing:
            await self._wait_wake(TOPIC_CANCEL, 1.0)
            if not self._running:
                continue
            try:
                asked = await self.backend.cancel_requests(self.node_id)
            except BackendError as exc:
                self._problem("backend_errors", str(exc))
                continue
            for task_id, attempt in asked:
                entry = self._running.get(task_id)
                if entry and entry.task.attempt == attempt and not entry.cancelled and entry.job:
                    entry.cancelled = True
                    entry.job.cancel()

    async def cancel_task(self, task_id: str) -> dict[str, str]:
        """Cancel a task and every subtask under it; returns what happened to each."""
        ids = [task_id] + [t.task_id for t in await self._descendants(task_id)]
        outcomes = await self.backend.cancel(ids)
        if outcomes[0] == "missing":
            raise TaskNotFound(f"no task {task_id} in the mesh", task_id=task_id)
        return dict(zip(ids, outcomes, strict=True))

    async def _descendants(self, task_id: str) -> list[Task]:
        out: list[Task] = []
        frontier = [task_id]
        while frontier and len(out) < 10_000:
            children = []
            for parent in frontier:
                children += await self.backend.list_tasks(parent_id=parent, limit=10_000)
            out += children
            frontier = [c.task_id for c in children]
        return out

    async def task_tree(self, task_id: str) -> dict[str, Any]:
        """The task and its subtasks, nested: ``{"task": Task, "children": [...]}``."""
        root = await self.get_task(task_id)

        async def grow(task: Task, depth: int) -> dict[str, Any]:
            kids = await self.backend.list_tasks(parent_id=task.task_id, limit=10_000) if depth < 32 else []
            return {"task": task, "children": [await grow(k, depth + 1) for k in kids]}
        return await grow(root, 0)

    async def retry_task(self, task_id: str) -> str:
        """Replay a dead-lettered, failed or cancelled task as a new attempt; returns where it went."""
        task = await self.get_task(task_id)
        if task.status not in (TaskStatus.DEAD_LETTER, TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise UsageError(f"task {task_id} is {task.status.value}; only dead_letter, failed or cancelled "
                             "tasks can be retried")
        if not self.table.active():
            await self._refresh_view()
        try:
            decision = self._route(task, set())
            node_id, node_name, why = decision.node_id, decision.node_name, f"replayed; {decision.why}"
        except NoCapacity as exc:
            node_id, node_name, why = None, None, f"replayed; waiting: {exc.message}"
        if not await self.backend.replay(task_id, node_id, node_name, why):
            raise UsageError(f"task {task_id} changed state meanwhile; not replayed")
        return node_name or "pending"

    # -- executing tasks --------------------------------------------------------------
    def register_handler(self, task_type: str, fn: Callable[..., Any], capabilities: Iterable[str] = ()) -> None:
        """Serve ``task_type`` on this node; peers learn it with the next heartbeat."""
        if self.profile is not None and self.profile.disable_execution:
            raise UsageError(f"{self.name} is planning_only with disable_execution: it runs no {task_type!r}",
                             hint="set node_configs.planning_only.disable_execution: false to allow it")
        self.handlers.add(make_spec(task_type, fn, capabilities))

    async def _claim_loop(self) -> None:
        lease = self.config.node_timeout_seconds
        poll = CLAIM_POLL_SECONDS
        while not self._closing:
            await self._wait_wake(TOPIC_TASKS, poll)
            poll = CLAIM_POLL_SECONDS
            if not self._accepting:
                continue
            free = self.config.concurrency - len(self._running)
            if free <= 0:
                continue
            try:
                tasks = await self.backend.claim(self.node_id, free, lease)
                self._backend_ok(True)
            except BackendError as exc:
                self._backend_ok(False, str(exc))
                self._problem("backend_errors", str(exc))
                continue
            for task in tasks:
                entry = _Running(task)
                self._running[task.task_id] = entry
                entry.job = asyncio.get_running_loop().create_task(self._execute(entry))
            if len(tasks) == free:
                self._wake[TOPIC_TASKS].set()
            if not tasks:
                with contextlib.suppress(BackendError):
                    when = await self.backend.next_due(self.node_id)
                    if when is not None:
                        poll = min(CLAIM_POLL_SECONDS, max(0.001, when - time.time()))

    async def _execute(self, entry: _Running) -> None:
        task = entry.task
        spec = self.handlers.get(task.task_type)
        if self.events.wants_routine():
            self._publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status="running",
                                      node_id=self.node_id, node_name=self.name, attempt=task.attempt))
        started = time.monotonic()
        error: str | None = None
        frame: bytes | None = None
        timeout = task.timeout_s or self.config.task_timeout_seconds
        key = self.config.security.api_key
        try:
            if key and not verify(key, task.signature, *task_parts(task)):
                entry.refused = True
                why = "not signed with this mesh's api_key" if not task.signature else "its signature does not match"
                self._problem("unsigned_tasks", f"task {task.task_id} ({task.task_type}) from "
                                                f"{(task.submitter_id or '?')[:12]} refused: {why}")
                raise PermissionError(f"refused by {self.name}: {why}")
            if spec is None:
                raise UnknownTaskType(f"node {self.name} has no handler for {task.task_type!r}")
            args = (task.payload, TaskContext(task, self)) if spec.takes_context else (task.payload,)
            async with asyncio.timeout(timeout):
                if spec.is_async:
                    result = await spec.fn(*args)
                else:
                    result = await asyncio.to_thread(spec.fn, *args)
            frame = codec.encode(result, self.limits)
        except asyncio.CancelledError:
            if entry.lost:
                self._running.pop(task.task_id, None)
                return
            if not entry.cancelled:
                raise
            error = "cancelled while running"
        except TimeoutError:
            error = f"timed out after {timeout:g} s"
        except CodecError as exc:
            error = f"result cannot be stored: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            await self._record_until_stored(entry, frame, error, time.monotonic() - started)
        finally:
            self._running.pop(task.task_id, None)
            self._wake[TOPIC_TASKS].set()

    async def _record_until_stored(self, entry: _Running, frame: bytes | None, error: str | None,
                                   seconds: float) -> None:
        """Record the outcome, holding it and retrying while the backend is away.

        If the lease lapses meanwhile the task is re-run elsewhere and this
        late result is refused by fencing: execution is at-least-once,
        recording stays exactly-once.
        """
        delay = 0.1
        while True:
            try:
                await self._record(entry, frame, error, seconds)
                return
            except BackendError as exc:
                self._backend_ok(False, str(exc))
                self._problem("backend_errors", f"result of {entry.task.task_id} held until the backend returns: "
                                                f"{exc}")
                if self._closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _record(self, entry: _Running, frame: bytes | None, error: str | None, seconds: float) -> None:
        task = entry.task
        if not entry.refused:  # a refused task says nothing about how well this node does the work
            self._stats.setdefault(task.task_type, AffinityStats()).observe(error is None, seconds)
        first = self._done + self._failed == 0
        self._latency_ms = seconds * 1000 if first else self._latency_ms + 0.1 * (seconds * 1000 - self._latency_ms)
        if entry.cancelled:
            ok = (await self.backend.complete([Completion(task.task_id, task.attempt, self.node_id,
                                                          TaskStatus.CANCELLED, None, error)]))[0]
            status = "cancelled"
        elif error is None:
            self._done += 1
            ok = (await self.backend.complete([Completion(task.task_id, task.attempt, self.node_id,
                                                          TaskStatus.SUCCEEDED, frame)]))[0]
            status = "succeeded"
        else:
            self._failed += 1
            if entry.refused:  # every node with the key would refuse it too: no retry
                move = Reassignment(task.task_id, task.attempt, self.node_id, None, None, "refused: unsigned",
                                    error=error, count_failure=True, final_status=TaskStatus.FAILED)
                status = TaskStatus.FAILED.value
            elif isinstance(decision := after_failure(task, self.retry_policy, time.time(), self._rng), DeadLetter):
                final = TaskStatus.DEAD_LETTER if self.retry_policy.enabled else TaskStatus.FAILED
                move = Reassignment(task.task_id, task.attempt, self.node_id, None, None, decision.reason,
                                    error=error, count_failure=True, final_status=final)
                status = final.value
            else:
                move = self._move(task, bump=True, exclude={self.node_id}, error=error, count_failure=True,
                                  not_before=decision.not_before)
                status = "retry"
            ok = (await self.backend.move([move]))[0]
        if not ok:
            self._problem("stale_results", f"result of task {task.task_id} attempt {task.attempt} refused: "
                                           "the task moved on (fencing)")
            return
        if self.events.wants_routine():
            self._publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status=status,
                                      node_id=self.node_id, node_name=self.name, attempt=task.attempt, error=error))

    # -- submitting and waiting -------------------------------------------------------
    async def submit_task(self, task_type: str, payload: Any = None, *,
                          priority: TaskPriority | str | int = TaskPriority.NORMAL,
                          preferred_node_types: Iterable[NodeType | str] = (),
                          required_capabilities: Iterable[str] = (), timeout_s: float | None = None,
                          context: dict[str, Any] | None = None, task_id: str | None = None,
                          max_retries: int | None = None, queue: bool = False) -> str:
        """Route and store one task; returns its id. Raises UnknownTaskType or NoCapacity.

        With ``queue`` a task no node can take now waits in the bounded mesh-wide
        pending list (``max_pending_tasks``) and is routed as soon as a node frees up.
        """
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        task_id = task_id or uuid.uuid4().hex
        context = dict(context or {})
        context.setdefault("trace_id", task_id)
        task = Task(task_id=task_id, task_type=task_type, payload=payload, priority=TaskPriority.parse(priority),
                    preferred_node_types=tuple(NodeType(p) for p in preferred_node_types),
                    required_capabilities=frozenset(required_capabilities), timeout_s=timeout_s, context=context,
                    submitter_id=self.node_id, submitted_at=time.time(),
                    max_retries=self.config.task_distribution.max_task_retries if max_retries is None else max_retries)
        task.encoded_payload(self.limits)  # refuse an oversized or unencodable payload before routing
        if self.config.security.api_key:
            task.signature = sign(self.config.security.api_key, *task_parts(task))
        # Tracked before it is stored, so a result that lands at once is matched (see _results_loop).
        tracked = len(self._own) < OWN_TRACK_LIMIT
        if tracked:
            self._own[task_id] = task
            self._waiter_generation += 1
            self._wake[TOPIC_RESULTS].set()
        try:
            return await self._enqueue_routed(task, set(), queue=queue)
        except BaseException:
            if tracked:
                self._own.pop(task_id, None)
            raise

    async def _enqueue_routed(self, task: Task, exclude: set[str], *, queue: bool = False) -> str:
        """Route ``task`` (never to ``exclude``) and store it; backpressure as in ``submit_task``."""
        task_id, task_type = task.task_id, task.task_type
        if not self._workers and not self.table.active():
            await self._refresh_view()
        exclude = set(exclude)
        fixed = set(exclude)
        refreshed = False
        for _ in range(8):
            try:
                decision = self._route(task, exclude)
            except UnknownTaskType:
                if exclude:
                    raise NoCapacity(f"every node that can run {task_type!r} is full", task_id=task_id) from None
                raise
            except NoCapacity:
                if refreshed or time.monotonic() - self._view_at < VIEW_FRESH_SECONDS:
                    if queue:
                        return await self._enqueue_pending(task)
                    raise
                # The local count of queued work may be stale: look at the mesh once before refusing.
                await self._refresh_view()
                refreshed = True
                exclude = set(fixed)
                continue
            capacity = decision.capacity or self.config.max_capacity
            accepted = (await self.backend.enqueue([Assignment(task, decision.node_id, decision.node_name,
                                                               decision.why, capacity)]))[0]
            if accepted:
                self._view.queued[decision.node_id] = self._view.queued.get(decision.node_id, 0) + 1
                if self.events.wants_routine():
                    self._publish(TaskUpdated(task_id=task_id, task_type=task_type, status="assigned",
                                              node_id=decision.node_id, node_name=decision.node_name, why=decision.why))
                return task_id
            exclude.add(decision.node_id)
            self._view.queued[decision.node_id] = capacity
        raise NoCapacity(f"no node accepted task type {task_type!r}", task_id=task_id)

    async def _enqueue_pending(self, task: Task) -> str:
        limit = self.config.max_pending_tasks
        pending = Assignment(task, None, None, "waiting: every able node is full", limit)
        if not (await self.backend.enqueue([pending]))[0]:
            raise NoCapacity(f"every node is full and the mesh-wide pending list holds {limit} tasks",
                             task_id=task.task_id, hint="retry later or raise max_pending_tasks")
        self._publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status="pending",
                                  why=pending.why))
        return task.task_id

    async def get_task(self, task_id: str) -> Task:
        found = await self.backend.get_tasks([task_id])
        if not found:
            raise TaskNotFound(f"no task {task_id} in the mesh", task_id=task_id)
        return found[0]

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is final and return it (whatever its final status)."""
        task = self._recent.pop(task_id, None)
        if task is not None:
            return await self._with_attempts(task)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Task] = loop.create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        self._waiter_generation += 1
        self._wake[TOPIC_RESULTS].set()
        try:
            if task_id not in self._own:
                # Registered before this check, so a result landing now is seen by one or the other.
                state = (await self.backend.task_states([task_id])).get(task_id)
                if state is None:
                    raise TaskNotFound(f"no task {task_id} in the mesh", task_id=task_id)
                if state.is_final:
                    return await self.get_task(task_id)
            async with asyncio.timeout(timeout):
                task = await fut
            return await self._with_attempts(task)
        except TimeoutError:
            raise TaskTimeout(f"task {task_id} did not finish within {timeout:g} s", task_id=task_id) from None
        finally:
            waiters = self._waiters.get(task_id, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(task_id, None)

    async def _with_attempts(self, task: Task) -> Task:
        """A failed, cancelled or retried task is read again, with every attempt and its error."""
        if task.status is not TaskStatus.SUCCEEDED or task.attempt > 1:
            return await self.get_task(task.task_id)
        return task

    async def wait_for(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; raises TaskFailed (failed, dead letter, cancelled) or TaskTimeout."""
        task = await self.wait_task(task_id, timeout)
        if task.status is TaskStatus.SUCCEEDED:
            return task.result
        errors = [a.error for a in task.attempts if a.error] or ([task.error] if task.error else [])
        raise TaskFailed(f"task {task_id} {task.status.value}: {task.error or 'no error recorded'}",
                         task_id=task_id, status=task.status.value, errors=errors)

    async def _results_loop(self) -> None:
        """Answer waiters from this node's result feed; own submissions need no read of the task.

        On a backend with ``blocking_results`` the read itself waits for the next
        entry; otherwise a TOPIC_RESULTS wake-up (or the poll) starts each read.
        """
        blocking = self.backend.blocking_results
        last_sweep = 0.0
        delay = 0.1
        while not self._closing:
            if not blocking or not (self._waiters or self._own):
                await self._wait_wake(TOPIC_RESULTS, RESULTS_POLL_SECONDS)
            try:
                if not (self._waiters or self._own):
                    # Nobody waits: skip ahead. A later waiter checks its task's state when it registers;
                    # one that registered (or a submit) during this read keeps the old cursor: nothing skipped.
                    generation = self._waiter_generation
                    _, head = await self.backend.finished_for(self.node_id, None)
                    if generation == self._waiter_generation:
                        self._finished_cursor = head
                    continue
                done, self._finished_cursor = await self.backend.finished_for(
                    self.node_id, self._finished_cursor, RESULTS_POLL_SECONDS if blocking else 0.0)
                ready = self._settle(done)
                if time.monotonic() - last_sweep >= RESULTS_POLL_SECONDS:
                    last_sweep = time.monotonic()
                    ready += await self._sweep_waiters(ready)
                if ready:
                    for task in await self.backend.get_tasks(ready, with_attempts=False):
                        for fut in self._waiters.get(task.task_id, []):
                            if not fut.done():
                                fut.set_result(task)
                delay = 0.1
            except BackendError as exc:
                self._problem("backend_errors", str(exc))
                if blocking:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    def _settle(self, done: list[Finished]) -> list[str]:
        """Hand finished own tasks to their waiters (or keep them for one); ids that need a read."""
        fetch = []
        for f in done:
            task = self._own.pop(f.task_id, None)
            if task is None or not f.complete:
                if f.task_id in self._waiters:
                    fetch.append(f.task_id)
                continue
            task.status, task.attempt, task.node_id, task.node_name = f.status, f.attempt, f.node_id, f.node_name
            task.finished_at, task.result, task.error = f.finished_at, f.result, f.error
            waiters = self._waiters.get(f.task_id)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(task)
            else:
                self._recent[f.task_id] = task
                if len(self._recent) > RECENT_KEEP:
                    self._recent.popitem(last=False)
        return fetch

    async def _sweep_waiters(self, ready: list[str]) -> list[str]:
        """The periodic check behind the feed: waiters on tasks someone else submitted (a replay,
        another client), and own tasks whose feed entry never came (trimmed, lost in an outage)."""
        now = time.time()
        stale: list[str] = []
        for task_id, task in self._own.items():  # oldest first
            if now - task.submitted_at < OWN_STALE_SECONDS or len(stale) >= 500:
                break
            stale.append(task_id)
        wanted = [i for i in self._waiters if i not in ready and i not in self._own]
        states = await self.backend.task_states(list(dict.fromkeys(wanted + stale)))
        for task_id in stale:
            state = states.get(task_id)
            kept = self._own.pop(task_id, None)
            if kept is not None and state is not None and not state.is_final:
                self._own[task_id] = kept  # still running: to the back, so the next sweep looks at others
            elif task_id in self._waiters:
                wanted.append(task_id)  # final (or gone): its waiter is answered by a read
        return [i for i in dict.fromkeys(wanted) if (st := states.get(i)) is not None and st.is_final]

    # -- memory -----------------------------------------------------------------------
    def _build_ranking(self) -> Ranking:
        nodes = [(m.info.node_id, m.info.name, m.info.node_type.value) for m in self.table.members()]
        if self.identity and self.profile:
            nodes.append((self.node_id, self.name, self.profile.node_type.value))
        return Ranking.from_order(self.config.memory_sync.source_priority, nodes)

    async def sync_memory_item(self, memory_type: str, memory_data: Any, priority: int = 5,
                               key: str | None = None, *, tombstone: bool = False) -> str:
        """Write a fact to the local replica and push it to the mesh; returns its key.

        The write has seen every version this replica holds, so it settles any
        conflict on the key (a write is also how a person resolves one).
        """
        assert self.replica is not None
        key = key or f"{memory_type}:{uuid.uuid4().hex[:12]}"
        if self.config.memory_sync.strategy == "master_slave":
            primary = await self._current_primary() if self.is_worker else None
            if primary != self.node_id:
                await self._forward_write(primary, memory_type, memory_data, priority, key, tombstone)
                return key
        if not self.is_worker:
            await self._catch_up_key(memory_type, key)
        siblings, sources = self.replica.state(memory_type, key)
        draft = MemoryItem(memory_type, key, memory_data, {}, self.hlc.now(), self.node_id, priority, tombstone)
        await self._write_local(local_write(sources or siblings, draft, self.node_id), "local write", siblings)
        return key

    async def sync_memory_items(self, memory_type: str, values: Mapping[str, Any], priority: int = 5) -> list[str]:
        """Write many facts of one type at once (key → value): one replica commit and one publish for all.

        All or nothing here: a value that cannot be stored stops the batch before any of it is kept.
        Under ``strong`` and ``master_slave`` each is written as ``sync_memory_item`` would, in order.
        """
        assert self.replica is not None
        keys = list(values)
        if self.config.memory_sync.strategy in ("strong", "master_slave"):
            return [await self.sync_memory_item(memory_type, values[k], priority, k) for k in keys]
        if not self.is_worker:  # a client's replica is empty: learn what each key holds first
            self._apply_frames(await self.backend.memory_for_keys(memory_type, keys))
        stored = []
        with self.replica.batch():
            for key in keys:
                siblings, sources = self.replica.state(memory_type, key)
                draft = MemoryItem(memory_type, key, values[key], {}, self.hlc.now(), self.node_id, priority, False)
                item = local_write(sources or siblings, draft, self.node_id)
                stored.append((item, self._store_local(item, "local write", siblings)))
        if stored:
            await self._ship(stored, "local write")
        return keys

    # -- master_slave: one primary orders every write ---------------------------------------------
    async def _elect_primary(self) -> None:
        """The configured primary if it is alive, else whoever holds the lease (taken when it lapses)."""
        named = self.config.memory_sync.primary
        if named:
            if named == self.name:
                self._primary = self.node_id
            else:
                self._primary = next((m.info.node_id for m in self.table.members()
                                      if m.info.name == named and m.status is NodeStatus.ACTIVE), None)
            return
        self._primary = await self.backend.hold_lease("memory-primary", self.node_id,
                                                      self.config.node_timeout_seconds)

    async def _current_primary(self) -> str:
        deadline = time.monotonic() + 3 * self.config.node_timeout_seconds
        while True:
            alive = self._primary == self.node_id or self.table.status_of(self._primary or "") is NodeStatus.ACTIVE
            if self._primary and alive:
                return self._primary
            if time.monotonic() > deadline:
                raise SyncTimeout("no memory primary is alive (master_slave)", missing=["primary"])
            await self._elect_primary()
            if not (self._primary == self.node_id or self.table.status_of(self._primary or "") is
                    NodeStatus.ACTIVE):
                await asyncio.sleep(min(0.2, self.config.heartbeat_interval_seconds))

    async def _forward_write(self, primary: str | None, memory_type: str, value: Any, priority: int, key: str,
                             tombstone: bool) -> None:
        """Hand a write to the primary (or, from a client, to any node, which forwards it) and wait for it."""
        exclude = set() if primary is None else {m.info.node_id for m in self.table.members()} - {primary}
        payload = {"memory_type": memory_type, "value": value, "priority": priority, "key": key,
                   "tombstone": tombstone}
        task = Task(task_id=uuid.uuid4().hex, task_type=FORWARD_WRITE, payload=payload, submitter_id=self.node_id,
                    submitted_at=time.time(), max_retries=20, context={})
        await self._enqueue_routed(task, exclude)
        await self.wait_for(task.task_id, timeout=6 * self.config.node_timeout_seconds)
        if self.is_worker:
            await self.sync_now()  # read your own write

    async def _apply_forwarded_write(self, payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        key = await self.sync_memory_item(payload["memory_type"], payload["value"], payload.get("priority", 5),
                                          key=payload["key"], tombstone=bool(payload.get("tombstone")))
        return {"key": key, "primary": self._primary}

    async def _write_local(self, item: MemoryItem, why: str, siblings: list[MemoryItem] | None = None) -> None:
        frame = self._store_local(item, why, siblings)
        position = await self._ship([(item, frame)], why)
        if self.config.memory_sync.strategy == "strong":
            await self._await_applied(item.key, position)

    def _store_local(self, item: MemoryItem, why: str, siblings: list[MemoryItem] | None = None) -> bytes:
        """Make ``item`` this replica's state of its key; returns its frame for the mesh.

        ``siblings``: the key's visible items if the caller has just read them (else they are read here)."""
        assert self.replica is not None
        frame = self._frame_of(item)
        if len(frame) > self.config.memory_sync.max_item_bytes:
            raise codec.FrameTooLarge(f"memory item {item.key!r} is {len(frame)} bytes, over max_item_bytes "
                                      f"{self.config.memory_sync.max_item_bytes}")
        self.hlc.update(item.hlc)
        if siblings is None:
            siblings = self.replica.siblings(item.memory_type, item.key)
        # The clock is saved on sync and stop; after a crash it restarts above the replica's newest stamp.
        self.replica.replace_siblings(item.memory_type, item.key, (item,), tuple(siblings), why, sources=(item,))
        for conflict_id in self.replica.close_conflicts(item.memory_type, item.key, why):
            self._publish(ConflictResolved(conflict_id=conflict_id, key=item.key, choice=why))
        return frame

    async def _ship(self, stored: list[tuple[MemoryItem, bytes]], why: str) -> Any:
        """Publish locally stored writes in one go; kept in the outbox (in order) while the backend is away."""
        assert self.replica is not None
        try:
            if self.replica.has_outgoing():
                raise BackendError("earlier writes are still queued")  # keep the order of this node's writes
            gossip = self.config.memory_sync.strategy == "peer_to_peer"
            position = await self.backend.publish_memory(
                self.node_id, [(item.memory_type, item.key, frame) for item, frame in stored], broadcast=not gossip)
            if gossip:
                await self._gossip()
        except BackendError as exc:
            # Accepted locally; delivered in order when the backend is back.
            for item, frame in stored:
                self.replica.queue_outgoing(item.memory_type, item.key, frame)
            self._backend_ok(False, str(exc))
            self._wake[TOPIC_MEMORY].set()
            position = None
        if self.events.wants_routine():
            for item, _ in stored:
                self._publish(MemoryChanged(memory_type=item.memory_type, key=item.key, origin=self.node_id,
                                            outcome="local", strategy=why))
        return position

    async def _await_applied(self, key: str, position: Any) -> None:
        """Strong writes: return once every active node has applied ``position``; else say who did not."""
        deadline = time.monotonic() + self.config.memory_sync.strong_timeout_seconds
        while True:
            peers = {m.info.node_id: m.info.name for m in self.table.members()
                     if m.status is NodeStatus.ACTIVE and m.info.node_id != self.node_id}
            if position is not None:
                acks = await self.backend.memory_acks()
                peers = {n: name for n, name in peers.items() if not self.backend.cursor_reached(acks.get(n), position)}
            if not peers:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(peers.values()))
                raise SyncTimeout(f"write to {key!r} not applied within "
                                  f"{self.config.memory_sync.strong_timeout_seconds:g} s by: {names}",
                                  missing=sorted(peers.values()))
            await asyncio.sleep(0.005)

    def _frame_of(self, item: MemoryItem) -> bytes:
        """One memory item as it travels: the wire form, signed when the mesh has an api_key."""
        wire = item_to_wire(item)
        if self.config.security.api_key:
            wire["s"] = sign(self.config.security.api_key, *memory_parts(wire))
        return codec.encode(wire, self.limits)

    def _apply_frame(self, frame: bytes) -> bool:
        assert self.replica is not None
        try:
            wire = codec.decode(frame, self.limits)
            item = item_from_wire(wire)
        except CodecError as exc:
            self._problem("corrupt_memory_frames", f"memory frame refused: {exc}")
            return False
        if item.origin == self.node_id:
            return False
        key = self.config.security.api_key
        if key and not verify(key, wire.get("s"), *memory_parts(wire)):
            self._problem("unsigned_memory_frames", f"memory write to {item.memory_type}/{item.key} from "
                                                    f"{item.origin[:12]} refused: not signed with this mesh's api_key")
            return False
        self.hlc.update(item.hlc)
        strategy = self.config.conflict_strategy_for(item.memory_type)
        siblings, sources = self.replica.state(item.memory_type, item.key)
        result = apply_remote(siblings, item, strategy, ranking=self._ranking, sources=sources,
                              sibling_warning=SIBLING_WARNING)
        if result.outcome == "ignored":
            return False
        self.replica.replace_siblings(item.memory_type, item.key, result.siblings, result.losers, result.strategy,
                                      sources=result.sources or None, fresh=not siblings and not sources)
        self._track_conflict(item, result)
        if result.warning:
            self._problem("sibling_warnings", f"{item.memory_type}/{item.key}: {result.warning}")
        if self.events.wants_routine():
            self._publish(MemoryChanged(memory_type=item.memory_type, key=item.key, origin=item.origin,
                                        outcome=result.outcome, strategy=result.strategy))
        return True

    def _track_conflict(self, item: MemoryItem, result: Resolution) -> None:
        """Open (or close) the key's conflict record; its id is the same on every replica."""
        assert self.replica is not None
        if not result.conflict:
            for conflict_id in self.replica.close_conflicts(item.memory_type, item.key, "superseded"):
                self._publish(ConflictResolved(conflict_id=conflict_id, key=item.key, choice="superseded"))
            return
        marks = sorted((s.origin, s.vv.get(s.origin, 0)) for s in result.siblings)
        digest = hashlib.sha1(repr((item.memory_type, item.key, marks)).encode()).hexdigest()[:16]
        for conflict_id in self.replica.close_conflicts(item.memory_type, item.key, "superseded", keep=digest):
            self._publish(ConflictResolved(conflict_id=conflict_id, key=item.key, choice="superseded"))
        if self.replica.open_conflict(digest, item.memory_type, item.key, result.strategy, result.reason,
                                      tuple(result.disagreements)):
            self._publish(ConflictOpened(conflict_id=digest, memory_type=item.memory_type, key=item.key,
                                         nodes=tuple(s.origin for s in result.siblings), strategy=result.strategy))

    def conflicts(self) -> list[Conflict]:
        """Open conflicts in this replica, each with its siblings."""
        assert self.replica is not None
        out = []
        for c in self.replica.conflicts():
            siblings = tuple(self.replica.siblings(c["memory_type"], c["key"]))
            reason = c["reason"] or ""
            if c["disagreements"]:
                reason += f" (disagree at {', '.join(c['disagreements'])})"
            out.append(Conflict(c["conflict_id"], c["memory_type"], c["key"], siblings, c["strategy"],
                                c["opened_at"], reason))
        return out

    async def resolve_conflict(self, conflict_id: str, choice: str | Any) -> MemoryItem:
        """Settle a conflict: ``keep-local``, ``keep-remote``, ``merge``, or a new value.

        The result is a new version whose vector dominates every sibling, so it
        wins on every replica without opening a new conflict.
        """
        found = [c for c in self.conflicts() if c.conflict_id == conflict_id or c.conflict_id.startswith(conflict_id)]
        if len(found) != 1:
            raise UsageError(f"no open conflict {conflict_id!r}" if not found else f"{conflict_id!r} is ambiguous")
        conflict = found[0]
        siblings = list(conflict.siblings)
        mine = local_sibling(siblings, self.node_id)
        if choice == "keep-local":
            value = mine.value
        elif choice == "keep-remote":
            others = [s for s in siblings if s is not mine]
            if len(others) != 1:
                raise UsageError(f"keep-remote needs exactly one remote sibling; this conflict has {len(others)}",
                                 hint="resolve with a value instead")
            value = others[0].value
        elif choice == "merge":
            merged = merge_items(siblings)
            if not merged.ok:
                raise UsageError(f"the siblings disagree at {', '.join(merged.disagreements)}; cannot merge",
                                 hint="keep one side or give a new value")
            value = merged.value
        else:
            value = choice
        item = resolve_manually(siblings, value, self.node_id, self.hlc.now())
        await self._write_local(item, f"resolved: {choice if isinstance(choice, str) else 'new value'}")
        return item

    async def forget(self, key: str, memory_type: str | None = None) -> None:
        """Delete a fact everywhere (a tombstone version that dominates what this replica has seen)."""
        found = await self.recall_item(key, memory_type)
        await self.sync_memory_item(found.memory_type, None, key=key, tombstone=True)

    def history(self, key: str, memory_type: str | None = None) -> list[dict[str, Any]]:
        """Values this key held before (replaced or lost a conflict), newest first."""
        assert self.replica is not None
        types = [memory_type] if memory_type else sorted({mt for mt, k, _ in self.replica.keys(key) if k == key})
        out = []
        for mt in types:
            out += [{"memory_type": mt, **h} for h in self.replica.history(mt, key)]
        return sorted(out, key=lambda h: -h["version"])

    async def rollback(self, key: str, version: int, memory_type: str | None = None) -> MemoryItem:
        """Write an old value from the history back as a new version (which wins everywhere)."""
        entry = next((h for h in self.history(key, memory_type) if h["version"] == version), None)
        if entry is None:
            raise UsageError(f"{key!r} has no history version {version}", hint="see /mesh_history KEY")
        await self.sync_memory_item(entry["memory_type"], entry["value"], key=key)
        assert self.replica is not None
        return local_sibling(self.replica.siblings(entry["memory_type"], key), self.node_id)

    async def _catch_up_key(self, memory_type: str | None, key: str) -> None:
        self._apply_frames(await self.backend.memory_for_key(memory_type, key))

    def _apply_frames(self, frames: list[bytes]) -> int:
        """Apply pulled entries (a bucket, a key's newest) in one replica commit; returns how many changed it."""
        assert self.replica is not None
        if not frames:
            return 0
        with self.replica.batch():
            return sum(self._apply_frame(frame) for frame in frames)

    async def sync_now(self) -> dict[str, int]:
        """Pull every memory entry not yet applied here; returns what moved."""
        assert self.replica is not None
        applied = seen = 0
        if not self._bootstrapped or await self._behind_horizon():
            applied += await self._bootstrap_memory()
        batch = max(500, self.config.memory_sync.max_sync_batch_size)
        while True:
            frames, cursor = await self.backend.read_memory(self._memory_cursor, batch)
            if frames:
                with self.replica.batch():  # the items, the cursor and the clock in one commit
                    for frame in frames:
                        seen += 1
                        applied += self._apply_frame(frame)
                    self._memory_cursor = cursor
                    self.replica.set_meta("memory_cursor", str(cursor or 0))
                    self.replica.set_meta("hlc", str(self.hlc.last))
            if len(frames) < batch:
                break
        # strong writers wait for acks: answer at once; otherwise they only feed compaction (see _ack_memory)
        await self._ack_memory(force=self.config.memory_sync.strategy == "strong")
        return {"seen": seen, "applied": applied}

    async def _ack_memory(self, *, force: bool = False) -> None:
        """Tell the mesh how far this node has applied the memory stream, at most every ACK_EVERY_SECONDS."""
        if not self.is_worker or self._memory_cursor is None or self._memory_cursor == self._acked_cursor:
            return
        if not force and time.monotonic() - self._acked_at < ACK_EVERY_SECONDS:
            return
        await self.backend.ack_memory(self.node_id, self._memory_cursor)
        self._acked_cursor, self._acked_at = self._memory_cursor, time.monotonic()

    async def _behind_horizon(self) -> bool:
        """True when compaction dropped stream entries this replica never read (it was away): checked at the
        first sync and then every few seconds, so a returning node need not wait for anti-entropy."""
        if time.monotonic() - self._horizon_checked_at < HORIZON_CHECK_SECONDS:
            return False
        self._horizon_checked_at = time.monotonic()
        horizon = await self.backend.memory_horizon()
        return horizon is not None and not self.backend.cursor_reached(self._memory_cursor, horizon)

    async def _bootstrap_memory(self) -> int:
        """A replica that never synced starts from every key's newest entries, then reads the stream:
        the stream's older entries may be compacted away (``compact_memory``)."""
        assert self.replica is not None
        applied = 0
        for bucket in range(BUCKETS):
            applied += self._apply_frames(await self.backend.memory_bucket(bucket))
        self.replica.set_meta("memory_bootstrapped", "1")
        self._bootstrapped = True
        return applied

    async def _gossip(self) -> None:
        """peer_to_peer: wake a few random active peers; each that learns something relays the same way."""
        peers = [m.info.node_id for m in self.table.members()
                 if m.status is NodeStatus.ACTIVE and m.info.node_id != self.node_id]
        chosen = self._rng.sample(peers, min(len(peers), self.config.memory_sync.gossip_fanout))
        if chosen:
            self.counters["gossip_sent"] += len(chosen)
            await self.backend.wake(chosen, TOPIC_MEMORY)

    async def flush_outbox(self) -> int:
        """Deliver memory writes queued while the backend was away; returns how many went out."""
        assert self.replica is not None
        sent = 0
        while batch := self.replica.outgoing(self.config.memory_sync.max_sync_batch_size):
            await self.backend.publish_memory(self.node_id, [(mt, key, frame) for _, mt, key, frame in batch])
            self.replica.delivered(batch[-1][0])
            sent += len(batch)
        return sent

    async def anti_entropy(self) -> dict[str, int]:
        """Compare bucket digests with every active node; pull what differs, re-send our own writes there.

        Repairs whatever the stream did not deliver: a refused (corrupted) entry,
        a write lost by the medium, a replica that was restored from an old copy.
        """
        assert self.replica is not None
        mine = digests(self.replica.frontier_marks())
        await self.backend.put_digests(self.node_id, mine)
        active = {m.info.node_id for m in self.table.members() if m.status is NodeStatus.ACTIVE}
        buckets: set[int] = set()
        for node_id, theirs in (await self.backend.peer_digests()).items():
            if node_id != self.node_id and node_id in active:
                buckets |= differing(mine, theirs)
        applied = resent = 0
        for bucket in sorted(buckets):
            applied += self._apply_frames(await self.backend.memory_bucket(bucket))
            own = [s for s in self.replica.own_sources(self.node_id) if bucket_of(s.memory_type, s.key) == bucket]
            if own:
                await self.backend.publish_memory(self.node_id, [(s.memory_type, s.key, self._frame_of(s))
                                                                  for s in own])
                resent += len(own)
        if buckets:
            await self.backend.put_digests(self.node_id, digests(self.replica.frontier_marks()))
        return {"buckets": len(buckets), "applied": applied, "resent": resent}

    async def _memory_loop(self) -> None:
        last_round = time.monotonic()
        while not self._closing:
            # Wake-ups make this immediate; the short poll covers a missed one.
            await self._wait_wake(TOPIC_MEMORY, min(1.0, self.config.sync_interval_seconds))
            if not self.config.memory_sync.enabled:
                continue
            try:
                if await self.flush_outbox():
                    self._backend_ok(True)
                moved = await self.sync_now()
                await self._ack_memory()  # a deferred ack goes out even when nothing new arrives
                if moved["applied"] and self.config.memory_sync.strategy == "peer_to_peer":
                    await self._gossip()  # pass on what was new here; a node that learned nothing stays quiet
                if time.monotonic() - last_round >= self.config.sync_interval_seconds:
                    last_round = time.monotonic()
                    moved = await self.anti_entropy()
                    if moved["applied"] or moved["resent"]:
                        self.counters["anti_entropy_repairs"] += moved["applied"] + moved["resent"]
            except BackendError as exc:
                self._problem("backend_errors", str(exc))

    async def recall_item(self, key: str, memory_type: str | None = None) -> Recollection:
        assert self.replica is not None
        if not self.is_worker:
            await self._catch_up_key(memory_type, key)
        siblings = [s for s in self.replica.find(key, memory_type) if not s.tombstone]
        if not siblings:
            raise MemoryNotFound(f"no memory item {key!r}" + (f" of type {memory_type!r}" if memory_type else ""))
        local = local_sibling(siblings, self.node_id)
        return Recollection(key, local.memory_type, local.value, tuple(siblings) if len(siblings) > 1 else (),
                            local.origin, local.hlc)

    async def recall(self, key: str, memory_type: str | None = None) -> Any:
        """The value of ``key`` (the local sibling when in conflict; see ``recall_item``)."""
        return (await self.recall_item(key, memory_type)).value

    # -- views for commands -----------------------------------------------------------------
    async def mesh_view(self) -> dict[str, Any]:
        """The mesh as this node sees it now: nodes with judged status, task counts."""
        snap = await self._refresh_view()
        counts = await self.backend.task_counts()
        return {"snapshot": snap, "members": self.table.members(), "task_counts": counts}


    # -- the front door: what the CLI, the commands, the cockpit and the handlers read ---------------
    def members(self) -> list[Member]:
        """Every known worker node with the status this node judges it to have."""
        return self.table.members()

    def status_of(self, node_id: str) -> NodeStatus | None:
        """The judged status of one node (None when it is not known here)."""
        return self.table.status_of(node_id)

    @property
    def incarnation(self) -> int:
        return self.identity.incarnation if self.identity else 0

    @property
    def notes(self) -> tuple[str, ...]:
        """What this node's type wants an operator to know (e.g. a missing optional package)."""
        return tuple(self.profile.notes) if self.profile else ()

    @property
    def memory_primary(self) -> str | None:
        """master_slave: the node id of the memory primary as last elected here."""
        return self._primary

    def backend_info(self) -> dict[str, Any]:
        """What the status block shows about the medium: its name, where it is, its own counters."""
        return self.backend.describe()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100) -> list[Task]:
        """Most recent tasks in the mesh first, optionally of one status."""
        return await self.backend.list_tasks(status, limit)

    async def task_counts(self) -> dict[str, int]:
        """Tasks per status across the whole mesh."""
        return await self.backend.task_counts()

    def memory_count(self) -> int:
        """Items in this node's replica."""
        return self.replica.count() if self.replica else 0

    def memory_keys(self, pattern: str = "*") -> list[tuple[str, str, int]]:
        """``(memory_type, key, siblings)`` of the keys in this replica matching a glob ``pattern``."""
        return list(self.replica.keys(pattern)) if self.replica else []

    async def catch_up(self, key: str, memory_type: str | None = None) -> None:
        """Bring one key of this replica up to date with the mesh now (a client's replica starts empty)."""
        await self._catch_up_key(memory_type, key)
