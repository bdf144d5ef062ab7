"""Scale: one refresh with 1,000 known nodes and 10,000 tasks is applied incrementally (rows updated in place).

The state is built like ``fixed.py`` (real model objects through ``node_dict``)
and posted as the same ``MeshRefreshed`` message the refresh worker posts. The
figure printed is the time the app spends applying one refresh to every pane.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from typing import Any

from mesh_core.commands import CommandResult, node_dict
from mesh_core.events import Event
from mesh_core.model import Conflict, NodeInfo, NodeStatus, NodeType, Task, TaskPriority, TaskStatus
from mesh_tui.app import MeshApp
from mesh_tui.engine import MeshSource
from mesh_tui.messages import MeshRefreshed
from mesh_tui.state import TASK_VIEWS, MeshState
from mesh_tui.widgets.nodes_table import NodesTable

from .fixed import NOW, hex_id

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


async def test_one_refresh_with_1000_nodes_and_10000_tasks_is_incremental_and_fast() -> None:
    app = MeshApp(source=QuietSource(), refresh_interval=3600)
    states = [big_state(tick) for tick in range(6)]
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(MeshRefreshed(states[0]))
        await pilot.pause()
        first = app.apply_ms
        table = app.query_one(NodesTable).table
        assert table.row_count == NODES
        row_key = next(iter(table.rows))
        times = []
        for state in states[1:]:
            app.post_message(MeshRefreshed(state))
            await pilot.pause()
            times.append(app.apply_ms)
        # Incremental: the same rows (same keys) were updated in place, not rebuilt.
        assert table.row_count == NODES and row_key in table.rows
    steady = statistics.median(times)
    # Speed is measured by `python -m bench.tui`, not asserted here.
    print(f"\nrefresh apply with {NODES} nodes / {TASKS} tasks: first {first:.1f} ms, "
          f"then median {steady:.1f} ms (max {max(times):.1f} ms)")
