"""A fixed dataset for look tests (SVG snapshots), fed through the same message path the engine worker uses.

Behaviour tests use the real engine; a picture has to be byte-for-byte stable,
so here every id, time and metric is fixed. The data are real model objects
(``NodeInfo``, ``Task``, ``Conflict``) turned into panes' data by the same
``commands.node_dict`` the engine adapter uses, and the clock is frozen at
``NOW``: every age on screen is measured against the state's ``now``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from mesh_core.commands import CommandResult, node_dict
from mesh_core.events import Event, MemoryChanged, NodeJoined, NodeStatusChanged, Problem, TaskUpdated
from mesh_core.model import (
    Attempt,
    Conflict,
    MemoryItem,
    NodeInfo,
    NodeStatus,
    NodeType,
    Task,
    TaskPriority,
    TaskStatus,
)
from mesh_testing.cockpit import NOW, hex_id  # 2025-06-15 15:06:40 UTC, and ids from names
from mesh_tui.engine import MeshSource
from mesh_tui.state import TASK_VIEWS, MeshState

HISTORY_STEPS = 12
CAPS = frozenset({"basic_processing", "memory_storage"})
TYPES = frozenset({"echo", "sleep", "fail"})


def hlc(at: float, logical: int = 0) -> int:
    return (int(at * 1000) << 16) | logical


# name, type, status, running, queued base, heartbeat age, extra capabilities
NODES: tuple[tuple[str, NodeType, NodeStatus, int, int, float, frozenset[str]], ...] = (
    ("cockpit", NodeType.GENERAL, NodeStatus.ACTIVE, 1, 0, 0.2, frozenset()),
    ("hub-01", NodeType.COORDINATION_HUB, NodeStatus.ACTIVE, 0, 1, 0.3, frozenset({"routing"})),
    ("lang-01", NodeType.LANGUAGE_EXPERT, NodeStatus.ACTIVE, 2, 3, 0.1, frozenset({"nlp", "translation"})),
    ("lang-02", NodeType.LANGUAGE_EXPERT, NodeStatus.ACTIVE, 1, 1, 0.4, frozenset({"nlp"})),
    ("plan-01", NodeType.PLANNING_ONLY, NodeStatus.SUSPECT, 0, 0, 1.9, frozenset({"planning"})),
    ("sensor-01", NodeType.SENSOR_CONNECTED, NodeStatus.DEAD, 0, 0, 14.2, frozenset({"sensors"})),
    ("gen-01", NodeType.GENERAL, NodeStatus.ACTIVE, 4, 3, 0.2, frozenset()),
    ("gone-01", NodeType.GENERAL, NodeStatus.LEFT, 0, 0, 65.0, frozenset()),
)
IDS = {name: hex_id(name) for name, *_ in NODES}


def node_info(name: str, node_type: NodeType, running: int, queued: int, seen_age: float, extra: frozenset[str],
              now: float) -> NodeInfo:
    i = list(IDS).index(name)
    metrics = {"cpu_percent": 12.5 + 7 * i, "memory_mb": 80.0 + 11.5 * i, "tasks_done": 40 * i + 7,
               "tasks_failed": i, "error_rate": i / (40 * i + 8), "avg_response_ms": 35.0 + 12.25 * i}
    return NodeInfo(node_id=IDS[name], name=name, node_type=node_type, host="mesh-host", port=9900, pid=4100 + i,
                    incarnation=1 + i % 3, capabilities=CAPS | extra, task_types=TYPES, capacity=8,
                    running=running, queued=queued, metrics=metrics, started_at=now - 3723, last_seen=now - seen_age,
                    left=False)


def task(name: str, task_type: str, status: TaskStatus, priority: TaskPriority, node: str | None, why: str,
         submitted_ago: float, *, attempt: int = 1, error: str | None = None, result: Any = None,
         payload: Any = None) -> Task:
    submitted = NOW - submitted_ago
    started = submitted + 0.01 if status not in (TaskStatus.PENDING, TaskStatus.ASSIGNED) else None
    finished = submitted + 0.35 if status.is_final else None
    attempts = []
    for a in range(1, attempt + 1):
        on = node if a == attempt else "lang-02"
        attempts.append(Attempt(a, IDS.get(on or "", ""), on or "", submitted + 0.01 * a,
                                submitted + 0.01 * a + 0.2 if (a < attempt or status.is_final) else None,
                                error if (a < attempt or status in (TaskStatus.FAILED, TaskStatus.DEAD_LETTER))
                                else None))
    return Task(task_id=hex_id(name), task_type=task_type, payload=payload or {"n": name}, priority=priority,
                status=status, node_id=IDS.get(node or ""), node_name=node, attempt=attempt,
                failures=attempt - 1 if status is not TaskStatus.DEAD_LETTER else attempt,
                max_retries=2, why=why, submitted_at=submitted, started_at=started, finished_at=finished,
                lease_expires=NOW + 0.8 if status is TaskStatus.RUNNING else None, result=result, error=error,
                context={"trace_id": hex_id(name), "caller": "snapshot", "parent_id": None}, attempts=attempts)


P = TaskPriority
TASKS: tuple[Task, ...] = (
    task("t-pend-1", "sleep", TaskStatus.ASSIGNED, P.CRITICAL, "gen-01", "preferred general; least_loaded 0.88",
         4.0),
    task("t-pend-2", "echo", TaskStatus.PENDING, P.NORMAL, None, "waiting: every node that can run echo is full",
         9.0),
    task("t-run-1", "sleep", TaskStatus.RUNNING, P.HIGH, "lang-01", "preferred language_expert; least_loaded 0.62",
         12.0),
    task("t-run-2", "sleep", TaskStatus.RUNNING, P.NORMAL, "gen-01", "least_loaded 0.75 vs 0.88, 0.25", 30.0),
    task("t-done-1", "echo", TaskStatus.SUCCEEDED, P.LOW, "hub-01", "least_loaded 0.12 vs 0.25", 61.0,
         result={"text": "hello"}),
    task("t-done-2", "echo", TaskStatus.SUCCEEDED, P.HIGH, "lang-02", "affinity echo 0.93", 75.0,
         result={"text": "bonjour"}),
    task("t-fail-1", "fail", TaskStatus.FAILED, P.NORMAL, "sensor-01", "preferred sensor_connected", 120.0,
         error="DiagnosticFailure: sensor offline"),
    task("t-dead-1", "fail", TaskStatus.DEAD_LETTER, P.HIGH, "plan-01", "re-routed: plan-01 lease lapsed", 300.0,
         attempt=3, error="DiagnosticFailure: planner gave up"),
)
COUNTS = {"pending": 1, "assigned": 1, "running": 2, "succeeded": 1289, "failed": 1, "dead_letter": 1,
          "cancelled": 0}


def conflicts(now: float) -> tuple[Conflict, ...]:
    a = MemoryItem("important_fact", "cluster", {"owner": "hub-01", "region": "eu", "tags": ["prod"]},
                   {IDS["cockpit"]: 3, IDS["hub-01"]: 1}, hlc(now - 42.5, 1), IDS["cockpit"])
    b = MemoryItem("important_fact", "cluster", {"owner": "lang-01", "region": "eu", "tags": ["prod", "gpu"]},
                   {IDS["cockpit"]: 2, IDS["lang-01"]: 2}, hlc(now - 42.4), IDS["lang-01"])
    c = MemoryItem("preference", "style", {"tone": "plain", "lang": "en"}, {IDS["hub-01"]: 1},
                   hlc(now - 7.0), IDS["hub-01"])
    d = MemoryItem("preference", "style", {"tone": "plain", "emoji": False}, {IDS["lang-02"]: 1},
                   hlc(now - 6.5), IDS["lang-02"])
    return (Conflict("c-cluster", "important_fact", "cluster", (a, b), "manual", now - 42.0, "concurrent writes"),
            Conflict("c-style", "preference", "style", (c, d), "manual", now - 6.0, "concurrent writes"))


def state(step: int) -> MeshState:
    """Refresh number ``step`` of the scripted history (the last one is ``NOW``)."""
    now = NOW - (HISTORY_STEPS - 1 - step)
    nodes = []
    for name, node_type, status, running, queued, seen_age, extra in NODES:
        wave = 0 if status is not NodeStatus.ACTIVE else round(1.5 + 1.5 * math.sin(step / 2 + len(name)))
        info = node_info(name, node_type, running, max(0, queued + wave - 1), seen_age, extra, now)
        info.left = status is NodeStatus.LEFT
        nodes.append(node_dict(info, status, now))
    nodes.sort(key=lambda n: (n["status"] != "active", n["name"]))
    local = dict(next(n for n in nodes if n["name"] == "cockpit"))
    local.update({"protocol": "sqlite_local", "backend": {"backend": "sqlite_local", "path": "/srv/mesh/mesh.db"},
                  "backend_reason": "sqlite_local as configured", "healthy": True, "uptime_s": 3723.0, "notes": []})
    by_view = {view: tuple(t for t in TASKS if t.status.value in statuses) for view, statuses in TASK_VIEWS.items()}
    return MeshState(now=now, enabled=True, local=local, nodes=tuple(nodes), task_counts=COUNTS, tasks=by_view,
                     conflicts=conflicts(NOW), memory_items=42,
                     task_types=tuple(sorted(TYPES)))


def events() -> tuple[Event, ...]:
    at = NOW - 20
    return (
        NodeJoined(node_id=IDS["lang-02"], name="lang-02", node_type="language_expert", incarnation=2, at=at),
        TaskUpdated(task_id=hex_id("t-run-1"), task_type="sleep", status="assigned", node_id=IDS["lang-01"],
                    node_name="lang-01", why="preferred language_expert; least_loaded 0.62", at=at + 1),
        TaskUpdated(task_id=hex_id("t-run-1"), task_type="sleep", status="running", node_id=IDS["lang-01"],
                    node_name="lang-01", attempt=1, at=at + 1.2),
        NodeStatusChanged(node_id=IDS["plan-01"], name="plan-01", old="active", new="suspect", incarnation=1,
                          at=at + 5),
        TaskUpdated(task_id=hex_id("t-dead-1"), task_type="fail", status="dead_letter", node_id=IDS["plan-01"],
                    node_name="plan-01", attempt=3, error="DiagnosticFailure: planner gave up", at=at + 6),
        MemoryChanged(memory_type="important_fact", key="cluster", origin=IDS["lang-01"], outcome="sibling",
                      strategy="manual", at=at + 7),
        NodeStatusChanged(node_id=IDS["sensor-01"], name="sensor-01", old="suspect", new="dead", incarnation=2,
                          at=at + 9),
        Problem(counter="stale_results", detail="result of task 5f1c2e attempt 1 refused: the task moved on",
                at=at + 10),
    )


class FixedSource(MeshSource):
    """Plays a scripted history of states and events; records what the app asked it to do."""

    title = "Agent Mesh · cockpit"

    def __init__(self) -> None:
        self.states = [state(i) for i in range(HISTORY_STEPS)]
        self.calls = 0
        self.ran: list[str] = []
        self.resolved: list[tuple[str, str, Any]] = []

    @property
    def settled(self) -> bool:
        return self.calls >= len(self.states)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def events(self) -> AsyncIterator[Event]:  # type: ignore[override]
        for event in events():
            yield event
        await asyncio.Event().wait()

    async def state(self) -> MeshState:
        if self.calls >= len(self.states):
            await asyncio.Event().wait()  # the script is over: nothing new ever arrives, the app idles
        self.calls += 1
        return self.states[self.calls - 1]

    async def run(self, line: str) -> CommandResult:
        self.ran.append(line)
        return CommandResult(f"(fixed data: {line} not run)")

    async def task(self, task_id: str) -> Task:
        return next(t for t in TASKS if t.task_id == task_id)

    async def resolve_conflict(self, conflict: Conflict, choice: str, value: Any = None) -> str:
        self.resolved.append((conflict.conflict_id, choice, value))
        return f"conflict on {conflict.key} resolved ({choice})"
