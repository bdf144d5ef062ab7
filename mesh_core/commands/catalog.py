"""The ``/mesh_*`` commands themselves: each declares its arguments and surfaces, builds data, renders text.

They use only the manager's public front door, so the same code serves a
worker node (cockpit, headless stdin) and a one-shot CLI client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import NODE_TYPES
from ..errors import MeshError
from ..model import Task, TaskPriority, TaskStatus, short_id
from .registry import (
    IN_A_NODE,
    LINE,
    Arg,
    CommandResult,
    command,
    json_value,
    on_surface,
    positive_int,
    positive_number,
)
from .render import (
    as_json,
    render_agents,
    render_conflicts,
    render_help,
    render_history,
    render_memory,
    render_status,
    render_tasks,
    render_tree,
)
from .views import conflict_dict, recollection_dict, status_data, task_dict, task_outcome, tree_dict

if TYPE_CHECKING:
    from ..manager import AgentMeshManager

Args = argparse.Namespace
RESOLUTIONS = ("keep-local", "keep-remote", "merge")
VERSION_ID = re.compile(r"[0-9a-f]+(\.[0-9a-f]*)?")  # see memory.history.version_id; a prefix will do


def resolution(text: str) -> Any:
    """A conflict resolution: one of RESOLUTIONS, or a JSON value to write instead."""
    if text in RESOLUTIONS:
        return text
    try:
        return json_value(text)
    except ValueError as exc:
        raise ValueError(f"is neither {', '.join(RESOLUTIONS)} nor valid JSON ({str(exc).removeprefix('is ')})") \
            from None


def version_ref(text: str) -> int | str:
    """A history version: its index, written ``3`` or ``v3`` (1 = the one before the current value), or its id."""
    digits = text.removeprefix("v")
    if digits.isdigit():
        return int(digits)
    if VERSION_ID.fullmatch(text):
        return text
    raise ValueError(f"{text!r} is neither a history index (like 1 or v1) nor a version id"
                     " (like 18c0f3e2a0001.1a2b3c4d; see /mesh_history KEY)")


async def _fresh(mesh: AgentMeshManager, key: str | None = None) -> None:
    """A client's replica starts empty: bring the key it is asked about (or everything) up to date first."""
    if mesh.is_worker:
        return
    if key is None:
        await mesh.sync_now()
    else:
        await mesh.catch_up(key)


PROGRESS_POLL_SECONDS = 0.5  # how often a waiting caller reads a running task's progress (renewals bring it)


async def _wait_reporting(mesh: AgentMeshManager, task_id: str, timeout: float | None, args: Args) -> Task:
    """``wait_task``; meanwhile, when the surface asks (``args.on_progress``, a callable the CLI sets), it is
    called with the task each time its stored progress changes. The final task carries its last progress."""
    on_progress: Callable[[Task], None] | None = getattr(args, "on_progress", None)
    waiting = asyncio.ensure_future(mesh.wait_task(task_id, timeout))
    seen: tuple[float | None, str | None] = (None, None)
    try:
        while on_progress is not None and not waiting.done():
            with contextlib.suppress(MeshError):
                task = await mesh.get_task(task_id)
                if task.progress is not None and (task.progress, task.progress_message) != seen:
                    seen = (task.progress, task.progress_message)
                    on_progress(task)
            await asyncio.wait({waiting}, timeout=PROGRESS_POLL_SECONDS)
        final = await waiting
    finally:
        waiting.cancel()
    if final.progress is None:  # the result feed carries no progress: the stored task does
        with contextlib.suppress(MeshError):
            stored = await mesh.get_task(task_id)
            final.progress, final.progress_message = stored.progress, stored.progress_message
    return final


def _finished(task: Task) -> CommandResult:
    data = task_outcome(task)
    if task.status is TaskStatus.SUCCEEDED:
        return CommandResult(f"✅ {short_id(task.task_id)} {task.task_type} succeeded on {task.node_name or '-'}"
                             f" (attempt {task.attempt}): {as_json(task.result)}", data, bare=as_json(task.result))
    return CommandResult(f"task {task.task_id} {task.status.value}: {task.error}", data, ok=False, exit_code=1)


# -- the mesh --------------------------------------------------------------------------------

@command("/mesh_status", "Mesh overview: this node, statistics, known nodes")
async def _status(mesh: AgentMeshManager, args: Args) -> CommandResult:
    data = await status_data(mesh)
    return CommandResult(render_status(data), data)


@command("/mesh_agents", "Every node in detail: load, CPU, memory, response time, capabilities")
async def _agents(mesh: AgentMeshManager, args: Args) -> CommandResult:
    data = await status_data(mesh)
    return CommandResult(render_agents(data), data["nodes"])


@command("/mesh_enable", "Join the mesh (again) and take work", surfaces=IN_A_NODE)
async def _enable(mesh: AgentMeshManager, args: Args) -> CommandResult:
    if mesh.enabled:
        return CommandResult("🟢 Mesh already enabled.", {"enabled": True})
    await mesh.enable()
    return CommandResult(f"🟢 Mesh enabled: {mesh.name} joined as incarnation {mesh.incarnation}.",
                         {"enabled": True})


@command("/mesh_disable", "Hand back work and leave the mesh (the node stays up)", surfaces=IN_A_NODE)
async def _disable(mesh: AgentMeshManager, args: Args) -> CommandResult:
    if not mesh.enabled:
        return CommandResult("🔴 Mesh already disabled.", {"enabled": False})
    await mesh.disable()
    return CommandResult(f"🔴 Mesh disabled: {mesh.name} left; its queued work was handed back.",
                         {"enabled": False})


# -- tasks -----------------------------------------------------------------------------------

@command(
    "/mesh_submit", "Submit a task to the mesh; with --wait, wait for its result",
    Arg("task_type", "the task type a handler is registered for", metavar="TASK_TYPE"),
    Arg("payload", "the task's input", flag="--payload", metavar="JSON", decode=json_value),
    Arg("priority", "low, normal, high or critical", flag="--priority", default="normal", metavar="PRIORITY",
        choices=tuple(p.name.lower() for p in TaskPriority)),
    Arg("prefer", "prefer nodes of this type (repeatable, in order)", flag="--prefer", repeatable=True,
        choices=NODE_TYPES, metavar="NODE_TYPE"),
    Arg("require", "only nodes with this capability (repeatable)", flag="--require", repeatable=True,
        metavar="CAP"),
    Arg("timeout", "per-attempt timeout of the task", flag="--timeout", type=positive_number, metavar="S"),
    Arg("wait", "wait for the result", flag="--wait", switch=True),
    Arg("wait_timeout", "give up waiting after S seconds (exit 3)", flag="--wait-timeout", type=positive_number,
        metavar="S"),
    Arg("task_id", "idempotency key: submitting the same id twice makes one task", flag="--task-id",
        metavar="ID"),
    Arg("queue", "when every node is full, wait in the mesh-wide pending list instead of exit 3",
        flag="--queue", switch=True),
)
async def _submit(mesh: AgentMeshManager, args: Args) -> CommandResult:
    task_id = await mesh.submit_task(args.task_type, args.payload, priority=args.priority,
                                     preferred_node_types=args.prefer, required_capabilities=args.require,
                                     timeout_s=args.timeout, task_id=args.task_id, queue=args.queue)
    if not args.wait:
        return CommandResult(f"📨 Submitted {args.task_type} as {task_id}.", {"task_id": task_id}, bare=task_id)
    return _finished(await _wait_reporting(mesh, task_id, args.wait_timeout, args))


@command(
    "/mesh_tasks", "Recent tasks with where they ran and why",
    Arg("status", "only tasks in this state", flag="--status", choices=tuple(s.value for s in TaskStatus),
        metavar="STATUS", bare=True),
    Arg("limit", "at most N tasks", flag="--limit", type=positive_int, default=100, metavar="N"),
    Arg("tree", "one task and its subtasks as a tree", flag="--tree", metavar="TASK_ID"),
)
async def _tasks(mesh: AgentMeshManager, args: Args) -> CommandResult:
    if args.tree:
        tree = await mesh.task_tree(args.tree)
        return CommandResult("\n".join(render_tree(tree)), tree_dict(tree))
    status = TaskStatus(args.status) if args.status else None
    tasks = [task_dict(t) for t in await mesh.list_tasks(status, args.limit)]
    return CommandResult(render_tasks(tasks), tasks)


@command("/mesh_cancel", "Cancel a task (queued: at once; running: cooperatively) and its subtasks",
         Arg("task_id", metavar="TASK_ID"))
async def _cancel(mesh: AgentMeshManager, args: Args) -> CommandResult:
    outcomes = await mesh.cancel_task(args.task_id)
    return CommandResult("\n".join(f"🛑 {short_id(task_id)}: {outcome}" for task_id, outcome in outcomes.items()),
                         outcomes, bare="\n".join(f"{task_id}: {outcome}" for task_id, outcome in outcomes.items()))


@command("/mesh_retry", "Replay a dead-lettered, failed or cancelled task",
         Arg("task_id", metavar="TASK_ID"), Arg("wait", "wait for the replay's result", flag="--wait", switch=True))
async def _retry(mesh: AgentMeshManager, args: Args) -> CommandResult:
    where = await mesh.retry_task(args.task_id)
    if args.wait:
        return _finished(await _wait_reporting(mesh, args.task_id, None, args))
    return CommandResult(f"🔁 {short_id(args.task_id)} replayed on {where}.",
                         {"task_id": args.task_id, "node_name": where}, bare=where)


# -- memory ----------------------------------------------------------------------------------

@command("/mesh_sync", "Pull every memory change not yet applied here, now", surfaces=IN_A_NODE)
async def _sync(mesh: AgentMeshManager, args: Args) -> CommandResult:
    moved = await mesh.sync_now()
    repaired = await mesh.anti_entropy() if mesh.is_worker else {"buckets": 0, "read": 0, "applied": 0, "resent": 0}
    moved.update({f"anti_entropy_{k}": v for k, v in repaired.items()})
    return CommandResult(f"🔄 Memory sync: {moved['seen']} entries read, {moved['applied']} applied; anti-entropy: "
                         f"{repaired['buckets']} differing buckets ({repaired['read']} read: a peer may hold "
                         f"something new there), {repaired['applied']} repaired here, "
                         f"{repaired['resent']} re-sent; {mesh.memory_count()} items in the local replica.", moved)


@command(
    "/mesh_remember", "Write a memory fact and share it",
    Arg("memory_type", "memory type (its conflict strategy comes from the config)", flag="--type",
        default="fact", metavar="TYPE"),
    Arg("memory_priority", "sync priority, 0-10", flag="--priority", type=int, default=5, metavar="P"),
    Arg("key", metavar="KEY"),
    Arg("value", "the value as JSON (on a /mesh_ line, the rest of the line)", metavar="VALUE_JSON",
        decode=json_value, rest=True),
)
async def _remember(mesh: AgentMeshManager, args: Args) -> CommandResult:
    key = await mesh.sync_memory_item(args.memory_type, args.value, args.memory_priority, key=args.key)
    return CommandResult(f"🧠 Remembered {key}.", {"key": key, "value": args.value}, bare=key)


@command("/mesh_recall", "Read a memory fact from this node's replica",
         Arg("key", metavar="KEY"),
         Arg("memory_type", "only this memory type", flag="--type", metavar="TYPE", bare=True))
async def _recall(mesh: AgentMeshManager, args: Args) -> CommandResult:
    data = recollection_dict(await mesh.recall_item(args.key, args.memory_type))
    text = f"🧠 {data['key']} ({data['memory_type']}) = {as_json(data['value'])}"
    warning = f"⚠️ {len(data['siblings'])} siblings in conflict" if data["siblings"] else None
    if warning:
        text += f"\n  {warning}"
    return CommandResult(text, data, bare=as_json(data["value"]), warning=warning)


@command("/mesh_conflicts", "Open memory conflicts waiting for a person")
async def _conflicts(mesh: AgentMeshManager, args: Args) -> CommandResult:
    await _fresh(mesh)
    data = [conflict_dict(c) for c in mesh.conflicts()]
    return CommandResult(render_conflicts(data), data)


@command("/mesh_resolve", "Settle a conflict: keep one side, merge, or write a new value",
         Arg("conflict_id", "the conflict (a unique prefix is enough)", metavar="ID"),
         Arg("choice", "keep-local, keep-remote, merge, or a JSON value to write", metavar="CHOICE",
             decode=resolution, rest=True))
async def _resolve(mesh: AgentMeshManager, args: Args) -> CommandResult:
    await _fresh(mesh)
    item = await mesh.resolve_conflict(args.conflict_id, args.choice)
    return CommandResult(f"✅ {item.memory_type}/{item.key} = {as_json(item.value)} (wins on every node)",
                         {"key": item.key, "value": item.value, "vv": item.vv})


@command("/mesh_memory", "Keys in this node's replica",
         Arg("pattern", "glob over the keys", optional=True, default="*", metavar="PATTERN"))
async def _memory(mesh: AgentMeshManager, args: Args) -> CommandResult:
    await _fresh(mesh)
    rows = [{"memory_type": mt, "key": key, "siblings": n} for mt, key, n in mesh.memory_keys(args.pattern)]
    return CommandResult(render_memory(args.pattern, rows), rows)


@command("/mesh_history", "Earlier values of a key, newest first (the same on every node)", Arg("key", metavar="KEY"))
async def _history(mesh: AgentMeshManager, args: Args) -> CommandResult:
    rows = await mesh.history(args.key)
    return CommandResult(render_history(args.key, rows), rows)


@command("/mesh_rollback", "Write an earlier value back as a new version",
         Arg("key", metavar="KEY"), Arg("version", metavar="VERSION", decode=version_ref))
async def _rollback(mesh: AgentMeshManager, args: Args) -> CommandResult:
    # No _fresh here: history reads the medium, and a client's history catches the key up itself.
    item = await mesh.rollback(args.key, args.version)
    return CommandResult(f"⏪ {item.key} = {as_json(item.value)}", {"key": item.key, "value": item.value})


@command("/mesh_forget", "Delete a fact on every node", Arg("key", metavar="KEY"))
async def _forget(mesh: AgentMeshManager, args: Args) -> CommandResult:
    await _fresh(mesh, args.key)
    await mesh.forget(args.key)
    return CommandResult(f"🗑️ Forgot {args.key}.", {"key": args.key})


@command("/mesh_help", "List the commands", aliases=("/help", "/?"), surfaces=IN_A_NODE)
async def _help(mesh: AgentMeshManager, args: Args) -> CommandResult:
    data = [{"name": c.name, "usage": c.usage, "summary": c.summary} for c in on_surface(LINE)]
    return CommandResult(render_help(data), data)
