"""The ``/mesh_*`` commands: one registry, structured results, text layouts modelled on the seed.

The headless node, the CLI subcommands and the terminal UI all call these;
each command builds its data first and renders text from that data, so
``--json`` and the text view can never disagree.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import MeshError, UsageError
from .model import STATUS_LIGHTS, NodeStatus, Task, TaskStatus

if TYPE_CHECKING:
    from .manager import AgentMeshManager

RULE = "=" * 50


@dataclass(frozen=True)
class CommandResult:
    text: str
    data: Any = None
    ok: bool = True


Runner = Callable[["AgentMeshManager", list[str]], Awaitable[CommandResult]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    usage: str
    run: Runner
    aliases: tuple[str, ...] = field(default=())
    raw: bool = False  # gets the rest of the line as one argument (for JSON values)


REGISTRY: dict[str, Command] = {}


def command(name: str, summary: str, usage: str = "", aliases: tuple[str, ...] = (),
            raw: bool = False) -> Callable[[Runner], Runner]:
    def wrap(fn: Runner) -> Runner:
        REGISTRY[name] = Command(name, summary, usage or name, fn, aliases, raw)
        return fn
    return wrap


def lookup(word: str) -> Command | None:
    word = word.strip()
    key = word if word.startswith("/") else f"/{word}"
    if key in REGISTRY:
        return REGISTRY[key]
    if not key.startswith("/mesh_") and f"/mesh_{key[1:]}" in REGISTRY:
        return REGISTRY[f"/mesh_{key[1:]}"]
    for cmd in REGISTRY.values():
        if key in cmd.aliases:
            return cmd
    return None


def complete(prefix: str) -> list[str]:
    """Command names that start with ``prefix`` (for Tab completion)."""
    return sorted(name for name in REGISTRY if name.startswith(prefix))


async def run_command(mesh: AgentMeshManager, line: str) -> CommandResult:
    """Parse and run one command line; errors come back as a failed result, never raised."""
    head, _, rest = line.strip().partition(" ")
    if not head:
        return CommandResult("", ok=True)
    cmd = lookup(head)
    if cmd is None:
        return CommandResult(f"error: unknown command {head!r} (try /mesh_help)", ok=False)
    try:
        words = [rest.strip()] if cmd.raw else shlex.split(rest)
    except ValueError as exc:
        return CommandResult(f"error: {exc}", ok=False)
    try:
        return await cmd.run(mesh, words)
    except MeshError as exc:
        return CommandResult(f"error: {exc}", ok=False)


# -- data ------------------------------------------------------------------------------

def _pct(load: float) -> str:
    return f"{load * 100:.1f}%"


OVERLOADED = 0.9


def node_dict(info: Any, status: NodeStatus, now: float) -> dict[str, Any]:
    return {
        "node_id": info.node_id, "name": info.name, "node_type": info.node_type.value, "status": status.value,
        "overloaded": status is NodeStatus.ACTIVE and info.load > OVERLOADED,
        "load": round(info.load, 4), "capacity": info.capacity, "running": info.running, "queued": info.queued,
        "capabilities": sorted(info.capabilities), "task_types": sorted(info.task_types),
        "last_seen_s": round(max(0.0, now - info.last_seen), 3), "incarnation": info.incarnation,
        "host": info.host, "port": info.port, "pid": info.pid, "metrics": info.metrics,
    }


def task_dict(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id, "task_type": task.task_type, "status": task.status.value,
        "priority": task.priority.name.lower(), "node_id": task.node_id, "node_name": task.node_name,
        "attempts": task.attempt, "why": task.why, "submitted_at": task.submitted_at,
        "finished_at": task.finished_at, "error": task.error,
    }


def task_summary(counts: dict[str, int]) -> dict[str, int]:
    return {
        "pending": counts.get("pending", 0) + counts.get("assigned", 0),
        "running": counts.get("running", 0),
        "succeeded": counts.get("succeeded", 0),
        "failed": counts.get("failed", 0),
        "dead_letter": counts.get("dead_letter", 0),
        "cancelled": counts.get("cancelled", 0),
    }


async def status_data(mesh: AgentMeshManager) -> dict[str, Any]:
    view = await mesh.mesh_view()
    now = view["snapshot"].now
    nodes = [node_dict(m.info, m.status, now) for m in view["members"]]
    nodes.sort(key=lambda n: (n["status"] != "active", n["name"]))
    local: dict[str, Any]
    if mesh.is_worker:
        info = mesh.local_info()
        judged = mesh.status_of(mesh.node_id)
        status = NodeStatus.LEFT if not mesh.enabled else (judged or NodeStatus.ACTIVE)
        local = node_dict(info, status, time.time())
        local["notes"] = list(mesh.notes)
    else:
        local = {"node_id": mesh.node_id, "name": mesh.name, "role": "client", "status": "client"}
    local.update({"protocol": mesh.config.protocol, "backend": mesh.backend_info(),
                  "backend_reason": mesh.backend_reason, "healthy": mesh.healthy,
                  "memory_sync": mesh.config.memory_sync.strategy, "memory_primary": mesh.memory_primary})
    return {
        "enabled": mesh.enabled or not mesh.is_worker,
        "local": local,
        "nodes": nodes,
        "tasks": task_summary(view["task_counts"]),
        "memory_items": mesh.memory_count(),
        "counters": dict(mesh.counters),
    }


# -- text layouts -------------------------------------------------------------------------

def _light(status: str, overloaded: bool = False) -> str:
    if overloaded:
        return "🟡"  # alive but over 90% load: it gets no new work until it drops
    try:
        return STATUS_LIGHTS[NodeStatus(status)]
    except ValueError:
        return "⚫"


def render_status(d: dict[str, Any]) -> str:
    local, tasks, nodes = d["local"], d["tasks"], d["nodes"]
    state = "🟢 ENABLED" if d["enabled"] else "🔴 DISABLED"
    lines = [f"🌐 Agent Mesh Status: {state}", RULE, "🏠 Local Node:", f"  • Node ID: {local['node_id'][:12]}...",
             f"  • Name: {local['name']}"]
    if "node_type" in local:
        load_count = local["running"] + local["queued"]
        lines += [f"  • Type: {local['node_type']}",
                  f"  • Status: {_light(local['status'])} {local['status'].upper()}",
                  f"  • Protocol: {local['protocol']}" + ("" if local["healthy"] else " (⚠️ degraded)"),
                  f"  • Load: {_pct(local['load'])} ({load_count}/{local['capacity']})"]
        lines += [f"  • Note: {note}" for note in local.get("notes", [])]
    else:
        lines += ["  • Role: one-shot client (executes nothing)", f"  • Protocol: {local['protocol']}"]
    active = sum(1 for n in nodes if n["status"] == "active")
    lines += ["", "📊 Mesh Statistics:", f"  • Total Nodes: {len(nodes)}", f"  • Active Nodes: {active}",
              f"  • Pending Tasks: {tasks['pending']}", f"  • Running Tasks: {tasks['running']}",
              f"  • Completed Tasks: {tasks['succeeded']}", f"  • Failed Tasks: {tasks['failed']}",
              f"  • Dead Letters: {tasks['dead_letter']}", f"  • Memory Sync Items: {d['memory_items']}"]
    others = [n for n in nodes if n["node_id"] != local["node_id"]]
    lines += ["", f"🤖 Known Nodes ({len(others)}):"]
    for n in others:
        note = "" if n["status"] == "active" else f" - {n['status']}"
        if n.get("overloaded"):
            note = " - overloaded"
        lines.append(f"  • {_light(n['status'], n.get('overloaded', False))} {n['name']} ({n['node_id'][:12]}...,"
                     f" {n['node_type']}) - Load: {_pct(n['load'])}{note}")
    if not others:
        lines.append("  (none yet)")
    return "\n".join(lines)


def render_agent(n: dict[str, Any], *, local: bool = False) -> list[str]:
    m = n.get("metrics") or {}
    load_count = n["running"] + n["queued"]
    return [
        "🏠 Local Node (This Instance):" if local else f"{_light(n['status'])} {n['name']}:",
        f"  📧 ID: {n['node_id']}",
        f"  🏷️ Type: {n['node_type']}",
        f"  📊 Status: {_light(n['status'])} {n['status'].upper()}",
        f"  🖥️ Host: {n['host']}:{n['port']} (pid {n['pid']}, incarnation {n['incarnation']})",
        f"  ⚡ Load: {_pct(n['load'])} ({load_count}/{n['capacity']})",
        f"  💾 Memory: {m.get('memory_mb', 0):.1f}MB",
        f"  🔧 CPU: {m.get('cpu_percent', 0):.1f}%",
        f"  ⏱️ Avg Response: {m.get('avg_response_ms', 0):.1f}ms",
        f"  ✅ Tasks Done: {m.get('tasks_done', 0)}",
        f"  ❌ Error Rate: {m.get('error_rate', 0) * 100:.1f}%",
        f"  🛠️ Capabilities: {', '.join(n['capabilities']) or '-'}",
        f"  📋 Task Types: {', '.join(n['task_types']) or '-'}",
        f"  💓 Last Heartbeat: {n['last_seen_s']:.1f}s ago",
        *(f"  📝 Note: {note}" for note in m.get("notes", [])),
    ]


def render_agents(d: dict[str, Any]) -> str:
    lines = ["🤖 Mesh Agents Overview", "=" * 60]
    local_id = d["local"]["node_id"]
    for n in d["nodes"]:
        lines += render_agent(n, local=n["node_id"] == local_id)
        lines.append("")
    if not d["nodes"]:
        lines.append("(no worker nodes in the mesh)")
    return "\n".join(lines).rstrip()


def render_tree(tree: dict[str, Any], depth: int = 0) -> list[str]:
    t = tree["task"]
    line = (f"{'  ' * depth}{'└─ ' if depth else ''}{t.task_id[:12]} {t.task_type} {t.status.value}"
            f" on {t.node_name or '-'} (attempt {t.attempt})")
    out = [line]
    for child in tree["children"]:
        out += render_tree(child, depth + 1)
    return out


def tree_dict(tree: dict[str, Any]) -> dict[str, Any]:
    return {**task_dict(tree["task"]), "children": [tree_dict(c) for c in tree["children"]]}


def render_tasks(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "📋 No tasks."
    lines = ["📋 Tasks (newest first)", "=" * 60]
    for t in tasks:
        where = t["node_name"] or "-"
        lines.append(f"  {t['task_id'][:12]}  {t['task_type']:<14} {t['status']:<11} {t['priority']:<8}"
                     f" on {where:<16} attempt {t['attempts']}  {t['why']}")
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------------------

def _no_args(name: str, args: list[str]) -> None:
    if args:
        raise UsageError(f"{name} takes no arguments")


@command("/mesh_status", "Mesh overview: this node, statistics, known nodes")
async def _status(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_status", args)
    data = await status_data(mesh)
    return CommandResult(render_status(data), data)


@command("/mesh_agents", "Every node in detail: load, CPU, memory, response time, capabilities")
async def _agents(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_agents", args)
    data = await status_data(mesh)
    return CommandResult(render_agents(data), data["nodes"])


@command("/mesh_tasks", "Recent tasks with where they ran and why", "/mesh_tasks [STATUS]")
async def _tasks(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    status = None
    if args:
        try:
            status = TaskStatus(args[0])
        except ValueError:
            allowed = ", ".join(s.value for s in TaskStatus)
            raise UsageError(f"/mesh_tasks: unknown status {args[0]!r} (allowed: {allowed})") from None
    tasks = [task_dict(t) for t in await mesh.list_tasks(status, limit=50)]
    return CommandResult(render_tasks(tasks), tasks)


@command("/mesh_cancel", "Cancel a task (queued: at once; running: cooperatively) and its subtasks",
         "/mesh_cancel TASK_ID")
async def _cancel(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) != 1:
        raise UsageError("usage: /mesh_cancel TASK_ID")
    outcomes = await mesh.cancel_task(args[0])
    lines = [f"🛑 {task_id[:12]}: {outcome}" for task_id, outcome in outcomes.items()]
    return CommandResult("\n".join(lines), outcomes)


@command("/mesh_retry", "Replay a dead-lettered, failed or cancelled task", "/mesh_retry TASK_ID")
async def _retry(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) != 1:
        raise UsageError("usage: /mesh_retry TASK_ID")
    where = await mesh.retry_task(args[0])
    return CommandResult(f"🔁 {args[0][:12]} replayed on {where}.", {"task_id": args[0], "node_name": where})


@command("/mesh_enable", "Join the mesh (again) and take work")
async def _enable(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_enable", args)
    if mesh.enabled:
        return CommandResult("🟢 Mesh already enabled.", {"enabled": True})
    await mesh.enable()
    return CommandResult(f"🟢 Mesh enabled: {mesh.name} joined as incarnation "
                         f"{mesh.incarnation}.", {"enabled": True})


@command("/mesh_disable", "Hand back work and leave the mesh (the node stays up)")
async def _disable(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_disable", args)
    if not mesh.enabled:
        return CommandResult("🔴 Mesh already disabled.", {"enabled": False})
    await mesh.disable()
    return CommandResult(f"🔴 Mesh disabled: {mesh.name} left; its queued work was handed back.",
                         {"enabled": False})


@command("/mesh_sync", "Pull every memory change not yet applied here, now")
async def _sync(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_sync", args)
    moved = await mesh.sync_now()
    repaired = await mesh.anti_entropy() if mesh.is_worker else {"buckets": 0, "applied": 0, "resent": 0}
    moved.update({f"anti_entropy_{k}": v for k, v in repaired.items()})
    return CommandResult(f"🔄 Memory sync: {moved['seen']} entries read, {moved['applied']} applied; anti-entropy: "
                         f"{repaired['buckets']} differing buckets, {repaired['applied']} repaired here, "
                         f"{repaired['resent']} re-sent; {mesh.memory_count()} items in the "
                         "local replica.", moved)


@command("/mesh_remember", "Write a memory fact and share it", "/mesh_remember [--type T] KEY VALUE_JSON", raw=True)
async def _remember(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    match = _REMEMBER.match(args[0] if args else "")
    if match is None:
        raise UsageError("usage: /mesh_remember [--type T] KEY VALUE_JSON")
    try:
        value = json.loads(match["value"])
    except json.JSONDecodeError as exc:
        raise UsageError(f"/mesh_remember: VALUE_JSON is not valid JSON: {exc.msg}") from None
    key = await mesh.sync_memory_item(match["type"] or "fact", value, key=match["key"])
    return CommandResult(f"🧠 Remembered {key}.", {"key": key, "value": value})


@command("/mesh_recall", "Read a memory fact from this node's replica", "/mesh_recall KEY [TYPE]")
async def _recall(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) not in (1, 2):
        raise UsageError("usage: /mesh_recall KEY [TYPE]")
    found = await mesh.recall_item(args[0], args[1] if len(args) == 2 else None)
    siblings = [{"value": s.value, "origin": s.origin, "hlc": s.hlc} for s in found.siblings]
    text = f"🧠 {found.key} ({found.memory_type}) = {json.dumps(found.value, ensure_ascii=False, default=str)}"
    if siblings:
        text += f"\n  ⚠️ {len(siblings)} siblings in conflict"
    return CommandResult(text, {"key": found.key, "memory_type": found.memory_type, "value": found.value,
                                "siblings": siblings, "origin": found.origin})


def conflict_dict(c: Any) -> dict[str, Any]:
    return {"conflict_id": c.conflict_id, "memory_type": c.memory_type, "key": c.key, "strategy": c.strategy,
            "reason": c.reason, "opened_at": c.opened_at,
            "siblings": [{"value": s.value, "origin": s.origin, "hlc": s.hlc, "vv": s.vv} for s in c.siblings]}


@command("/mesh_conflicts", "Open memory conflicts waiting for a person")
async def _conflicts(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    _no_args("/mesh_conflicts", args)
    data = [conflict_dict(c) for c in mesh.conflicts()]
    if not data:
        return CommandResult("✅ No open conflicts.", data)
    lines = ["⚔️ Open conflicts", RULE]
    for c in data:
        lines.append(f"  {c['conflict_id'][:12]}  {c['memory_type']}/{c['key']}  {len(c['siblings'])} siblings"
                     f"  ({c['strategy']}) {c['reason']}")
        for s in c["siblings"]:
            lines.append(f"      from {s['origin'][:12]}: {json.dumps(s['value'], ensure_ascii=False, default=str)}")
    return CommandResult("\n".join(lines), data)


_RESOLVE = re.compile(r"^(?P<id>\S+)\s+(?P<choice>.+)$", re.DOTALL)


@command("/mesh_resolve", "Settle a conflict", "/mesh_resolve ID keep-local|keep-remote|merge|VALUE_JSON", raw=True)
async def _resolve(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    match = _RESOLVE.match(args[0] if args else "")
    if match is None:
        raise UsageError("usage: /mesh_resolve ID keep-local|keep-remote|merge|VALUE_JSON")
    choice: Any = match["choice"].strip()
    if choice not in ("keep-local", "keep-remote", "merge"):
        try:
            choice = json.loads(choice)
        except json.JSONDecodeError as exc:
            raise UsageError(f"/mesh_resolve: the choice is neither keep-local, keep-remote, merge nor JSON: "
                             f"{exc.msg}") from None
    item = await mesh.resolve_conflict(match["id"], choice)
    return CommandResult(f"✅ {item.memory_type}/{item.key} = {json.dumps(item.value, ensure_ascii=False, default=str)}"
                         " (wins on every node)", {"key": item.key, "value": item.value, "vv": item.vv})


@command("/mesh_memory", "Keys in this node's replica", "/mesh_memory [PATTERN]")
async def _memory(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    pattern = args[0] if args else "*"
    found = mesh.memory_keys(pattern)
    rows = [{"memory_type": mt, "key": key, "siblings": n} for mt, key, n in found]
    lines = [f"🧠 {len(rows)} keys matching {pattern}"]
    lines += [f"  {mt}/{key}" + (f"  ⚠️ {n} siblings" if n > 1 else "") for mt, key, n in found[:200]]
    return CommandResult("\n".join(lines), rows)


@command("/mesh_history", "Earlier values of a key, newest first", "/mesh_history KEY")
async def _history(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) != 1:
        raise UsageError("usage: /mesh_history KEY")
    rows = mesh.history(args[0])
    lines = [f"📜 History of {args[0]} ({len(rows)} versions)"]
    lines += [f"  v{h['version']}  {json.dumps(h['value'], ensure_ascii=False, default=str)}  from {h['origin'][:12]}"
              f"  ({h['strategy']})" for h in rows]
    return CommandResult("\n".join(lines), rows)


@command("/mesh_rollback", "Write an earlier value back as a new version", "/mesh_rollback KEY VERSION")
async def _rollback(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) != 2 or not args[1].lstrip("v").isdigit():
        raise UsageError("usage: /mesh_rollback KEY VERSION")
    item = await mesh.rollback(args[0], int(args[1].lstrip("v")))
    return CommandResult(f"⏪ {item.key} = {json.dumps(item.value, ensure_ascii=False, default=str)}",
                         {"key": item.key, "value": item.value})


@command("/mesh_forget", "Delete a fact on every node", "/mesh_forget KEY")
async def _forget(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    if len(args) != 1:
        raise UsageError("usage: /mesh_forget KEY")
    await mesh.forget(args[0])
    return CommandResult(f"🗑️ Forgot {args[0]}.", {"key": args[0]})


@command("/mesh_help", "List the commands", aliases=("/help", "/?"))
async def _help(mesh: AgentMeshManager, args: list[str]) -> CommandResult:
    width = max(len(c.usage) for c in REGISTRY.values())
    lines = ["🧭 Mesh commands", RULE]
    lines += [f"  {c.usage:<{width}}  {c.summary}" for c in REGISTRY.values()]
    return CommandResult("\n".join(lines), [{"name": c.name, "usage": c.usage, "summary": c.summary}
                                            for c in REGISTRY.values()])


_REMEMBER = re.compile(r"^(?:--type\s+(?P<type>\S+)\s+)?(?P<key>\S+)\s+(?P<value>.+)$", re.DOTALL)

