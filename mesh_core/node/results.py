"""Results: this node's result feed and the callers waiting on it (``wait_task``, ``wait_for``).

Own submissions are tracked from before they are stored, so a result that
lands at once is matched from the feed entry itself with no read of the task.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from ..backends.contracts import TOPIC_RESULTS, Finished, TaskTransport
from ..errors import BackendError, TaskFailed, TaskNotFound, TaskTimeout
from ..model import Task, TaskStatus
from .context import NodeContext

RESULTS_POLL_SECONDS = 0.5
OWN_TRACK_LIMIT = 100_000  # own submissions kept in memory so their results need no read of the task
RECENT_KEEP = 10_000  # results of own tasks that arrived before anyone waited for them
OWN_STALE_SECONDS = 5.0  # an own task without a result after this long is checked by the periodic sweep


class Results:
    """Answers waiters from the feed; the periodic sweep covers whatever the feed did not bring."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}
        self._own: dict[str, Task] = {}  # own submissions not finished yet, oldest first
        self._recent: OrderedDict[str, Task] = OrderedDict()  # own finished tasks nobody waited for yet
        self._generation = 0
        self._cursor: Any = None

    @property
    def transport(self) -> TaskTransport:
        return self.ctx.backend

    async def open(self) -> None:
        """Start reading the feed from now."""
        _, self._cursor = await self.transport.finished_for(self.ctx.node_id, None)

    def track(self, task: Task) -> bool:
        """Remember an own submission before it is stored; False when too many are already tracked."""
        if len(self._own) >= OWN_TRACK_LIMIT:
            return False
        self._own[task.task_id] = task
        self._generation += 1
        if self.transport.blocking_results:  # the loop, idle without waiters, starts its blocking read
            self.ctx.wake(TOPIC_RESULTS)
        # Otherwise the task's own wake-up starts the read that finds it: one now would find nothing (the task is
        # not even stored), and it would run on this loop ahead of the submit's write.
        return True

    def untrack(self, task_id: str) -> None:
        self._own.pop(task_id, None)

    def cancel_all(self) -> None:
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.cancel()

    async def get_task(self, task_id: str) -> Task:
        found = await self.transport.get_tasks([task_id])
        if not found:
            raise TaskNotFound(f"no task {task_id} in the mesh", task_id=task_id)
        return found[0]

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is final and return it (whatever its final status)."""
        task = self._recent.pop(task_id, None)
        if task is not None:
            return await self._with_attempts(task)
        fut: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        self._generation += 1
        if self.transport.blocking_results or task_id not in self._own:  # an own task's wake-up will come (track)
            self.ctx.wake(TOPIC_RESULTS)
        try:
            if task_id not in self._own:
                # Registered before this check, so a result landing now is seen by one or the other.
                state = (await self.transport.task_states([task_id])).get(task_id)
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
            try:
                return await self.get_task(task.task_id)
            except TaskNotFound:  # pruned by retention since it finished: the feed's record is what is left
                return task
        return task

    async def wait_for(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's result; raises TaskFailed (failed, dead letter, cancelled) or TaskTimeout."""
        task = await self.wait_task(task_id, timeout)
        if task.status is TaskStatus.SUCCEEDED:
            return task.result
        errors = [a.error for a in task.attempts if a.error] or ([task.error] if task.error else [])
        raise TaskFailed(f"task {task_id} {task.status.value}: {task.error or 'no error recorded'}",
                         task_id=task_id, status=task.status.value, errors=errors)

    async def loop(self) -> None:
        """Answer waiters from this node's result feed; own submissions need no read of the task.

        On a medium with ``blocking_results`` the read itself waits for the next
        entry; otherwise a TOPIC_RESULTS wake-up (or the poll) starts each read.
        """
        ctx = self.ctx
        blocking = self.transport.blocking_results
        last_sweep = 0.0
        delay = 0.1
        while not ctx.closing:
            if not blocking or not (self._waiters or self._own):
                await ctx.wait_wake(TOPIC_RESULTS, RESULTS_POLL_SECONDS)
            try:
                if not (self._waiters or self._own):
                    # Nobody waits: skip ahead. A later waiter checks its task's state when it registers;
                    # one that registered (or a submit) during this read keeps the old cursor: nothing skipped.
                    generation = self._generation
                    _, head = await self.transport.finished_for(ctx.node_id, None)
                    if generation == self._generation:
                        self._cursor = head
                    continue
                done, self._cursor = await self.transport.finished_for(
                    ctx.node_id, self._cursor, RESULTS_POLL_SECONDS if blocking else 0.0)
                ready = self._settle(done)
                if done and blocking:  # the waiters just answered run before the next read is sent (it waits)
                    await asyncio.sleep(0)
                if time.monotonic() - last_sweep >= RESULTS_POLL_SECONDS:
                    last_sweep = time.monotonic()
                    ready += await self._sweep_waiters(ready)
                if ready:
                    for task in await self.transport.get_tasks(ready, with_attempts=False):
                        for fut in self._waiters.get(task.task_id, []):
                            if not fut.done():
                                fut.set_result(task)
                delay = 0.1
            except BackendError as exc:
                ctx.problem("backend_errors", str(exc))
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
        # a waiter answered in this loop pass is still listed until its caller runs: not asked about again
        wanted = [i for i, futures in self._waiters.items()
                  if i not in ready and i not in self._own and not all(f.done() for f in futures)]
        states = await self.transport.task_states(list(dict.fromkeys(wanted + stale)))
        for task_id in stale:
            state = states.get(task_id)
            kept = self._own.pop(task_id, None)
            if kept is not None and state is not None and not state.is_final:
                self._own[task_id] = kept  # still running: to the back, so the next sweep looks at others
            elif task_id in self._waiters:
                wanted.append(task_id)  # final (or gone): its waiter is answered by a read
        return [i for i in dict.fromkeys(wanted) if (st := states.get(i)) is not None and st.is_final]
