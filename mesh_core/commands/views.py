"""Data views of the mesh for the commands: plain dicts that ``--json`` prints and the text layouts render."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..model import NodeStatus, Task

if TYPE_CHECKING:
    from ..manager import AgentMeshManager

OVERLOADED = 0.9


def node_dict(info: Any, status: NodeStatus, now: float) -> dict[str, Any]:
    """One node as the status block and ``--json`` show it."""
    return {
        "node_id": info.node_id, "name": info.name, "node_type": info.node_type.value, "status": status.value,
        "overloaded": status is NodeStatus.ACTIVE and info.load > OVERLOADED,
        "load": round(info.load, 4), "capacity": info.capacity, "running": info.running, "queued": info.queued,
        "capabilities": sorted(info.capabilities), "task_types": sorted(info.task_types),
        "last_seen_s": round(max(0.0, now - info.last_seen), 3), "incarnation": info.incarnation,
        "host": info.host, "port": info.port, "pid": info.pid, "metrics": info.metrics,
    }


def task_dict(task: Task) -> dict[str, Any]:
    """One task for listings: where it ran and why, without its payload or result."""
    return {
        "task_id": task.task_id, "task_type": task.task_type, "status": task.status.value,
        "priority": task.priority.name.lower(), "node_id": task.node_id, "node_name": task.node_name,
        "attempts": task.attempt, "why": task.why, "submitted_at": task.submitted_at,
        "finished_at": task.finished_at, "error": task.error,
        "progress": task.progress, "progress_message": task.progress_message,
    }


def task_outcome(task: Task) -> dict[str, Any]:
    """A finished task as ``submit --wait`` reports it: the result and every attempt's error."""
    return {"task_id": task.task_id, "status": task.status.value, "result": task.result,
            "node_id": task.node_id, "node_name": task.node_name, "attempts": task.attempt,
            "error": task.error, "errors": [a.error for a in task.attempts if a.error],
            "progress": task.progress, "progress_message": task.progress_message}


def tree_dict(tree: dict[str, Any]) -> dict[str, Any]:
    """``task_tree``'s nested tasks as nested dicts."""
    return {**task_dict(tree["task"]), "children": [tree_dict(c) for c in tree["children"]]}


def task_summary(counts: dict[str, int]) -> dict[str, int]:
    """Task counts per status folded into the status block's rows."""
    return {
        "pending": counts.get("pending", 0) + counts.get("assigned", 0),
        "running": counts.get("running", 0),
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "dead_letter": counts.get("dead_letter", 0),
        "cancelled": counts.get("cancelled", 0),
    }


def conflict_dict(c: Any) -> dict[str, Any]:
    """One open conflict with every sibling's value, origin, clock and version vector."""
    return {"conflict_id": c.conflict_id, "memory_type": c.memory_type, "key": c.key, "strategy": c.strategy,
            "reason": c.reason, "opened_at": c.opened_at,
            "siblings": [{"value": s.value, "origin": s.origin, "hlc": s.hlc, "vv": s.vv} for s in c.siblings]}


def recollection_dict(found: Any) -> dict[str, Any]:
    """What ``recall_item`` found, with the siblings when the key is in conflict."""
    siblings = [{"value": s.value, "origin": s.origin, "hlc": s.hlc} for s in found.siblings]
    return {"key": found.key, "memory_type": found.memory_type, "value": found.value,
            "siblings": siblings, "origin": found.origin, "hlc": found.hlc}


async def status_data(mesh: AgentMeshManager) -> dict[str, Any]:
    """This node, every node it knows, task counts, memory size and counters (``/mesh_status``)."""
    view = await mesh.mesh_view()
    now = view["snapshot"].now
    nodes = [node_dict(m.info, m.status, now) for m in view["members"]]
    skewed = mesh.skewed()
    for n in nodes:
        n["clock_ahead_s"] = skewed.get(n["node_id"])  # None unless flagged as skewed
    nodes.sort(key=lambda n: (n["status"] != "active", n["name"]))
    local: dict[str, Any]
    if mesh.is_worker:
        judged = mesh.status_of(mesh.node_id)
        status = NodeStatus.LEFT if not mesh.enabled else (judged or NodeStatus.ACTIVE)
        local = node_dict(mesh.local_info(), status, time.time())
        local["notes"] = list(mesh.notes)
    else:
        local = {"node_id": mesh.node_id, "name": mesh.name, "role": "client", "status": "client"}
    local.update({"protocol": mesh.config.protocol, "backend": mesh.backend_info(),
                  "backend_reason": mesh.backend_reason, "healthy": mesh.healthy,
                  "backend_healthy": mesh.backend_healthy, "loops": mesh.loops(),
                  "clock_offset_s": mesh.clock_offset,
                  "memory_sync": mesh.config.memory_sync.strategy, "memory_primary": mesh.memory_primary})
    return {
        "enabled": mesh.enabled or not mesh.is_worker,
        "local": local,
        "nodes": nodes,
        "tasks": task_summary(view["task_counts"]),
        "memory_items": mesh.memory_count(),
        "counters": dict(mesh.counters),
    }
