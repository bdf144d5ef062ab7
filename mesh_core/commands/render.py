"""Text layouts of the command data, modelled on the seed's ``/mesh_status`` and ``/mesh_agents`` blocks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..model import STATUS_LIGHTS, NodeStatus, short_id

RULE = "=" * 50


def _pct(load: float) -> str:
    return f"{load * 100:.1f}%"


def as_json(value: Any) -> str:
    """A value on one line as the text views show it."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _light(status: str, overloaded: bool = False) -> str:
    if overloaded:
        return "🟡"  # alive but over 90% load: it gets no new work until it drops
    try:
        return STATUS_LIGHTS[NodeStatus(status)]
    except ValueError:
        return "⚫"


def troubled_loops(loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The loops worth a line: down now, or restarted since the node started (a healthy node shows none)."""
    return [loop for loop in loops if loop["restarts"] or loop["state"] in ("restarting", "dead")]


def loop_line(loop: dict[str, Any]) -> str:
    """``claim: ⚠️ restarting (3 restarts; last ValueError: bad value)``."""
    mark = "" if loop["state"] == "running" else "⚠️ "
    last = f"; last {loop['last_error']}" if loop["last_error"] else ""
    return f"{loop['name']}: {mark}{loop['state']} ({loop['restarts']} restarts{last})"


def medium_label(local: Mapping[str, Any]) -> str:
    """The protocol as configured, with the medium ``hybrid`` chose: ``hybrid→redis_distributed``; and
    ``INSECURE`` after it when grpc_mesh listens in plaintext on a non-loopback address (``--insecure``)."""
    protocol = str(local.get("protocol", "-"))
    backend = local.get("backend") or {}
    chosen = backend.get("backend")
    label = f"{protocol}→{chosen}" if protocol == "hybrid" and chosen else protocol
    return f"{label} ⚠️ INSECURE" if backend.get("insecure") else label


def redis_lines(backend: dict[str, Any]) -> list[str]:
    """The way to Redis when it is more than one server, or has been away: the server in use, outages, WAIT."""
    mode = backend.get("mode")
    if mode is None or (mode == "single" and not backend.get("outages") and "away_seconds" not in backend):
        return []
    parts = [f"{mode}, serving {backend.get('serving', '?')}"]
    if "away_seconds" in backend:
        parts.append(f"⚠️ away for {backend['away_seconds']:.1f} s")
    if backend.get("outages"):
        last = backend.get("last_outage") or {}
        parts.append(f"{backend['outages']} outage{'s' if backend['outages'] != 1 else ''}"
                     + (f", the last {last['seconds']:.1f} s" if "seconds" in last else ""))
    if backend.get("wait_replicas"):
        parts.append(f"acknowledged after {backend['wait_replicas']} replica(s)"
                     + (f", {backend['wait_timeouts']} short" if backend.get("wait_timeouts") else ""))
    return [f"  • Redis: {'; '.join(parts)}"]


def grpc_tls_lines(backend: Mapping[str, Any]) -> list[str]:
    """grpc_mesh's TLS line, and a warning when this node's certificate is expired or ends within 14 days."""
    tls = backend.get("grpc_tls")
    if backend.get("insecure"):
        return ["  • TLS: ⚠️ INSECURE: plaintext on a non-loopback address (--insecure); "
                "mesh-tui certs init && mesh-tui certs issue NAME --host H to fix"]
    if not tls:
        return []
    lines = [f"  • TLS: 🔒 mutual, certificate {tls['name']} ({tls['cert_file']}, sha256 {tls['fingerprint'][:23]}…)"]
    if tls["expired"]:
        lines.append(f"  • Certificate: ⚠️ EXPIRED ({tls['not_after']}): peers refuse this node; "
                     f"renew: mesh-tui certs issue {tls['name']} --force")
    elif tls["expiring"]:
        lines.append(f"  • Certificate: ⚠️ expires in {tls['days_left']:.0f} days ({tls['not_after']}): "
                     f"renew: mesh-tui certs issue {tls['name']} --force (reloaded without restart)")
    return lines


def render_status(d: dict[str, Any]) -> str:
    local, tasks, nodes = d["local"], d["tasks"], d["nodes"]
    state = "🟢 ENABLED" if d["enabled"] else "🔴 DISABLED"
    lines = [f"🌐 Agent Mesh Status: {state}", RULE, "🏠 Local Node:", f"  • Node ID: {local['node_id'][:12]}...",
             f"  • Name: {local['name']}"]
    if "node_type" in local:
        load_count = local["running"] + local["queued"]
        lines += [f"  • Type: {local['node_type']}",
                  f"  • Status: {_light(local['status'])} {local['status'].upper()}",
                  f"  • Protocol: {medium_label(local)}" + ("" if local["backend_healthy"] else " (⚠️ degraded)"),
                  f"  • Load: {_pct(local['load'])} ({load_count}/{local['capacity']})"]
        lines += [f"  • Note: {note}" for note in local.get("notes", [])]
    else:
        lines += ["  • Role: one-shot client (executes nothing)", f"  • Protocol: {medium_label(local)}"]
    if local["protocol"] == "hybrid":
        lines.append(f"  • Backend: {local['backend_reason']}")  # one line: which medium hybrid chose and why
    tls = (local.get("backend") or {}).get("tls")
    if tls:
        lines.append(f"  • TLS: 🔒 CA {tls['ca_file']}, client certificate {tls['cert_file'] or '(none)'}"
                     + ("" if tls["check_hostname"] else ", host name not checked"))
    lines += grpc_tls_lines(local.get("backend") or {})
    lines += redis_lines(local.get("backend") or {})
    lines += [f"  • Loop {loop_line(loop)}" for loop in troubled_loops(local.get("loops", []))]
    if local.get("clock_offset_s") is not None:
        lines.append(f"  • Clock: ⚠️ degraded: {local['clock_offset_s']:+.1f} s off the mesh's: writes refused")
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
        if n.get("clock_ahead_s"):
            note += f" - ⏱ clock skewed ({n['clock_ahead_s']:+.0f} s)"
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
    line = (f"{'  ' * depth}{'└─ ' if depth else ''}{short_id(t.task_id)} {t.task_type} {t.status.value}"
            f" on {t.node_name or '-'} (attempt {t.attempt})")
    out = [line]
    for child in tree["children"]:
        out += render_tree(child, depth + 1)
    return out


def render_tasks(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "📋 No tasks."
    lines = ["📋 Tasks (newest first)", "=" * 60]
    for t in tasks:
        where = t["node_name"] or "-"
        lines.append(f"  {short_id(t['task_id'])}  {t['task_type']:<14} {t['status']:<11} {t['priority']:<8}"
                     f" on {where:<16} attempt {t['attempts']}  {t['why']}")
    return "\n".join(lines)


def render_conflicts(conflicts: list[dict[str, Any]]) -> str:
    if not conflicts:
        return "✅ No open conflicts."
    lines = ["⚔️ Open conflicts", RULE]
    for c in conflicts:
        lines.append(f"  {c['conflict_id'][:12]}  {c['memory_type']}/{c['key']}  {len(c['siblings'])} siblings"
                     f"  ({c['strategy']}) {c['reason']}")
        lines += [f"      from {s['origin'][:12]}: {as_json(s['value'])}" for s in c["siblings"]]
    return "\n".join(lines)


MEMORY_LINES = 200  # the text view of /mesh_memory stops here; --json has every key


def render_memory(pattern: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"🧠 {len(rows)} keys matching {pattern}"]
    lines += [f"  {r['memory_type']}/{r['key']}" + (f"  ⚠️ {r['siblings']} siblings" if r["siblings"] > 1 else "")
              for r in rows[:MEMORY_LINES]]
    return "\n".join(lines)


def render_history(key: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"📜 History of {key} ({len(rows)} earlier versions, newest first; roll back by index or id)"]
    lines += [f"  {h['index']:>2}  {h['version']}  {as_json(h['value'])}  from {h['origin'][:12]}" for h in rows]
    return "\n".join(lines)


USAGE_COLUMN = 40  # a longer usage puts its summary on the next line


def render_help(commands: list[dict[str, str]]) -> str:
    width = min(USAGE_COLUMN, max((len(c["usage"]) for c in commands), default=0))
    lines = ["🧭 Mesh commands", RULE]
    for c in commands:
        if len(c["usage"]) > width:
            lines += [f"  {c['usage']}", f"  {'':<{width}}  {c['summary']}"]
        else:
            lines.append(f"  {c['usage']:<{width}}  {c['summary']}")
    return "\n".join(lines)
