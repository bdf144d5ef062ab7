"""A cockpit at scale: 1,000 known nodes and 10,000 tasks, for the scale test and ``bench.tui``.

Real model objects through ``node_dict``, as a node would build them; a source
that says nothing, so the caller posts every refresh itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from mesh_core.commands import CommandResult, node_dict
from mesh_core.events import Event
from mesh_core.model import Conflict, NodeInfo, NodeStatus, NodeType, Task, TaskPriority, TaskStatus
from mesh_tui.engine import MeshSource
from mesh_tui.state import TASK_VIEWS, MeshState

NOW = 1_750_000_000.0  # a fixed clock, so every run builds the same state


def hex_id(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


NODES = 1000
TASKS = 10_000
TYPES = list(NodeType)


class QuietSource(MeshSource):
    """A node that says nothing: the test posts every refresh itself."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def events(self) -> AsyncIterator[Event]:  # type: ignore[override]
        await asyncio.Event().wait()
        yield  # pragma: no cover

    async def state(self) -> MeshState:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def run(self, line: str) -> CommandResult:
        return CommandResult("")

    async def task(self, task_id: str) -> Task:
        raise KeyError(task_id)

    async def resolve_conflict(self, conflict: Conflict, choice: str, value: Any = None) -> str:
        return ""


def big_state(tick: int) -> MeshState:
    now = NOW + tick
    nodes = []
    for i in range(NODES):
        status = NodeStatus.ACTIVE if i % 50 else NodeStatus.DEAD
        info = NodeInfo(node_id=hex_id(f"n{i}"), name=f"node-{i:04d}", node_type=TYPES[i % len(TYPES)],
                        capabilities=frozenset({"basic_processing", f"cap{i % 7}"}), task_types=frozenset({"echo"}),
                        capacity=10, running=(i + tick) % 4, queued=(i * 7 + tick) % 6,
                        metrics={"cpu_percent": float(i % 100)}, last_seen=now - (i % 5) * 0.1 - 0.05)
        nodes.append(node_dict(info, status, now))
    tasks: dict[str, tuple[Task, ...]] = {}
    for view, statuses in TASK_VIEWS.items():
        tasks[view] = tuple(
            Task(task_id=hex_id(f"{view}{tick}{j}" if view == "done" else f"{view}{j}"), task_type="echo",
                 priority=TaskPriority(j % 4), status=TaskStatus(statuses[0]), node_id=nodes[j]["node_id"],
                 node_name=nodes[j]["name"], attempt=1, why="least_loaded", submitted_at=now - j,
                 finished_at=now - j / 2, lease_expires=now + 1.0)
            for j in range(50))
    counts = {"pending": 1200, "assigned": 300, "running": 500, "succeeded": 7600, "failed": 250,
              "dead_letter": 100, "cancelled": 50}
    assert sum(counts.values()) == TASKS
    local = dict(nodes[1], protocol="sqlite_local", backend={}, healthy=True, uptime_s=60.0 + tick)
    return MeshState(now=now, enabled=True, local=local, nodes=tuple(nodes), task_counts=counts, tasks=tasks)
