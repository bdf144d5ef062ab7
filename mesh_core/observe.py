"""An observer's view of task activity anywhere in the mesh, as ``TaskUpdated`` events.

A worker publishes the transitions of the tasks it runs; a client that only
watches (``mesh-tui --observe``, ``mesh-tui events``) runs nothing, so it reads
the newest tasks every ``WATCH_SECONDS`` and publishes what changed since the
last read. ``task_changes`` is the pure diff; ``watch_loop`` reads and publishes.
A task that changes while older than the newest ``WATCH_LIMIT`` is not seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from .events import Event, TaskUpdated
from .model import Task

if TYPE_CHECKING:
    from .node.context import NodeContext

WATCH_SECONDS = 0.5
WATCH_LIMIT = 200  # one read of this many task records per half second and observer

Seen = dict[str, tuple[str, int]]  # task id -> (status, attempt) as last read


def task_changes(seen: Seen | None, tasks: Iterable[Task]) -> tuple[list[TaskUpdated], Seen]:
    """The events for tasks new or changed since ``seen`` (oldest first), and what is seen now.

    ``seen`` None is the first read: it sets the baseline and publishes nothing (the history is not news).
    """
    now: Seen = {}
    events: list[TaskUpdated] = []
    for task in tasks:
        state = (task.status.value, task.attempt)
        now[task.task_id] = state
        if seen is not None and seen.get(task.task_id) != state:
            events.append(TaskUpdated(task_id=task.task_id, task_type=task.task_type, status=state[0],
                                      node_id=task.node_id, node_name=task.node_name, attempt=task.attempt,
                                      why=task.why if state[0] in ("pending", "assigned") else "",
                                      error=task.error))
    events.reverse()  # the read is newest first; events go out in the order the tasks came
    return events, now


def watch_loop(ctx: NodeContext, publish: Callable[[Event], None]) -> Callable[[], Coroutine[Any, Any, None]]:
    """The supervised loop body: read the newest tasks, publish what changed, sleep; until the node closes."""

    async def loop() -> None:
        seen: Seen | None = None
        while not ctx.closing:
            tasks = await ctx.backend.list_tasks(None, WATCH_LIMIT)
            events, seen = task_changes(seen, tasks)
            for event in events:
                publish(event)
            await asyncio.sleep(WATCH_SECONDS)

    return loop
