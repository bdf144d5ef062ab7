"""AgentMeshManager: one node's lifecycle and the public API.

The work is done by the node's services (``mesh_core/node/``): membership,
tasks, the worker, results, memory, memory sync and the master_slave primary.
This class starts and stops them and is the one front door the CLI, the
commands, the cockpit and the handlers use.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from .backends import Caller, choose_backend
from .backends.contracts import TOPIC_TASKS, Backend
from .config import MeshConfig
from .errors import UsageError
from .events import Event
from .handlers import load_plugins, make_spec
from .identity import acquire, ephemeral
from .membership import Member
from .metrics_server import MetricsServer
from .model import (
    Conflict,
    MemoryItem,
    NodeInfo,
    NodeRole,
    NodeStatus,
    NodeType,
    Recollection,
    Task,
    TaskPriority,
    TaskStatus,
)
from .node.memory import NO_VALUE
from .node.services import NodeServices
from .nodes import create_specialized_node
from .observe import watch_loop

__all__ = ["AgentMeshManager", "Recollection"]

log = logging.getLogger("mesh")


class AgentMeshManager:
    """One node of the mesh. ``async with AgentMeshManager(config) as mesh: ...``"""

    def __init__(self, config: MeshConfig | None = None, *, role: NodeRole = NodeRole.WORKER,
                 backend: Backend | None = None) -> None:
        self.config = config or MeshConfig()
        self.role = role
        self.services = NodeServices(self.config, role, backend, self)
        self._ctx = self.services.ctx
        self.events = self._ctx.events
        self.counters = self._ctx.counters
        self._stopping = False
        self._metrics: MetricsServer | None = None

    # -- who this node is ------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self._ctx.node_id

    @property
    def name(self) -> str:
        return self._ctx.name

    @property
    def is_worker(self) -> bool:
        return self._ctx.is_worker

    @property
    def incarnation(self) -> int:
        return self._ctx.identity.incarnation if self._ctx.identity else 0

    @property
    def enabled(self) -> bool:
        return self._ctx.enabled

    @property
    def healthy(self) -> bool:
        """False while the medium is unreachable, a loop is down after a failure (see ``loops()``) or this node's
        clock is off the mesh's (see ``clock_offset``)."""
        return self._ctx.healthy and self._ctx.loops_ok and self.clock_offset is None

    @property
    def clock_offset(self) -> float | None:
        """Seconds this node's wall clock is off the medium's (+: ahead) while that is past
        ``max_clock_offset_seconds``: its memory writes are refused meanwhile. None while within bounds."""
        return self.services.members.clock_offset

    @property
    def backend_healthy(self) -> bool:
        """False while the medium is unreachable (the node keeps working locally and catches up)."""
        return self._ctx.healthy

    def loops(self) -> list[dict[str, Any]]:
        """Each supervised loop: ``name``, ``state`` (running, restarting, dead, stopped), ``restarts``,
        ``last_error`` (one line) and ``since`` (wall-clock time of its last state change)."""
        return [health.as_dict() for health in self._ctx.loop_health()]

    @property
    def started_at(self) -> float:
        return self._ctx.started_at

    @property
    def notes(self) -> tuple[str, ...]:
        """What this node's type wants an operator to know (e.g. a missing optional package)."""
        return tuple(self._ctx.profile.notes) if self._ctx.profile else ()

    @property
    def backend_name(self) -> str:
        return self._ctx.backend.name

    @property
    def backend_reason(self) -> str:
        """Which medium this node uses and why (``hybrid`` says what it chose)."""
        return self._ctx.backend_reason

    def backend_info(self) -> dict[str, Any]:
        """What the status block shows about the medium: its name, where it is, its own counters."""
        return self._ctx.backend.describe()

    def backend_counters(self) -> dict[str, int]:
        """Every counter of the medium (``backend_info`` shows the ones an operator looks at first): refusals of a
        peer's input counted each time, pushes dropped, catch-ups, tasks resubmitted or taken over, ..."""
        return dict(self._ctx.backend.counters) if self._ctx.has_backend else {}

    async def stop_process(self) -> None:
        """Stop this process (SIGSTOP) at a moment it holds nothing the other nodes wait for, and return once it is
        continued: what a terminal's Ctrl-Z should do. A process stopped inside a write to a shared SQLite file
        would freeze every node on it (``mesh_core.backends.sqlite.locks``)."""
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            # To this thread, not the process: a process-wide SIGSTOP may be taken by another thread while this one
            # goes on to the write queued behind it and is stopped inside that. Sent here, it stops this thread
            # before it returns, and with it the process.
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        try:
            await self._ctx.backend.at_rest(stop)
        except Exception as exc:  # a Ctrl-Z stops the process whatever the medium does (e.g. not open yet)
            if not stopped:
                log.warning("stopping without waiting for the medium to be at rest: %s", exc)
                stop()

    def local_info(self) -> NodeInfo:
        """This node's record as its next heartbeat will publish it."""
        return self.services.members.local_info()

    def metrics(self) -> dict[str, Any]:
        return self.services.members.metrics()

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of this node's ``/metrics`` endpoint as bound; None when ``metrics.port`` is unset."""
        return self._metrics.address if self._metrics is not None else None

    async def _bind_metrics(self) -> None:
        cfg = self.config.metrics
        if cfg.port is None:
            return
        from .metrics import CONTENT_TYPE, NodeMetrics  # prometheus_client is loaded only when metrics are on

        metrics = NodeMetrics(self)
        self.services.worker.outcome_hooks.append(metrics.observe)
        self._metrics = MetricsServer(cfg.host, cfg.port, metrics.render, metrics.gather, CONTENT_TYPE)
        await self._metrics.bind()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def __aenter__(self) -> AgentMeshManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        ctx, s, cfg = self._ctx, self.services, self.config
        ctx.started_at = time.time()
        ctx.identity = acquire(cfg.state_dir, cfg.node_name) if self.is_worker else ephemeral(cfg.node_name or "cli")
        try:
            await self._bind_metrics()
            ctx.profile = profile = create_specialized_node(cfg.node_type, cfg)
            if self.is_worker:
                for spec in profile.handlers:
                    ctx.handlers.add(spec)
                # A planning_only node with disable_execution serves its planning types and nothing else.
                for spec in load_plugins(cfg.handlers) if not profile.disable_execution else ():
                    ctx.handlers.add(spec)
            s.memory.open(ctx.identity.replica_path)
            s.sync.open()
            if not ctx.has_backend:
                ctx.use_backend(*await choose_backend(cfg, ctx.limits, Caller(
                    ctx.identity.node_id, ctx.identity.name, ctx.identity.incarnation, client=not self.is_worker)))
            await ctx.backend.open(self.local_info())
            await s.results.open()
            await s.members.refresh()
            if cfg.enabled and self.is_worker:
                await self.enable(rejoin=False)
        except BaseException:
            await self._teardown()
            raise
        s.spawn_loops()
        if self._metrics is not None:
            await self._metrics.serve()
        if self.is_worker and profile.on_start is not None:
            await profile.on_start(self)

    def watch_tasks(self) -> None:
        """Observe the whole mesh's tasks: publish ``TaskUpdated`` for every task that changes anywhere (a
        supervised ``watch`` loop reading the newest tasks; see ``mesh_core.observe``). For a client that only
        watches (``mesh-tui --observe``, ``mesh-tui events``): a worker publishes its own tasks already."""
        self._ctx.spawn(("watch", watch_loop(self._ctx, self.publish)))

    async def stop(self, *, graceful: bool = True) -> None:
        """Leave gracefully: running tasks get the grace period, then are handed back.

        ``graceful=False`` stops the way kill -9 would: no leave, nothing handed back, leases left to lapse.
        """
        if self._stopping:
            return
        self._stopping = True
        try:
            if not graceful:
                self._ctx.closing = True
                self.services.worker.abandon()
            elif self.enabled and self._ctx.has_backend:
                await self.disable()
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        ctx, s = self._ctx, self.services
        if ctx.profile is not None and ctx.profile.on_stop is not None:
            with contextlib.suppress(Exception):
                await ctx.profile.on_stop(self)
        if self._metrics is not None:
            await self._metrics.stop()
        await ctx.stop_loops()
        s.results.cancel_all()
        if ctx.has_backend:
            with contextlib.suppress(Exception):
                await ctx.backend.close()
        s.memory.close()
        if ctx.identity is not None:
            ctx.identity.release()
        ctx.events.close()

    async def enable(self, *, rejoin: bool = True) -> None:
        """Join (or rejoin, as a new incarnation) and start taking work."""
        ctx, s = self._ctx, self.services
        if ctx.enabled:
            return
        if rejoin and ctx.identity is not None:
            ctx.identity.bump()
        ctx.enabled = True
        s.worker.open_to_work(self.is_worker)
        await s.members.heartbeat()
        await s.members.refresh()
        ctx.wake(TOPIC_TASKS)

    async def disable(self) -> None:
        """Stop taking work, let running tasks finish within the grace period, hand back the rest, leave."""
        ctx, s = self._ctx, self.services
        if not ctx.enabled:
            return
        await s.worker.drain(self.config.shutdown_grace_seconds)
        try:
            await s.tasks.hand_back()
        finally:
            ctx.enabled = False
            await s.members.leave()

    # -- events -------------------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Publish an event to this node's subscribers (node types use it for their own events)."""
        self._ctx.publish(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        async for event in self.events.subscribe():
            yield event

    async def subscribe_batches(self, *, routine: bool = True) -> AsyncIterator[list[Event]]:
        """Events in bursts: whatever was published since the last batch, in order (without the
        per-task and per-item ones when ``routine`` is False)."""
        async for batch in self.events.subscribe_batches(routine=routine):
            yield batch

    # -- the mesh -------------------------------------------------------------------------------------------
    def members(self) -> list[Member]:
        """Every known worker node with the status this node judges it to have."""
        return self.services.members.members()

    def status_of(self, node_id: str) -> NodeStatus | None:
        """The judged status of one node (None when it is not known here)."""
        return self.services.members.status_of(node_id)

    def skewed(self) -> dict[str, float]:
        """Nodes flagged as having a clock ahead past ``max_clock_offset_seconds``: node id → seconds ahead."""
        return self.services.members.skewed()

    async def mesh_view(self) -> dict[str, Any]:
        """The mesh as this node sees it now: nodes with judged status, task counts."""
        snap = await self.services.members.refresh()
        counts = await self.task_counts()
        return {"snapshot": snap, "members": self.members(), "task_counts": counts}

    # -- tasks ------------------------------------------------------------------------------------------------
    def register_handler(self, task_type: str, fn: Callable[..., Any], capabilities: Iterable[str] = ()) -> None:
        """Serve ``task_type`` on this node; peers learn it with the next heartbeat."""
        profile = self._ctx.profile
        if profile is not None and profile.disable_execution:
            raise UsageError(f"{self.name} is planning_only with disable_execution: it runs no {task_type!r}",
                             hint="set node_configs.planning_only.disable_execution: false to allow it")
        self._ctx.handlers.add(make_spec(task_type, fn, capabilities))

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
        return await self.services.tasks.submit(
            task_type, payload, priority=priority, preferred_node_types=preferred_node_types,
            required_capabilities=required_capabilities, timeout_s=timeout_s, context=context, task_id=task_id,
            max_retries=max_retries, queue=queue)

    async def run_task(self, task_type: str, payload: Any = None, *, timeout: float | None = None,
                       **options: Any) -> Task:
        """``submit_task`` then ``wait_task``: the task once it is final (whatever its final status). ``options``
        are ``submit_task``'s; ``timeout`` bounds the wait (TaskTimeout).

        The medium knows the caller waits for the outcome: on grpc_mesh the owner that runs the task itself may
        answer the submission with its outcome when it ends within a second, so its backup gets one copy of the
        task instead of two (see ``owner.AWAITED_COPY_WINDOW``)."""
        task_id = await self.services.tasks.submit(task_type, payload, awaited=True, **options)
        return await self.services.results.wait_task(task_id, timeout)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is final and return it (whatever its final status)."""
        return await self.services.results.wait_task(task_id, timeout)

    async def wait_for(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; raises TaskFailed (failed, dead letter, cancelled) or TaskTimeout."""
        return await self.services.results.wait_for(task_id, timeout)

    async def get_task(self, task_id: str) -> Task:
        """The task with its attempts; raises TaskNotFound."""
        return await self.services.results.get_task(task_id)

    async def get_tasks(self, task_ids: Iterable[str]) -> list[Task]:
        """Many tasks by id, with their attempts (ids not in the mesh are left out)."""
        return await self._ctx.backend.get_tasks(list(task_ids))

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100) -> list[Task]:
        """Most recent tasks in the mesh first, optionally of one status."""
        return await self._ctx.backend.list_tasks(status, limit)

    async def task_counts(self) -> dict[str, int]:
        """Tasks per status across the whole mesh."""
        return await self._ctx.backend.task_counts()

    async def cancel_task(self, task_id: str) -> dict[str, str]:
        """Cancel a task and every subtask under it; returns what happened to each."""
        return await self.services.tasks.cancel(task_id)

    async def retry_task(self, task_id: str) -> str:
        """Replay a dead-lettered, failed or cancelled task as a new attempt; returns where it went."""
        return await self.services.tasks.retry(task_id)

    async def task_tree(self, task_id: str) -> dict[str, Any]:
        """The task and its subtasks, nested: ``{"task": Task, "children": [...]}``."""
        return await self.services.tasks.tree(task_id)

    async def prune_tasks(self) -> int:
        """Delete finished tasks past the retention limits (the sweeping node does this every few seconds)."""
        return await self.services.tasks.prune()

    def running_tasks(self) -> list[Task]:
        """Tasks whose handler runs on this node now (not those whose outcome is being recorded)."""
        return [entry.task for entry in self.services.worker.running.values() if not entry.recording]

    # -- memory ----------------------------------------------------------------------------------------------------
    async def sync_memory_item(self, memory_type: str, memory_data: Any, priority: int = 5,
                               key: str | None = None, *, tombstone: bool = False) -> str:
        """Write a fact to the local replica and push it to the mesh; returns its key.

        The write has seen every version this replica holds, so it settles any
        conflict on the key (a write is also how a person resolves one).
        It returns only once the medium has stored it (or, while the medium is away, once a
        worker node has committed it to its outbox file); a refusal (disk full, read-only file,
        medium unreachable from a client) raises ``BackendError``.
        """
        return await self.services.memory.write(memory_type, memory_data, priority, key, tombstone=tombstone)

    async def sync_memory_items(self, memory_type: str, values: Mapping[str, Any], priority: int = 5) -> list[str]:
        """Write many facts of one type at once (key → value): one replica commit and one publish for all.

        All or nothing here: a value that cannot be stored stops the batch before any of it is kept.
        Under ``strong`` and ``master_slave`` each is written as ``sync_memory_item`` would, in order.
        """
        return await self.services.memory.write_many(memory_type, values, priority)

    async def recall_item(self, key: str, memory_type: str | None = None) -> Recollection:
        """The value of ``key`` with every concurrent sibling when in conflict; raises MemoryNotFound."""
        return await self.services.memory.recall_item(key, memory_type)

    async def recall(self, key: str, memory_type: str | None = None) -> Any:
        """The value of ``key`` (the local sibling when in conflict; see ``recall_item``)."""
        return (await self.recall_item(key, memory_type)).value

    async def forget(self, key: str, memory_type: str | None = None) -> None:
        """Delete a fact everywhere (a tombstone version that dominates what this replica has seen)."""
        await self.services.memory.forget(key, memory_type)

    async def history(self, key: str, memory_type: str | None = None) -> list[dict[str, Any]]:
        """The key's earlier versions, newest first, read from the medium: the same on every replica and client.
        ``index`` 1 is the version just before the current one; ``version`` is the version's id (its stamp)."""
        return await self.services.memory.history(key, memory_type)

    async def rollback(self, key: str, version: int | str, memory_type: str | None = None) -> MemoryItem:
        """Write an earlier value back as a new version (which wins everywhere); ``version`` is an index in
        ``history`` or a version id."""
        return await self.services.memory.rollback(key, version, memory_type)

    def conflicts(self) -> list[Conflict]:
        """Open conflicts in this replica, each with its siblings."""
        return self.services.memory.conflicts()

    async def resolve_conflict(self, conflict_id: str, choice: str | Any = None, *,
                               value: Any = NO_VALUE) -> MemoryItem:
        """Settle a conflict: ``keep-local``, ``keep-remote``, ``merge``, or a new ``value=``.

        (A ``choice`` that is not one of the three words is taken as the new value.) The result is a new
        version whose vector dominates every sibling, so it wins on every replica without opening a new conflict.
        """
        return await self.services.memory.resolve_conflict(conflict_id, choice, value=value)

    async def sync_now(self) -> dict[str, int]:
        """Pull every memory entry not yet applied here; returns what moved."""
        return await self.services.sync.sync_now()

    async def anti_entropy(self) -> dict[str, int]:
        """Compare digests with every active node and repair what differs; returns what moved."""
        return await self.services.sync.anti_entropy()

    async def flush_outbox(self) -> int:
        """Deliver memory writes queued while the medium was away; returns how many went out."""
        return await self.services.sync.flush_outbox()

    async def compact_memory(self) -> int:
        """Drop memory log entries every live node (active or suspect) has applied (the sweeping node does this by
        itself)."""
        return await self.services.sync.compact()

    async def catch_up(self, key: str, memory_type: str | None = None) -> None:
        """Bring one key of this replica up to date with the mesh now (a client's replica starts empty)."""
        await self.services.memory.catch_up(key, memory_type)

    def memory_count(self) -> int:
        """Items in this node's replica."""
        return self.services.memory.count()

    def memory_keys(self, pattern: str = "*") -> list[tuple[str, str, int]]:
        """``(memory_type, key, siblings)`` of the keys in this replica matching a glob ``pattern``."""
        return self.services.memory.keys(pattern)

    @property
    def memory_primary(self) -> str | None:
        """master_slave: the node id of the memory primary as last elected here."""
        return self.services.primary.node_id
