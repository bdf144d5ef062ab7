"""The worker: claim the tasks assigned here, run their handlers, hold their leases, record each outcome.

Execution is at-least-once; recording is exactly-once because every record
is fenced by the attempt number (a late result from an old attempt is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import codec
from ..backends.contracts import TOPIC_CANCEL, TOPIC_TASKS, Completion, Reassignment, TaskTransport
from ..errors import BackendError, CodecError, UnknownTaskType
from ..events import TaskUpdated
from ..handlers import NodePort, TaskContext
from ..model import Task, TaskProgress, TaskStatus
from ..routing import AffinityStats
from ..tasks import DeadLetter, RetryPolicy, after_failure
from .context import NodeContext
from .tasks import TaskService

CLAIM_POLL_SECONDS = 0.5  # the claim loop's safety net when a wake-up is missed
CANCEL_POLL_SECONDS = 1.0  # running tasks' cancel requests are looked for at least this often
RECORD_RETRY_MAX_SECONDS = 2.0  # the longest pause between attempts to record an outcome while the medium is away
LATENCY_SMOOTHING = 0.1  # weight of the newest task in the average response time
# Tasks whose handler ended may wait for their outcome to be recorded (on grpc_mesh, a round trip to the backup
# peer) without holding a handler's slot: up to this many per slot, and this many bytes of results in all.
# Holding the slot left handlers idle: on grpc_mesh at 1,024 in flight every one of the 64 slots was recording;
# without it, tasks/s rose 6-35 % at 1,024 in flight and 3-19 % at 256 (bench tasks --backend grpc, bench/README).
RECORDING_PER_SLOT = 4
RECORDING_BYTES = 64 * 1024 * 1024


@dataclass
class Running:
    task: Task
    job: asyncio.Task[None] | None = None
    lost: bool = False
    cancelled: bool = False
    refused: bool = False  # not signed with the mesh's api_key: never run, failed without retry
    recording: bool = False  # its outcome is being recorded: fencing decides now, a renewal no longer does
    committed: bool = False  # the handler passed its point of no return (TaskContext.commit): a cancel waits
    started: float = field(default_factory=time.monotonic)
    progress: TaskProgress | None = None  # the handler's latest report, not yet carried by a renewal

    def report(self, progress: TaskProgress) -> None:
        """Keep the latest report; the next renewal carries it (a handler may report often, it costs no write)."""
        self.progress = progress

    def commit(self) -> bool:
        """The handler's point of no return: True unless a cancel was asked first (see TaskContext.commit)."""
        if self.cancelled:
            return False
        self.committed = True
        return True

    @property
    def stoppable(self) -> bool:
        """A cancel may still stop it: neither past its point of no return nor with its outcome being recorded
        (cancelling a recording would lose an outcome that was decided)."""
        return not (self.cancelled or self.committed or self.recording)


class Worker:
    """Runs the work assigned to this node, ``config.concurrency`` tasks at a time."""

    def __init__(self, ctx: NodeContext, tasks: TaskService, port: NodePort) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self.port = port
        td = ctx.config.task_distribution
        self.retry_policy = RetryPolicy(td.retry_failed_tasks, td.max_task_retries, td.retry_backoff_seconds,
                                        td.retry_backoff_max_seconds)
        self.accepting = False
        self.running: dict[str, Running] = {}
        self._recording = 0  # entries of ``running`` whose handler ended and whose outcome is being recorded
        self._recording_bytes = 0  # … and the size of their results
        # Whether work may be waiting that the last claim left (it took as many as it had room for, or a wake-up
        # came while every slot was taken): a finished task then wakes the claim loop. Otherwise the next task
        # brings its own wake-up, and a claim after every finished task would only find nothing (at idle, the
        # next submission's write queued behind that empty claim).
        self._more_waiting = False
        self._stats: dict[str, AffinityStats] = {}  # task type -> this node's smoothed success and latency
        self._done = 0
        self._failed = 0
        self._latency_ms = 0.0
        # Called with (task, outcome, handler seconds) once an attempt's outcome is recorded (metrics observe it).
        self.outcome_hooks: list[Callable[[Task, str, float], None]] = []

    @property
    def transport(self) -> TaskTransport:
        return self.ctx.backend

    def metrics(self) -> dict[str, Any]:
        """What this node's heartbeat says about the work it did (routers read the affinity)."""
        finished = self._done + self._failed
        return {
            "tasks_done": self._done, "tasks_failed": self._failed,
            "error_rate": (self._failed / finished) if finished else 0.0,
            "avg_response_ms": round(self._latency_ms, 2),
            "affinity": {k: [round(v.success, 3), round(v.latency_s, 4), v.samples] for k, v in self._stats.items()},
        }

    # -- leases and cancels ------------------------------------------------------------------------
    async def renew_leases(self) -> None:
        """Extend the leases of running tasks; stop working on any the medium says was taken away."""
        entries = [e for e in self.running.values() if not (e.lost or e.recording)]
        if entries:
            held = [(e.task.task_id, e.task.attempt) for e in entries]
            progress = self._take_progress(entries)
            try:
                kept = await self.transport.renew(self.ctx.node_id, held, self.ctx.timings.task_lease_s,
                                                  progress or None)
            except BaseException:
                self._give_back_progress(entries, progress)  # the next renewal carries them
                raise
            for task_id, _ in held:
                if task_id not in kept:
                    self._lose(task_id, "lease lost (the task was re-routed)")

    @staticmethod
    def _take_progress(entries: list[Running]) -> dict[str, TaskProgress]:
        taken = {}
        for e in entries:
            if e.progress is not None:
                taken[e.task.task_id], e.progress = e.progress, None
        return taken

    @staticmethod
    def _give_back_progress(entries: list[Running], taken: dict[str, TaskProgress]) -> None:
        for e in entries:
            if e.progress is None and e.task.task_id in taken:
                e.progress = taken[e.task.task_id]

    async def _flush_progress(self, entry: Running) -> None:
        """A report the handler made since the last renewal, stored before the outcome (so the finished task
        keeps the last progress): one renewal of this lease, only when such a report waits."""
        progress = self._take_progress([entry])
        if progress and not entry.lost:
            with contextlib.suppress(BackendError):
                await self.transport.renew(self.ctx.node_id, [(entry.task.task_id, entry.task.attempt)],
                                           self.ctx.timings.task_lease_s, progress)

    def _lose(self, task_id: str, why: str) -> None:
        entry = self.running.get(task_id)
        if entry is None or entry.lost or entry.recording:
            return  # a renewal that crossed the outcome on its way (it is no longer held because it ended)
        entry.lost = True
        self.ctx.problem("tasks_lost", f"task {task_id} attempt {entry.task.attempt}: {why}")
        if entry.job:
            entry.job.cancel()

    async def cancel_loop(self) -> None:
        """Stop running tasks whose cancel was asked for (woken at once; polled while work runs)."""
        ctx = self.ctx
        while not ctx.closing:
            await ctx.wait_wake(TOPIC_CANCEL, CANCEL_POLL_SECONDS)
            if not self.running:
                continue
            try:
                asked = await self.transport.cancel_requests(ctx.node_id)
            except BackendError as exc:
                ctx.problem("backend_errors", str(exc))
                continue
            for task_id, attempt in asked:
                entry = self.running.get(task_id)
                if entry and entry.task.attempt == attempt and entry.stoppable and entry.job:
                    entry.cancelled = True
                    entry.job.cancel()

    async def drain(self, grace_seconds: float) -> None:
        """Stop taking work; give running tasks ``grace_seconds`` to finish, then stop them (handed back)."""
        self.accepting = False
        deadline = time.monotonic() + grace_seconds
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.abandon()
        for entry in list(self.running.values()):
            if entry.job:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await entry.job

    def abandon(self) -> None:
        """Stop every running task at once and record nothing (a crash: their leases lapse and they re-route)."""
        self.accepting = False
        for entry in list(self.running.values()):
            entry.lost = True
            if entry.job:
                entry.job.cancel()

    # -- claiming and running ---------------------------------------------------------------------------
    async def claim_loop(self) -> None:
        ctx = self.ctx
        poll = CLAIM_POLL_SECONDS
        while not ctx.closing:
            await ctx.wait_wake(TOPIC_TASKS, poll)
            poll = CLAIM_POLL_SECONDS
            if not self.accepting or ctx.cut_off:  # cut off: its work is the others' to re-route
                continue
            free = self._free()
            if free <= 0:
                self._more_waiting = True
                continue
            try:
                tasks = await self.transport.claim(ctx.node_id, free, ctx.timings.task_lease_s)
                ctx.backend_ok(True)
            except BackendError as exc:
                ctx.backend_ok(False, str(exc))
                ctx.problem("backend_errors", str(exc))
                continue
            self._start(tasks)
            self._more_waiting = len(tasks) == free
            if self._more_waiting:
                ctx.wake(TOPIC_TASKS)
            if not tasks:
                with contextlib.suppress(BackendError):
                    when = await self.transport.next_due(ctx.node_id)
                    if when is not None:
                        poll = min(CLAIM_POLL_SECONDS, max(0.001, when))

    def open_to_work(self, accepting: bool) -> None:
        """Take work from now on (``accepting``; a client takes none), tasks started here at enqueue as soon as
        their wake-up is read."""
        self.accepting = accepting
        self.transport.on_started(self._take_started)

    def _take_started(self) -> bool:
        """Tasks the medium started here at enqueue, as their wake-up is read: run at once when this worker takes
        work and has a free slot (the medium granted them against the slots its last claim said were free), else
        left to the claim loop (False), which the wake-up then wakes."""
        if not self.accepting or self.ctx.cut_off or self._free() <= 0:
            return False
        self._start(self.transport.take_started())
        return True

    def _free(self) -> int:
        """Slots free for more work: ``concurrency`` handlers run at a time; a task whose handler ended and whose
        outcome is being recorded holds no handler's slot, up to ``RECORDING_PER_SLOT`` such tasks a slot and
        ``RECORDING_BYTES`` of their results (past either, it holds its slot until recorded, as every task did)."""
        slots = self.ctx.config.concurrency
        if self._recording_bytes > RECORDING_BYTES:
            return slots - len(self.running)
        return min(slots - self.executing, slots * (1 + RECORDING_PER_SLOT) - len(self.running))

    @property
    def executing(self) -> int:
        """Tasks whose handler runs now (``running`` less those whose outcome is being recorded)."""
        return len(self.running) - self._recording

    def _start(self, tasks: list[Task]) -> None:
        for task in tasks:
            entry = Running(task)
            self.running[task.task_id] = entry
            entry.job = asyncio.get_running_loop().create_task(self._execute(entry))

    async def _execute(self, entry: Running) -> None:
        ctx = self.ctx
        task = entry.task
        spec = ctx.handlers.get(task.task_type)
        if ctx.events.wants_routine():
            ctx.publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status="running",
                                    node_id=ctx.node_id, node_name=ctx.name, attempt=task.attempt))
        started = time.monotonic()
        error: str | None = None
        frame: bytes | None = None
        timeout = task.timeout_s or ctx.config.task_timeout_seconds
        members = self.tasks.members
        try:
            if members.worth_looking_up(task.submitter_id):  # a submitter that joined since the last view
                with contextlib.suppress(BackendError):
                    await members.learn()
            why = members.distrust_task(task)
            if why:
                entry.refused = True
                members.refuse("tasks", task.submitter_id or "?", f"task {task.task_id} ({task.task_type}) from "
                                                                  f"{(task.submitter_id or '?')[:12]} refused: {why}")
                raise PermissionError(f"refused by {ctx.name}: {why}")
            if spec is None:
                raise UnknownTaskType(f"node {ctx.name} has no handler for {task.task_type!r}")
            args = (task.payload, TaskContext(task, self.port, lambda: entry.cancelled, entry.report,
                                              entry.commit)) if spec.takes_context else (task.payload,)
            async with asyncio.timeout(timeout):
                if spec.is_async:
                    result = await spec.fn(*args)
                else:
                    result = await asyncio.to_thread(spec.fn, *args)
            frame = codec.encode(result, ctx.limits)
        except asyncio.CancelledError:
            if entry.lost:
                self.running.pop(task.task_id, None)
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
        # Its handler's slot is free now (see ``_free``): a slow record (a backup's copy on grpc_mesh) keeps no
        # handler idle. A claim loop that found every slot taken is woken to fill it.
        entry.recording = True
        size = len(frame) if frame else 0
        self._recording += 1
        self._recording_bytes += size
        if self._more_waiting:
            ctx.wake(TOPIC_TASKS)
        try:
            await self._flush_progress(entry)
            await self._record_until_stored(entry, frame, error, time.monotonic() - started)
        finally:
            self._recording -= 1
            self._recording_bytes -= size
            self.running.pop(task.task_id, None)
            if self._more_waiting:
                ctx.wake(TOPIC_TASKS)

    async def _record_until_stored(self, entry: Running, frame: bytes | None, error: str | None,
                                   seconds: float) -> None:
        """Record the outcome, holding it and retrying while the medium is away.

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
                self.ctx.backend_ok(False, str(exc))
                self.ctx.problem("backend_errors", f"result of {entry.task.task_id} held until the backend returns: "
                                                   f"{exc}")
                if self.ctx.closing:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)

    def _observe(self, entry: Running, ok: bool, seconds: float) -> None:
        if not entry.refused:  # a refused task says nothing about how well this node does the work
            self._stats.setdefault(entry.task.task_type, AffinityStats()).observe(ok, seconds)
        ms = seconds * 1000
        first = self._done + self._failed == 0
        self._latency_ms = ms if first else self._latency_ms + LATENCY_SMOOTHING * (ms - self._latency_ms)

    async def _record(self, entry: Running, frame: bytes | None, error: str | None, seconds: float) -> None:
        ctx = self.ctx
        task = entry.task
        self._observe(entry, error is None, seconds)
        if entry.cancelled:
            ok = (await self.transport.complete([Completion(task.task_id, task.attempt, ctx.node_id,
                                                            TaskStatus.CANCELLED, None, error)]))[0]
            status = "cancelled"
        elif error is None:
            self._done += 1
            ok = (await self.transport.complete([Completion(task.task_id, task.attempt, ctx.node_id,
                                                            TaskStatus.SUCCEEDED, frame)]))[0]
            status = "succeeded"
        else:
            self._failed += 1
            move, status = self._after_failure(entry, error)
            ok = (await self.transport.move([move]))[0]
        for hook in self.outcome_hooks:
            hook(task, status if ok else "stale", seconds)
        if not ok:
            ctx.problem("stale_results", f"result of task {task.task_id} attempt {task.attempt} refused: "
                                         "the task moved on (fencing)")
            return
        if ctx.events.wants_routine():
            ctx.publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status=status,
                                    node_id=ctx.node_id, node_name=ctx.name, attempt=task.attempt, error=error))

    def _after_failure(self, entry: Running, error: str) -> tuple[Reassignment, str]:
        """The move a failed attempt leads to: refused for good, dead letter, or a retry elsewhere."""
        task, node_id = entry.task, self.ctx.node_id
        if entry.refused:  # every node with the key would refuse it too: no retry
            return Reassignment(task.task_id, task.attempt, node_id, None, None, "refused: unsigned", error=error,
                                count_failure=True, final_status=TaskStatus.FAILED), TaskStatus.FAILED.value
        decision = after_failure(task, self.retry_policy, self.ctx.rng)
        if isinstance(decision, DeadLetter):
            final = TaskStatus.DEAD_LETTER if self.retry_policy.enabled else TaskStatus.FAILED
            return Reassignment(task.task_id, task.attempt, node_id, None, None, decision.reason, error=error,
                                count_failure=True, final_status=final), final.value
        return self.tasks.move(task, bump=True, exclude={node_id}, error=error, count_failure=True,
                               delay=decision.delay), "retry"
