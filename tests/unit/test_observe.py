"""The observer's diff of the newest tasks into TaskUpdated events (mesh_core/observe.py)."""

from __future__ import annotations

from typing import Any

from mesh_core.model import Task, TaskStatus
from mesh_core.observe import task_changes


def _task(task_id: str, status: TaskStatus, attempt: int = 1, node: str = "w1", **extra: Any) -> Task:
    return Task(task_id=task_id, task_type="echo", status=status, attempt=attempt, node_id=node + "-id",
                node_name=node, **extra)


def test_the_first_read_is_a_baseline_and_later_reads_say_what_changed_oldest_first() -> None:
    events, seen = task_changes(None, [_task("b", TaskStatus.RUNNING), _task("a", TaskStatus.SUCCEEDED)])
    assert events == [] and seen == {"a": ("succeeded", 1), "b": ("running", 1)}
    newest_first = [_task("c", TaskStatus.ASSIGNED, why="least_loaded"), _task("b", TaskStatus.SUCCEEDED),
                    _task("a", TaskStatus.SUCCEEDED)]
    events, seen = task_changes(seen, newest_first)
    assert [(e.task_id, e.status, e.node_name, e.why) for e in events] == \
        [("b", "succeeded", "w1", ""), ("c", "assigned", "w1", "least_loaded")]
    # a retry on another node is a change even when the status reads the same
    events, seen = task_changes(seen, [_task("c", TaskStatus.ASSIGNED, attempt=2, node="w2", error="boom")])
    assert [(e.task_id, e.attempt, e.node_name, e.error) for e in events] == [("c", 2, "w2", "boom")]
    assert task_changes(seen, [_task("c", TaskStatus.ASSIGNED, attempt=2, node="w2")])[0] == []
