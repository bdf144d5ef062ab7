"""Tasks: submit and route, fenced moves, the sweep of stranded work, cancel, retry, trees, retention.

Routing decisions come from the pure ``mesh_core.routing``; retry decisions
from ``mesh_core.tasks``. The medium applies each decision as a fenced move.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .. import codec
from ..backends.contracts import Assignment, Enqueued, Reassignment, TaskTransport
from ..errors import MeshError, NoCapacity, TaskIdInUse, TaskNotFound, UnknownTaskType, UsageError
from ..events import TaskUpdated
from ..model import NodeInfo, NodeType, Task, TaskPriority, TaskStatus, new_task_id
from ..routing import RouteDecision, RouteRequest, route
from ..security import SUBMITTER_HOST, SUBMITTER_NAME, sign, task_parts
from ..tasks import classify_stranded
from .context import NodeContext
from .membership import MembershipService
from .results import Results

PRUNE_EVERY_SECONDS = 5.0  # how often the sweeping node applies task retention
PRUNE_BATCH = 5000  # tasks deleted per medium call
VIEW_FRESH_SECONDS = 0.05  # a refusal looks at the mesh again only if its view is older than this
TREE_DEPTH = 32  # subtask levels shown by task_tree
DESCENDANTS_LIMIT = 10_000  # subtasks cancelled with their parent, at most


def request_form(payload: Any) -> bytes:
    """A payload in a canonical form (mapping keys sorted): two equal requests give the same bytes."""
    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return value
    return codec.pack(canonical(payload))


class TaskService:
    """Where tasks go, and every move this node decides for them."""

    def __init__(self, ctx: NodeContext, members: MembershipService, results: Results) -> None:
        self.ctx = ctx
        self.members = members
        self.results = results
        self._rr: Counter[str] = Counter()
        self._host = socket.gethostname()

    @property
    def transport(self) -> TaskTransport:
        return self.ctx.backend

    # -- routing ---------------------------------------------------------------------------------
    def route(self, task: Task, exclude: set[str]) -> RouteDecision:
        try:
            decision = self._among(task, exclude, self.members.workers())
        except UnknownTaskType:
            # Only nodes restarting their claim loop can run it: it waits in one's queue, claimed when the loop is
            # back (a fraction of a second), rather than being refused as if no node had a handler.
            restarting = self.members.restarting_workers()
            if not restarting:
                raise
            decision = self._among(task, exclude, restarting)
        self._rr[task.task_type] += 1
        return decision

    def _among(self, task: Task, exclude: set[str], nodes: list[NodeInfo]) -> RouteDecision:
        req = RouteRequest(task.task_type, task.required_capabilities, task.preferred_node_types, frozenset(exclude))
        return route(req, nodes, self.members.view.queued,
                     algorithm=self.ctx.config.task_distribution.load_balancing_algorithm,
                     affinity=self.members.affinity, round_robin_counter=self._rr[task.task_type], rng=self.ctx.rng)

    def _a_suspect_could_run(self, task: Task) -> bool:
        """Whether a suspect node (not declared dead) has a handler for ``task`` and its capabilities."""
        try:
            self._among(task, set(), self.members.suspect_workers())
        except UnknownTaskType:
            return False
        except NoCapacity:
            pass  # able, only full
        return True

    def move(self, task: Task, *, bump: bool, exclude: set[str], error: str | None = None,
             count_failure: bool = False, delay: float = 0.0) -> Reassignment:
        """A fenced move of ``task`` to the best other node, or back to the mesh-wide pending list (held back
        ``delay`` seconds on the medium's clock)."""
        try:
            decision = self.route(task, exclude)
        except MeshError:
            try:
                decision = self.route(task, set())
            except MeshError as exc:
                return Reassignment(task.task_id, task.attempt, task.node_id, None, None, f"waiting: {exc.message}",
                                    delay=delay, bump_attempt=bump, error=error,
                                    count_failure=count_failure, final_status=TaskStatus.PENDING)
        self.members.note_queued(decision.node_id)
        return Reassignment(task.task_id, task.attempt, task.node_id, decision.node_id, decision.node_name,
                            decision.why, delay=delay, bump_attempt=bump, error=error,
                            count_failure=count_failure)

    # -- submitting --------------------------------------------------------------------------------
    async def submit(self, task_type: str, payload: Any = None, *,
                     priority: TaskPriority | str | int = TaskPriority.NORMAL,
                     preferred_node_types: Iterable[NodeType | str] = (),
                     required_capabilities: Iterable[str] = (), timeout_s: float | None = None,
                     context: dict[str, Any] | None = None, task_id: str | None = None,
                     max_retries: int | None = None, queue: bool = False, awaited: bool = False) -> str:
        """Route and store one task; returns its id (see ``AgentMeshManager.submit_task``). ``awaited``: the
        caller waits for its outcome next (``AgentMeshManager.run_task``)."""
        ctx = self.ctx
        if timeout_s is not None and timeout_s <= 0:
            raise UsageError(f"timeout_s must be a number above 0, not {timeout_s!r}")
        keyed = task_id is not None  # the caller's own id is an idempotency key
        task_id = task_id or new_task_id()
        context = dict(context or {})
        context.setdefault("trace_id", task_id)
        retries = ctx.config.task_distribution.max_task_retries if max_retries is None else max_retries
        task = Task(task_id=task_id, task_type=task_type, payload=payload, priority=TaskPriority.parse(priority),
                    preferred_node_types=tuple(NodeType(p) for p in preferred_node_types),
                    required_capabilities=frozenset(required_capabilities), timeout_s=timeout_s, context=context,
                    submitter_id=ctx.node_id, submitted_at=time.time(), max_retries=retries)
        task.encoded_payload(ctx.limits)  # refuse an oversized or unencodable payload before routing
        self.sign(task)
        # Tracked before it is stored, so a result that lands at once is matched (see Results.loop).
        tracked = self.results.track(task)
        try:
            try:
                outcome = await self.enqueue_routed(task, set(), queue=queue, awaited=awaited)
            except (NoCapacity, UnknownTaskType):
                if keyed and await self._stored_as(task) is not None:
                    outcome = Enqueued.EXISTS  # the same request again, while the mesh is full: the first answers
                else:
                    raise
            # An idempotency key already stored: the same request is answered by the first task (whose submitter
            # hears its result), another request under the same key is refused. Checked only then: no extra trip.
            if outcome is Enqueued.EXISTS and keyed:
                stored = await self._stored_as(task)
                if stored is not None and stored.submitter_id != ctx.node_id:
                    self.results.untrack(task_id)
            return task_id
        except BaseException:
            if tracked:
                self.results.untrack(task_id)
            raise

    async def _stored_as(self, task: Task) -> Task | None:
        """The stored task when ``task.task_id`` is stored as this very request (None when not stored); raises
        TaskIdInUse when it is stored as another (a different task type or payload). An idempotency key names
        one request, never two."""
        found = await self.transport.get_tasks([task.task_id], with_attempts=False)
        if not found:
            return None
        stored = found[0]
        mine = codec.decode(task.encoded_payload(self.ctx.limits), self.ctx.limits)
        if stored.task_type != task.task_type:
            differs = f"task type {stored.task_type!r}, not {task.task_type!r}"
        elif request_form(stored.payload) != request_form(mine):
            differs = "a different payload"
        else:
            return stored
        raise TaskIdInUse(f"task id {task.task_id} is already used by a task with {differs}", task_id=task.task_id,
                          hint="submit the same request again, or use a new --task-id")

    def sign(self, task: Task) -> None:
        """Name this node as the submitter of its own task (name and host: allowlists judge a submitter without a
        node record, a client, by them) and, with an api_key, sign what the worker acts on (``task_parts``)."""
        if task.signature:
            return
        if task.submitter_id == self.ctx.node_id:  # a context inherited from a parent names the parent's
            task.context = {**task.context, SUBMITTER_NAME: self.ctx.name, SUBMITTER_HOST: self._host}
        key = self.ctx.config.security.api_key
        if key:
            task.signature = sign(key, *task_parts(task))

    async def enqueue_routed(self, task: Task, exclude: set[str], *, queue: bool = False,
                             awaited: bool = False) -> Enqueued:
        """Route ``task`` (never to ``exclude``) and store it, signed; backpressure as in ``submit``. ``EXISTS``
        when its id was already stored (nothing changed). ``awaited``: see ``Assignment``."""
        self.sign(task)  # internal tasks (forwarded memory writes) too
        task_id, task_type = task.task_id, task.task_type
        if not self.members.workers():
            await self.members.refresh()
        exclude = set(exclude)
        fixed = set(exclude)
        refreshed = False
        for _ in range(8):
            try:
                decision = self.route(task, exclude)
            except UnknownTaskType:
                if exclude:
                    raise NoCapacity(f"every node that can run {task_type!r} is full", task_id=task_id) from None
                if not refreshed and not self.members.is_fresh(VIEW_FRESH_SECONDS):
                    await self.members.refresh()  # a node that can run it may have joined or come back since
                    refreshed = True
                    continue
                if self._a_suspect_could_run(task):
                    # Only nodes that missed heartbeats can run it (a loaded machine, a pause): it waits on the
                    # mesh-wide pending list, routed by the sweep when one is active again, rather than being
                    # refused as if no node had a handler (a suspect node's own queue: a gRPC node that does not
                    # answer cannot store it).
                    return await self._enqueue_pending(task, f"every node that can run {task_type!r} is suspect "
                                                             "(missed heartbeats)")
                raise
            except NoCapacity:
                if refreshed or self.members.is_fresh(VIEW_FRESH_SECONDS):
                    if queue:
                        return await self._enqueue_pending(task, "every able node is full")
                    raise
                # The local count of queued work may be stale: look at the mesh once before refusing.
                await self.members.refresh()
                refreshed = True
                exclude = set(fixed)
                continue
            capacity = decision.capacity or self.ctx.config.max_capacity
            # Counted before the store answers: a burst of submissions routed meanwhile sees this one (counted
            # after, every task of the burst went to the node the first one chose). The view's next read of the
            # medium sets the counts again, an id that already existed included.
            self.members.note_queued(decision.node_id)
            accepted = (await self.transport.enqueue([Assignment(task, decision.node_id, decision.node_name,
                                                                 decision.why, capacity, awaited=awaited)]))[0]
            if accepted is Enqueued.EXISTS:
                return accepted
            if accepted:
                if self.ctx.events.wants_routine():
                    self.ctx.publish(TaskUpdated(task_id=task_id, task_type=task_type, status="assigned",
                                                 node_id=decision.node_id, node_name=decision.node_name,
                                                 why=decision.why))
                return accepted
            exclude.add(decision.node_id)
            self.members.note_queued(decision.node_id, capacity)
        raise NoCapacity(f"no node accepted task type {task_type!r}", task_id=task_id)

    async def _enqueue_pending(self, task: Task, reason: str) -> Enqueued:
        """Put ``task`` on the mesh-wide pending list, waiting because of ``reason``."""
        limit = self.ctx.config.max_pending_tasks
        pending = Assignment(task, None, None, f"waiting: {reason}", limit)
        outcome = (await self.transport.enqueue([pending]))[0]
        if outcome is Enqueued.EXISTS:
            return outcome
        if not outcome:
            raise NoCapacity(f"no node can take task type {task.task_type!r} now ({reason}) "
                             f"and the mesh-wide pending list holds {limit} tasks",
                             task_id=task.task_id, hint="retry later or raise max_pending_tasks")
        self.ctx.publish(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status="pending",
                                     why=pending.why))
        return outcome

    # -- the sweep (on the sweeping node) -------------------------------------------------------------
    def _unroutable(self, task: Task, exc: Exception) -> None:
        """A stranded or pending task the router failed on (not a refusal: a fault): counted and left where it is,
        so the sweep goes on with the rest; each round tries it again."""
        self.ctx.problem("sweep_errors", f"task {task.task_id} ({task.task_type}) could not be routed: {exc!r}")

    async def sweep(self) -> None:
        """Re-route work held by dead or departed nodes or whose lease lapsed; route the pending list."""
        statuses = {m.info.node_id: m.status.value for m in self.members.members()}
        gone = [node_id for node_id, status in statuses.items() if status in ("dead", "left")]
        gone += sorted(self.members.untrusted - {self.ctx.node_id})  # work held by an untrusted node moves
        now = self.members.view.clock  # leases and retry times are on the medium's clock
        # Only work this node would run itself is its to move: a node that trusts no one (a wrong api_key) would
        # otherwise take every running task from the mesh's nodes (all untrusted to it) and fail it as refused.
        candidates = [task for task in await self.transport.stranded(gone, now)
                      if not self.members.distrust_task(task)]
        moves = []
        for s in classify_stranded(candidates, statuses, now):
            if s.task.not_before > now:
                continue
            held_by = {s.task.node_id} if s.task.node_id else set()
            try:
                moves.append(self.move(s.task, bump=s.started, exclude=held_by,
                                       error=f"re-routed: {s.reason} ({s.task.node_name})" if s.started else None))
            except Exception as exc:  # one task that cannot be routed never holds up the others' moves
                self._unroutable(s.task, exc)
        for task in candidates:
            if task.status is not TaskStatus.PENDING or task.not_before > now:
                continue
            try:
                decision = self.route(task, set())
            except MeshError:
                continue  # still no room: it stays pending, untouched
            except Exception as exc:
                self._unroutable(task, exc)
                continue
            self.members.note_queued(decision.node_id)
            moves.append(Reassignment(task.task_id, task.attempt, None, decision.node_id, decision.node_name,
                                      decision.why, bump_attempt=False))
        if moves:
            results = await self.transport.move(moves)
            for done, ok in zip(moves, results, strict=True):
                if ok:
                    self.ctx.counters["rerouted"] += 1
                    self.ctx.publish(TaskUpdated(task_id=done.task_id, task_type="",
                                                 status="assigned" if done.node_id else "pending",
                                                 node_id=done.node_id, node_name=done.node_name, why=done.why))

    async def hand_back(self) -> None:
        """Leaving: every task queued or running here goes to another node (running ones as a new attempt)."""
        ctx = self.ctx
        mine = await self.transport.stranded([ctx.node_id], self.members.view.clock)
        moves = []
        for task in mine:
            if task.node_id != ctx.node_id:
                continue
            running = task.status is TaskStatus.RUNNING
            moves.append(self.move(task, bump=running, exclude={ctx.node_id},
                                   error=f"handed back by {ctx.name} (leaving)" if running else None))
        if moves:
            await self.transport.move(moves)

    async def prune(self) -> int:
        """Delete finished tasks past the retention limits (the sweeping node does this every few seconds)."""
        td = self.ctx.config.task_distribution
        gone = 0
        while True:
            n = await self.transport.prune(td.tasks_kept, td.dead_letters_kept, PRUNE_BATCH)
            gone += n
            if n < PRUNE_BATCH or self.ctx.closing:
                break
            await asyncio.sleep(0)  # a big backlog goes in slices; the node keeps serving between them
        if gone:
            self.ctx.counters["tasks_pruned"] += gone
        return gone

    # -- cancel, retry, trees ---------------------------------------------------------------------------
    async def cancel(self, task_id: str) -> dict[str, str]:
        """Cancel a task and every subtask under it; returns what happened to each."""
        ids = [task_id] + [t.task_id for t in await self._descendants(task_id)]
        outcomes = await self.transport.cancel(ids)
        if outcomes[0] == "missing":
            raise TaskNotFound(f"no task {task_id} in the mesh", task_id=task_id)
        return dict(zip(ids, outcomes, strict=True))

    async def _descendants(self, task_id: str) -> list[Task]:
        out: list[Task] = []
        frontier = [task_id]
        while frontier and len(out) < DESCENDANTS_LIMIT:
            children: list[Task] = []
            for parent in frontier:
                children += await self.transport.list_tasks(parent_id=parent, limit=DESCENDANTS_LIMIT)
            out += children
            frontier = [c.task_id for c in children]
        return out

    async def tree(self, task_id: str) -> dict[str, Any]:
        """The task and its subtasks, nested: ``{"task": Task, "children": [...]}``."""
        root = await self.results.get_task(task_id)

        async def grow(task: Task, depth: int) -> dict[str, Any]:
            kids = await self.transport.list_tasks(parent_id=task.task_id, limit=DESCENDANTS_LIMIT) \
                if depth < TREE_DEPTH else []
            return {"task": task, "children": [await grow(k, depth + 1) for k in kids]}
        return await grow(root, 0)

    async def retry(self, task_id: str) -> str:
        """Replay a dead-lettered, failed or cancelled task as a new attempt; returns where it went."""
        task = await self.results.get_task(task_id)
        if task.status not in (TaskStatus.DEAD_LETTER, TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise UsageError(f"task {task_id} is {task.status.value}; only dead_letter, failed or cancelled "
                             "tasks can be retried")
        if not self.members.table.active():
            await self.members.refresh()
        node_id: str | None
        node_name: str | None
        try:
            decision = self.route(task, set())
            node_id, node_name, why = decision.node_id, decision.node_name, f"replayed; {decision.why}"
        except NoCapacity as exc:
            node_id, node_name, why = None, None, f"replayed; waiting: {exc.message}"
        if not await self.transport.replay(task_id, node_id, node_name, why):
            raise UsageError(f"task {task_id} changed state meanwhile; not replayed")
        return node_name or "pending"
