"""The ``mesh-tui`` command: run a node (UI or ``--no-ui``) or one scriptable one-shot command.

The subcommands are the command registry's (``mesh_core.commands``): each
declares its arguments once, and the same declaration parses a ``/mesh_*``
line. One-shot commands join as short-lived client nodes that execute nothing and
are not shown as workers. Exit codes: 0 ok, 1 task failed or dead-lettered or the
medium did not store a write (disk full, read-only or corrupt file, unreachable),
2 usage or config error, 3 no node can take the task or timed out.
This module never imports textual; the UI is imported only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mesh_core.commands import CLI, Command, add_arguments, finish, lookup, on_surface
from mesh_core.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    NODE_TYPES,
    PROTOCOLS,
    MeshConfig,
    MetricsConfig,
    load_config,
)
from mesh_core.errors import MeshError, UsageError
from mesh_core.model import NodeRole

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
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
    g.add_argument("--grpc-port", type=int, metavar="N", default=d,
                   help="port this node's gRPC server listens on; 0 picks a free one (grpc_mesh)")
    g.add_argument("--grpc-host", metavar="H", default=d,
                   help="address the gRPC server binds: 127.0.0.1 (this machine only) or 0.0.0.0 (grpc_mesh)")
    g.add_argument("--insecure", action="store_true", default=d,
                   help="grpc_mesh: listen on a non-loopback --grpc-host without TLS (grpc.insecure; says INSECURE)")
    g.add_argument("--seeds", metavar="HOST:PORT[,HOST:PORT...]", action="append", default=d,
                   help="live members to join through, e.g. a coordination_hub node (repeatable; grpc_mesh, hybrid)")
    g.add_argument("--state-dir", metavar="DIR", default=d, help="folder for node identity and memory replica")
    g.add_argument("--log-format", choices=LOG_FORMATS, default=d)
    g.add_argument("--log-level", choices=LOG_LEVELS, default=d,
                   help="info: every event; warning: no line per task or memory item (busy workers)")
    g.add_argument("--handlers", metavar="MODULE", action="append", default=d,
                   help="python module registering task handlers (repeatable)")
    g.add_argument("--capacity", type=int, metavar="N", default=d, help="max tasks held at once")


def build_parser() -> argparse.ArgumentParser:
    """The ``mesh-tui`` parser: node options, and one subcommand per registry command on the CLI surface."""
    parser = _Parser(prog="mesh-tui", description="Run an Agent Mesh node, or talk to the mesh.")
    _global_options(parser, suppress=False)
    parser.add_argument("--no-ui", action="store_true", help="run the node headless (log lines, commands on stdin)")
    parser.add_argument("--observe", action="store_true",
                        help="join as an observer: the cockpit (or, with --no-ui, the event lines) of the mesh "
                             "from a client that executes nothing and is not listed as a worker")
    parser.add_argument("--metrics-port", type=int, metavar="N", default=None,
                        help="serve this node's Prometheus metrics at http://HOST:N/metrics (off by default; "
                             "0 picks a free port)")
    parser.add_argument("--metrics-host", metavar="H", default=None,
                        help="address the metrics endpoint binds (default 127.0.0.1: this machine only)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in on_surface(CLI):
        p = sub.add_parser(cmd.cli_name, help=cmd.summary, description=cmd.summary)
        _global_options(p, suppress=True)
        add_arguments(p, cmd)
        p.add_argument("--json", action="store_true", help="print the data as one JSON document")
    _certs_parser(sub)
    _events_parser(sub)
    return parser


LOCAL_COMMANDS = ("certs", "events")  # not registry commands: certs never joins the mesh, events streams


def _events_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("events", help="print the mesh's events as lines (join as an observer; --follow to stream)",
                       description="Join as a client that executes nothing and print the events it sees, one per "
                                   "line (--json: one JSON object per line): nodes joining and changing status, "
                                   "tasks changing status anywhere in the mesh, backend health, problems. Without "
                                   "--follow, what it sees within --settle seconds; with --follow, until SIGINT or "
                                   "SIGTERM (exit 0).")
    _global_options(p, suppress=True)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until interrupted")
    p.add_argument("--settle", type=float, metavar="SECONDS", default=2.0,
                   help="without --follow: how long to watch before exiting (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")


def _certs_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    # The defaults live in mesh_core.certs (imported only when certs runs: it loads cryptography).
    p = sub.add_parser("certs", help="the mesh CA and node certificates in <state_dir>/certs",
                       description="Make a mesh CA, issue node certificates, show them (files in <state_dir>/certs, "
                                   "folder 0700, files 0600).")
    actions = p.add_subparsers(dest="certs_action", metavar="ACTION", parser_class=_Parser, required=True)
    init = actions.add_parser("init", help="make the mesh CA (ca.pem, ca.key)")
    init.add_argument("--days", type=int, metavar="N", help="CA lifetime in days (default 3650)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing CA; every node certificate must then be issued again")
    issue = actions.add_parser("issue", help="make node NAME's key and certificate, signed by the CA")
    issue.add_argument("node", metavar="NAME", help="the node's --name (its certificate's CN and mesh-node:NAME SAN)")
    issue.add_argument("--host", action="append", default=[], metavar="H",
                       help="an address peers dial it by: IP address or DNS name (repeatable, or comma-separated)")
    issue.add_argument("--days", type=int, metavar="N", help="lifetime in days (default 90)")
    issue.add_argument("--force", action="store_true", help="replace NAME's key and certificate (rotation)")
    show = actions.add_parser("show", help="subject, SANs, SHA-256 fingerprint and expiry of each certificate")
    for action in (init, issue, show):
        g = action.add_argument_group("node options")
        g.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                       help="YAML file with an agent_mesh: section")
        g.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS, help="the state folder")
        action.add_argument("--json", action="store_true", help="print the data as one JSON document")


def _or(given: int | None, default: int) -> int:
    return default if given is None else given


def _certs(config: MeshConfig, args: argparse.Namespace) -> int:
    """``mesh-tui certs init|issue|show``: files in ``<state_dir>/certs``; nothing joins the mesh."""
    import datetime as dt

    from mesh_core import certs

    now = dt.datetime.now(dt.UTC)
    if args.certs_action == "init":
        infos = [certs.init_ca(config.state_dir, days=_or(args.days, certs.DEFAULT_CA_DAYS), force=args.force, now=now)]
    elif args.certs_action == "issue":
        hosts = [h.strip() for item in args.host for h in item.split(",") if h.strip()]
        infos = [certs.issue(config.state_dir, args.node, hosts, days=_or(args.days, certs.DEFAULT_NODE_DAYS),
                             force=args.force, now=now)]
    else:
        infos = certs.inspect(config.state_dir)
    if args.json:
        _print_json({"folder": str(certs.CertPaths.of(config.state_dir).folder),
                     "certificates": [info.to_dict(now) for info in infos]})
    else:
        print(certs.render(infos, now))
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    get = lambda name: getattr(args, name, None)  # noqa: E731
    return {"node_name": get("name"), "node_type": get("node_type"), "protocol": get("protocol"),
            "sqlite_db_path": get("db"), "redis.url": get("redis_url"), "state_dir": get("state_dir"),
            "log_format": get("log_format"), "log_level": get("log_level"),
            "handlers": get("handlers"), "max_capacity": get("capacity"), "grpc.port": get("grpc_port"),
            "grpc.host": get("grpc_host"), "grpc.seeds": _seeds(get("seeds")),
            "grpc.insecure": True if get("insecure") else None,
            "metrics.port": get("metrics_port"), "metrics.host": get("metrics_host")}


def _seeds(given: list[str] | None) -> list[str] | None:
    """``--seeds a:1,b:2 --seeds c:3`` as one list; config validation checks each ``host:port``."""
    if given is None:
        return None
    return [seed.strip() for item in given for seed in item.split(",") if seed.strip()]


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=str, ensure_ascii=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mesh-tui``; every error ends here as one line on stderr and an exit code, never a traceback."""
    try:
        return _main(argv)
    except MeshError as exc:
        print(f"mesh-tui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as exc:  # a bug or an unforeseen failure: still one line; MESH_TRACEBACK=1 shows where
        if os.environ.get("MESH_TRACEBACK"):
            raise
        print(f"mesh-tui: unexpected error: {type(exc).__name__}: {exc} (set MESH_TRACEBACK=1 for details)",
              file=sys.stderr)
        return EXIT_FAILED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cmd = lookup(args.command) if args.command and args.command not in LOCAL_COMMANDS else None
    if cmd is not None:
        finish(cmd, args)  # bad JSON and the like: exit 2 before joining the mesh
    config = load_config(getattr(args, "config", None), overrides=_overrides(args))
    for warning in config.warnings:
        print(f"mesh-tui: warning: {warning}", file=sys.stderr)
    if args.command == "certs":
        return _certs(config, args)
    if args.command is not None:  # a short-lived client serves no metrics (MESH_METRICS_PORT is the node's port)
        config = config.replace(metrics=MetricsConfig())
    if args.command == "events":
        from .headless import stream_events
        if args.settle < 0 or args.settle != args.settle:
            raise UsageError(f"events: --settle {args.settle} is not a number of seconds of at least 0")
        try:
            return asyncio.run(stream_events(config, follow=args.follow, fmt="json" if args.json else "text",
                                             settle=args.settle))
        except KeyboardInterrupt:
            return EXIT_OK
    if cmd is None:
        from .headless import serve
        if args.observe:
            config = config.replace(node_name=config.node_name or "observer")
        if not args.no_ui:
            from .app import run_app  # the only place textual is imported: never on the --no-ui path
            return run_app(config, observe=args.observe)
        try:
            return asyncio.run(serve(config, observe=args.observe))
        except KeyboardInterrupt:
            return EXIT_OK
    return asyncio.run(_oneshot(config, cmd, args))


async def _oneshot(config: MeshConfig, cmd: Command, args: argparse.Namespace) -> int:
    """Join as a client that executes nothing, run one command, leave; print what a script wants."""
    from mesh_core.manager import AgentMeshManager

    mesh = AgentMeshManager(config, role=NodeRole.CLIENT)
    shown = None
    if getattr(args, "wait", False) and not args.json:  # --json: only the final outcome (with its progress)
        from .progress import ProgressShown
        shown = args.on_progress = ProgressShown(sys.stderr)
    await mesh.start()
    try:
        result = await cmd.run(mesh, args)
    finally:
        if shown is not None:
            shown.close()
        await mesh.stop()
    if args.json:
        _print_json(result.data)
    elif result.ok:
        print(result.text if result.bare is None else result.bare)
    else:
        print(f"mesh-tui: {result.text}", file=sys.stderr)
    if result.warning and not args.json:
        print(result.warning, file=sys.stderr)
    return EXIT_OK if result.ok else (result.exit_code or EXIT_FAILED)
