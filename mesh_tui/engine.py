"""The app's one door to the engine: a small adapter contract and its AgentMeshManager implementation.

Only the app's workers call a ``MeshSource``; widgets never do. The adapter
uses only the manager's public surface (``start``/``stop``, ``subscribe``,
``list_tasks``, ``get_task``, ``conflicts``, ``resolve_conflict``) and the
shared command code (``status_data``, ``run_command``).
"""

from __future__ import annotations

import abc
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from mesh_core.commands import CommandResult, run_command, status_data
from mesh_core.errors import MeshError
from mesh_core.events import Event
from mesh_core.manager import AgentMeshManager
from mesh_core.model import Conflict, Task, TaskStatus

from .state import TASK_VIEWS, MeshState

KEEP_LEFT, KEEP_RIGHT, MERGE, EDIT = "keep-left", "keep-right", "merge", "edit"


class MeshSource(abc.ABC):
    """What the app needs from one node of the mesh."""

    title: str = "Agent Mesh"

    @abc.abstractmethod
    async def start(self) -> None:
        """Join the mesh (the app calls this once, on mount)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the mesh gracefully; safe to call twice."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event]:
        """The engine's frozen events, as they happen."""

    @abc.abstractmethod
    async def state(self) -> MeshState:
        """One refresh: this node, the known nodes, task lists and counts, open conflicts."""

    @abc.abstractmethod
    async def run(self, line: str) -> CommandResult:
        """Run one ``/mesh_*`` command line; failures come back as a result, never raised."""

    @abc.abstractmethod
    async def task(self, task_id: str) -> Task:
        """One task with its attempts, context and result."""

    @abc.abstractmethod
    async def resolve_conflict(self, conflict: Conflict, choice: str, value: Any = None) -> str:
        """Settle a conflict: ``keep-left``/``keep-right``/``merge``, or ``edit`` with ``value``; a sentence back."""

    async def stop_process(self) -> None:
        """Ctrl-Z: stop this process (it returns once continued). A source with no node of its own stops at once."""
        os.kill(os.getpid(), signal.SIGSTOP)


class EngineSource(MeshSource):
    """A real node: wraps an ``AgentMeshManager`` whose lifecycle the app owns."""

    def __init__(self, mesh: AgentMeshManager, *, task_limit: int = 50) -> None:
        self.mesh = mesh
        self.task_limit = task_limit
        self._started = False
        self._stopped = False

    @property
    def title(self) -> str:  # type: ignore[override]
        observer = "" if self.mesh.is_worker else " (observer)"
        return f"Agent Mesh · {self.mesh.name}{observer}" if self.mesh.name else f"Agent Mesh{observer}"

    async def start(self) -> None:
        await self.mesh.start()
        self._started = True
        if not self.mesh.is_worker:  # an observer: the tasks of the whole mesh come as events
            self.mesh.watch_tasks()

    async def stop(self) -> None:
        if self._started and not self._stopped:
            self._stopped = True
            await self.mesh.stop()

    async def stop_process(self) -> None:
        """Stopped only once the node holds nothing the other nodes wait for (a write lock on a shared file)."""
        await self.mesh.stop_process()

    async def events(self) -> AsyncIterator[Event]:  # type: ignore[override]
        async for event in self.mesh.subscribe():
            yield event

    async def state(self) -> MeshState:
        mesh = self.mesh
        data = await status_data(mesh)
        tasks: dict[str, tuple[Task, ...]] = {}
        for view, statuses in TASK_VIEWS.items():
            found: list[Task] = []
            for status in statuses:
                found += await mesh.list_tasks(TaskStatus(status), limit=self.task_limit)
            found.sort(key=lambda t: t.submitted_at, reverse=True)
            tasks[view] = tuple(found[: self.task_limit])
        now = time.time()
        local = dict(data["local"])
        local["uptime_s"] = max(0.0, now - mesh.started_at) if mesh.started_at else 0.0
        task_types = sorted({t for n in data["nodes"] for t in n.get("task_types", ())})
        return MeshState(now=now, enabled=bool(data["enabled"]), local=local, nodes=tuple(data["nodes"]),
                         task_counts=dict(data["tasks"]), tasks=tasks, conflicts=tuple(mesh.conflicts()),
                         memory_items=int(data.get("memory_items", 0)),
                         counters=dict(data.get("counters", {})), task_types=tuple(task_types))

    async def run(self, line: str) -> CommandResult:
        return await run_command(self.mesh, line)

    async def task(self, task_id: str) -> Task:
        return await self.mesh.get_task(task_id)

    async def resolve_conflict(self, conflict: Conflict, choice: str, value: Any = None) -> str:
        left, right = order_siblings(conflict, self.mesh.node_id)
        keeps = choice in (KEEP_LEFT, KEEP_RIGHT)
        if choice == MERGE:
            await self.mesh.resolve_conflict(conflict.conflict_id, "merge")
        elif keeps and left.origin == self.mesh.node_id and len(conflict.siblings) == 2:
            await self.mesh.resolve_conflict(conflict.conflict_id, "keep-local" if choice == KEEP_LEFT
                                             else "keep-remote")
        else:
            kept = (left if choice == KEEP_LEFT else right).value if keeps else value
            await self.mesh.resolve_conflict(conflict.conflict_id, value=kept)
        return f"conflict on {conflict.key} resolved ({choice})"


def order_siblings(conflict: Conflict, local_id: str) -> tuple[Any, Any]:
    """(left, right): this node's own sibling on the left when it has one, then by origin."""
    siblings = sorted(conflict.siblings, key=lambda s: (s.origin != local_id, s.origin, s.hlc))
    if len(siblings) < 2:
        raise MeshError(f"conflict {conflict.conflict_id} has fewer than two siblings")
    return siblings[0], siblings[1]
