"""The ``/mesh_*`` commands: one registry, structured results, text layouts modelled on the seed.

The headless node, the CLI subcommands, the cockpit's command line, palette
and help screen all come from ``REGISTRY``; each command builds its data first
and renders text from that data, so ``--json`` and the text view never disagree.

``registry`` holds the table and the argument parsing, ``views`` the data,
``render`` the text layouts and ``catalog`` the commands themselves.
"""

from __future__ import annotations

from . import catalog as catalog  # registers every command
from .registry import (
    CLI,
    EVERYWHERE,
    HELP,
    IN_A_NODE,
    LINE,
    PALETTE,
    REGISTRY,
    SURFACES,
    Arg,
    Command,
    CommandResult,
    add_arguments,
    complete,
    finish,
    line_parser,
    lookup,
    on_surface,
    parse_line,
    run_command,
)
from .render import (
    RULE,
    loop_line,
    medium_label,
    render_agent,
    render_agents,
    render_conflicts,
    render_help,
    render_history,
    render_memory,
    render_status,
    render_tasks,
    render_tree,
    troubled_loops,
)
from .views import (
    OVERLOADED,
    conflict_dict,
    node_dict,
    recollection_dict,
    status_data,
    task_dict,
    task_outcome,
    task_summary,
    tree_dict,
)

__all__ = [
    "CLI", "EVERYWHERE", "HELP", "IN_A_NODE", "LINE", "OVERLOADED", "PALETTE", "REGISTRY", "RULE", "SURFACES",
    "Arg", "Command", "CommandResult", "add_arguments", "complete", "conflict_dict", "finish", "line_parser",
    "lookup", "loop_line", "medium_label", "node_dict", "on_surface", "parse_line", "recollection_dict",
    "render_agent", "render_agents", "render_conflicts", "render_help", "render_history", "render_memory",
    "render_status", "render_tasks", "render_tree", "run_command", "status_data", "task_dict", "task_outcome",
    "task_summary", "tree_dict", "troubled_loops",
]
