"""The ``mesh-tui`` command: run a node (UI or ``--no-ui``) or one scriptable one-shot command.

One-shot commands join as short-lived client nodes that execute nothing and
are not shown as workers. Exit codes: 0 ok, 1 task failed or dead-lettered,
2 usage or config error, 3 no node can take the task or timed out.
This module never imports textual; the UI is imported only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from mesh_core.config import LOG_FORMATS, LOG_LEVELS, NODE_TYPES, PROTOCOLS, MeshConfig, load_config
from mesh_core.errors import MeshError, NoCapacity, TaskTimeout, UnknownTaskType, UsageError
from mesh_core.model import NodeRole, TaskPriority, TaskStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("node options")
    g.add_argument("--config", metavar="PATH", default=d, help="YAML file with an agent_mesh: section")
    g.add_argument("--name", metavar="NAME", default=d, help="stable node name (keeps the id across restarts)")
    g.add_argument("--node-type", choices=NODE_TYPES, default=d)
    g.add_argument("--protocol", choices=PROTOCOLS, default=d)
    g.add_argument("--db", metavar="PATH", default=d, help="shared SQLite file (sqlite_local)")
    g.add_argument("--redis-url", metavar="URL", default=d,
                   help="redis://[user:pass@]host:port/db, rediss:// (TLS) or unix:// (redis_distributed)")
    g.add_argument("--state-dir", metavar="DIR", default=d, help="folder for node identity and memory replica")
    g.add_argument("--log-format", choices=LOG_FORMATS, default=d)
    g.add_argument("--log-level", choices=LOG_LEVELS, default=d,
                   help="info: every event; warning: no line per task or memory item (busy workers)")
    g.add_argument("--handlers", metavar="MODULE", action="append", default=d,
                   help="python module registering task handlers (repeatable)")
    g.add_argument("--capacity", type=int, metavar="N", default=d, help="max tasks held at once")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mesh-tui", description="Run an Agent Mesh node, or talk to the mesh.")
    _global_options(parser, suppress=False)
    parser.add_argument("--no-ui", action="store_true", help="run the node headless (log lines, commands on stdin)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        return p

    p = add("status", "mesh overview: local view, nodes, task counts")
    p.add_argument("--json", action="store_true")
    p = add("agents", "every node in detail")
    p.add_argument("--json", action="store_true")
    p = add("tasks", "recent tasks, newest first")
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", choices=[s.value for s in TaskStatus])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--tree", metavar="TASK_ID", help="show one task and its subtasks as a tree")
    p = add("submit", "submit a task to the mesh")
    p.add_argument("task_type")
    p.add_argument("--payload", default="null", metavar="JSON")
    p.add_argument("--priority", default="normal", choices=[x.name.lower() for x in TaskPriority])
    p.add_argument("--prefer", action="append", default=[], choices=NODE_TYPES, metavar="NODE_TYPE")
    p.add_argument("--require", action="append", default=[], metavar="CAP")
    p.add_argument("--timeout", type=float, metavar="S", help="per-attempt timeout of the task")
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.add_argument("--wait-timeout", type=float, metavar="S", help="give up waiting after S seconds (exit 3)")
    p.add_argument("--task-id", help="idempotency key: submitting the same id twice makes one task")
    p.add_argument("--queue", action="store_true",
                   help="when every node is full, wait in the mesh-wide pending list instead of exit 3")
    p.add_argument("--json", action="store_true")
    p = add("cancel", "cancel a task and its subtasks")
    p.add_argument("task_id")
    p.add_argument("--json", action="store_true")
    p = add("retry", "replay a dead-lettered, failed or cancelled task")
    p.add_argument("task_id")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--json", action="store_true")
    p = add("remember", "write a memory fact and share it with the mesh")
    p.add_argument("key")
    p.add_argument("value", metavar="VALUE_JSON")
    p.add_argument("--type", default="fact", dest="memory_type")
    p.add_argument("--priority", type=int, default=5, dest="memory_priority")
    p = add("conflicts", "open memory conflicts")
    p.add_argument("--json", action="store_true")
    p = add("resolve", "settle a memory conflict")
    p.add_argument("conflict_id")
    p.add_argument("choice", metavar="keep-local|keep-remote|merge|VALUE_JSON")
    p.add_argument("--json", action="store_true")
    p = add("history", "earlier values of a memory key")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    p = add("rollback", "write an earlier value back as a new version")
    p.add_argument("key")
    p.add_argument("version")
    p.add_argument("--json", action="store_true")
    p = add("memory", "keys in the replica")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--json", action="store_true")
    p = add("forget", "delete a memory fact everywhere")
    p.add_argument("key")
    p.add_argument("--json", action="store_true")
    p = add("recall", "read a memory fact")
    p.add_argument("key")
    p.add_argument("--type", default=None, dest="memory_type")
    p.add_argument("--json", action="store_true")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    get = lambda name: getattr(args, name, None)  # noqa: E731
    return {"node_name": get("name"), "node_type": get("node_type"), "protocol": get("protocol"),
            "sqlite_db_path": get("db"), "redis.url": get("redis_url"), "state_dir": get("state_dir"),
            "log_format": get("log_format"), "log_level": get("log_level"),
            "handlers": get("handlers"), "max_capacity": get("capacity")}


def _json_arg(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=str, ensure_ascii=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None), overrides=_overrides(args))
    except MeshError as exc:
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in config.warnings:
        print(f"mesh-tui: warning: {warning}", file=sys.stderr)
    if args.command is None:
        from .headless import serve
        if not args.no_ui:
            from .app import run_app  # the only place textual is imported: never on the --no-ui path
            return run_app(config)
        try:
            return asyncio.run(serve(config))
        except KeyboardInterrupt:
            return EXIT_OK
    try:
        return asyncio.run(_oneshot(config, args))
    except MeshError as exc:
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_FAILED


async def _oneshot(config: MeshConfig, args: argparse.Namespace) -> int:
    from mesh_core.commands import (
        render_agents,
        render_status,
        render_tasks,
        render_tree,
        status_data,
        task_dict,
        tree_dict,
    )
    from mesh_core.manager import AgentMeshManager

    payload = _json_arg("--payload", args.payload) if args.command == "submit" else None
    value = _json_arg("VALUE_JSON", args.value) if args.command == "remember" else None
    mesh = AgentMeshManager(config, role=NodeRole.CLIENT)
    await mesh.start()
    try:
        if args.command in ("status", "agents"):
            data = await status_data(mesh)
            if args.json:
                _print_json(data if args.command == "status" else data["nodes"])
            else:
                print(render_status(data) if args.command == "status" else render_agents(data))
            return EXIT_OK
        if args.command == "tasks" and args.tree:
            tree = await mesh.task_tree(args.tree)
            _print_json(tree_dict(tree)) if args.json else print("\n".join(render_tree(tree)))
            return EXIT_OK
        if args.command == "cancel":
            outcomes = await mesh.cancel_task(args.task_id)
            _print_json(outcomes) if args.json else print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
            return EXIT_OK
        if args.command == "retry":
            where = await mesh.retry_task(args.task_id)
            if not args.wait:
                _print_json({"task_id": args.task_id, "node_name": where}) if args.json else print(where)
                return EXIT_OK
            return await _report(await mesh.wait_task(args.task_id), args.json)
        if args.command == "tasks":
            status = TaskStatus(args.status) if args.status else None
            tasks = [task_dict(t) for t in await mesh.list_tasks(status, args.limit)]
            _print_json(tasks) if args.json else print(render_tasks(tasks))
            return EXIT_OK
        if args.command == "submit":
            return await _submit(mesh, args, payload)
        if args.command == "remember":
            key = await mesh.sync_memory_item(args.memory_type, value, args.memory_priority, key=args.key)
            print(key)
            return EXIT_OK
        if args.command == "recall":
            found = await mesh.recall_item(args.key, args.memory_type)
            siblings = [{"value": s.value, "origin": s.origin, "hlc": s.hlc} for s in found.siblings]
            if args.json:
                _print_json({"key": found.key, "memory_type": found.memory_type, "value": found.value,
                             "siblings": siblings, "origin": found.origin})
            else:
                print(json.dumps(found.value, ensure_ascii=False))
                if siblings:
                    print(f"⚠️ {len(siblings)} siblings in conflict", file=sys.stderr)
            return EXIT_OK
        if args.command in ("conflicts", "resolve", "history", "rollback", "memory", "forget"):
            return await _memory_command(mesh, args)
        raise UsageError(f"unknown command {args.command!r}")
    finally:
        await mesh.stop()


async def _submit(mesh: Any, args: argparse.Namespace, payload: Any) -> int:
    try:
        task_id = await mesh.submit_task(args.task_type, payload, priority=args.priority,
                                         preferred_node_types=args.prefer, required_capabilities=args.require,
                                         timeout_s=args.timeout, task_id=args.task_id, queue=args.queue)
    except (UnknownTaskType, NoCapacity) as exc:
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not args.wait:
        _print_json({"task_id": task_id}) if args.json else print(task_id)
        return EXIT_OK
    try:
        task = await mesh.wait_task(task_id, args.wait_timeout)
    except TaskTimeout as exc:
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return await _report(task, args.json)


async def _report(task: Any, as_json: bool) -> int:
    ok = task.status is TaskStatus.SUCCEEDED
    if as_json:
        _print_json({"task_id": task.task_id, "status": task.status.value, "result": task.result,
                     "node_id": task.node_id, "node_name": task.node_name, "attempts": task.attempt,
                     "error": task.error, "errors": [a.error for a in task.attempts if a.error]})
    elif ok:
        print(json.dumps(task.result, ensure_ascii=False, default=str))
    else:
        print(f"mesh-tui: task {task.task_id} {task.status.value}: {task.error}", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


async def _memory_command(mesh: Any, args: argparse.Namespace) -> int:
    """Memory subcommands share the /mesh_* implementations (one behaviour, one place)."""
    from mesh_core.commands import run_command

    if args.command in ("history", "rollback", "memory", "forget", "conflicts", "resolve"):
        # A client's replica is empty: bring the keys it is asked about up to date first.
        if getattr(args, "key", None):
            await mesh.catch_up(args.key)
        else:
            await mesh.sync_now()
    words = {"conflicts": [], "resolve": [args.conflict_id if args.command == "resolve" else "",
                                          getattr(args, "choice", "")],
             "history": [getattr(args, "key", "")], "rollback": [getattr(args, "key", ""),
                                                                  getattr(args, "version", "")],
             "memory": [getattr(args, "pattern", "*")], "forget": [getattr(args, "key", "")]}[args.command]
    line = " ".join([f"/mesh_{args.command}", *(w for w in words if w)])
    result = await run_command(mesh, line)
    if not result.ok:
        print(f"mesh-tui: {result.text.removeprefix('error: ')}", file=sys.stderr)
        return EXIT_USAGE
    _print_json(result.data) if args.json else print(result.text)
    return EXIT_OK
