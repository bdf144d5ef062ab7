"""One command surface: every registry command shows up where it says, and the CLI and the /mesh_ line agree."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.screen import Screen

from mesh_core import AgentMeshManager, load_config
from mesh_core.commands import (
    CLI,
    HELP,
    LINE,
    PALETTE,
    REGISTRY,
    Arg,
    Command,
    CommandResult,
    complete,
    finish,
    lookup,
    parse_line,
    run_command,
)
from mesh_core.errors import UsageError
from mesh_tui.app import MeshApp
from mesh_tui.cli import LOCAL_COMMANDS, build_parser
from mesh_tui.palette import MeshCommands
from mesh_tui.screens.help import help_text

FAST = {"heartbeat_interval_seconds": 0.2, "suspect_after_seconds": 0.6, "node_timeout_seconds": 1.2,
        "shutdown_grace_seconds": 0.2}


def subcommands() -> set[str]:
    parser = build_parser()
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(found[0].choices)


def test_every_command_is_on_the_cli_exactly_when_it_says_so() -> None:
    cli = subcommands() - set(LOCAL_COMMANDS)  # certs: the state folder only, not a mesh command
    for cmd in REGISTRY.values():
        assert (cmd.cli_name in cli) == cmd.on(CLI), cmd.name
    assert cli == {c.cli_name for c in REGISTRY.values() if c.on(CLI)}
    assert not set(LOCAL_COMMANDS) & {c.cli_name for c in REGISTRY.values()}
    # the one-shot client has no running node to enable, disable or sync
    assert {"enable", "disable", "sync", "help"}.isdisjoint(cli)


def shown_help() -> str:
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(help_text(MeshApp))
    return console.export_text()


def test_every_command_is_on_the_help_screen_exactly_when_it_says_so() -> None:
    text = shown_help()
    shown = {line.split(" ")[0] for line in text.splitlines() if line.startswith("/")}
    assert shown == {c.name for c in REGISTRY.values() if c.on(HELP)}
    assert all(cmd.usage in text for cmd in REGISTRY.values() if cmd.on(HELP))


async def test_every_command_is_in_the_palette_exactly_when_it_says_so() -> None:
    provider = MeshCommands(Screen())
    found = {str(hit.text) async for hit in provider.discover()}
    assert found == {c.usage for c in REGISTRY.values() if c.on(PALETTE)}


def test_line_commands_complete() -> None:
    assert complete("/mesh_") == sorted(c.name for c in REGISTRY.values() if c.on(LINE))


def test_help_screen_keys_come_from_the_bindings() -> None:
    text = shown_help()
    for binding in MeshApp.BINDINGS:
        assert binding.description in text  # type: ignore[union-attr]
    assert "Keep left" in text and "Retry dead letter" in text and "Complete" in text


# -- the CLI and the line parse the same arguments the same way ------------------------------

AGREE = [
    (["submit", "echo", "--payload", '{"hello": "mesh", "n": [1, 2]}', "--priority", "high", "--prefer", "general",
      "--prefer", "language_expert", "--require", "nlp", "--timeout", "5", "--wait", "--wait-timeout", "9",
      "--task-id", "abc", "--queue"],
     """/mesh_submit echo --payload '{"hello": "mesh", "n": [1, 2]}' --priority high --prefer general """
     """--prefer language_expert --require nlp --timeout 5 --wait --wait-timeout 9 --task-id abc --queue"""),
    (["submit", "sleep"], "/mesh_submit sleep"),
    (["remember", "capital", '{"france": "Paris"}', "--type", "important_fact"],
     '/mesh_remember --type important_fact capital {"france": "Paris"}'),
    (["remember", "note", '"kept across restarts"'], '/mesh_remember note "kept across restarts"'),
    (["resolve", "c0ffee", '{"owner": "both"}'], '/mesh_resolve c0ffee {"owner": "both"}'),
    (["resolve", "c0ffee", "keep-local"], "/mesh_resolve c0ffee keep-local"),
    (["tasks", "--status", "dead_letter", "--limit", "7"], "/mesh_tasks dead_letter --limit 7"),
    (["tasks", "--tree", "t1"], "/mesh_tasks --tree t1"),
    (["recall", "plan", "--type", "fact"], "/mesh_recall plan fact"),
    (["rollback", "plan", "v3"], "/mesh_rollback plan 3"),
    (["memory"], "/mesh_memory"),
    (["retry", "t1", "--wait"], "/mesh_retry t1 --wait"),
]


def cli_args(argv: list[str]) -> dict[str, Any]:
    ns = build_parser().parse_args(argv)
    cmd = lookup(argv[0])
    assert cmd is not None
    finish(cmd, ns)
    return {a.dest: getattr(ns, a.dest) for a in cmd.args}


def line_args(line: str) -> dict[str, Any]:
    head, _, rest = line.partition(" ")
    cmd = lookup(head)
    assert cmd is not None
    return vars(parse_line(cmd, rest))


@pytest.mark.parametrize(("argv", "line"), AGREE, ids=[a[0] for a, _ in AGREE])
def test_cli_and_line_agree(argv: list[str], line: str) -> None:
    assert cli_args(argv) == line_args(line)


def test_submit_arguments_as_the_command_gets_them() -> None:
    got = line_args(AGREE[0][1])
    assert got["payload"] == {"hello": "mesh", "n": [1, 2]} and got["prefer"] == ["general", "language_expert"]
    assert got["timeout"] == 5.0 and got["wait"] and got["queue"] and got["require"] == ["nlp"]
    assert line_args("/mesh_submit echo")["prefer"] == []  # a repeatable option never keeps an old parse's list


@pytest.mark.parametrize("line", ["/mesh_submit", "/mesh_submit echo --payload {oops", "/mesh_submit echo --timeout 0",
                                  "/mesh_submit echo --prefer robot", "/mesh_tasks bogus", "/mesh_rollback k seven",
                                  "/mesh_remember lonely", "/mesh_resolve c0ffee not-json", "/mesh_status now",
                                  "/mesh_tasks running --status failed", "/mesh_submit echo --payload '{\"a\": 1}"])
def test_bad_lines_are_usage_errors(line: str) -> None:
    with pytest.raises(UsageError):
        line_args(line)


# -- /mesh_submit on a real node ------------------------------------------------------------------

@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[AgentMeshManager]:
    config = load_config(overrides={**FAST, "protocol": "sqlite_local", "sqlite_db_path": str(tmp_path / "m.db"),
                                    "state_dir": str(tmp_path / "s"), "node_name": "solo"}, use_default_file=False)
    mesh = AgentMeshManager(config)
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.stop()


async def test_mesh_submit_waits_for_the_result(node: AgentMeshManager) -> None:
    done = await run_command(node, """/mesh_submit echo --payload '{"hello": "mesh"}' --wait --wait-timeout 10""")
    assert done.ok, done.text
    assert done.data["status"] == "succeeded" and done.data["result"] == {"hello": "mesh"}
    assert done.data["node_name"] == "solo" and done.bare == '{"hello": "mesh"}'


async def test_mesh_submit_without_wait_gives_the_id_and_the_task_is_listed(node: AgentMeshManager) -> None:
    done = await run_command(node, "/mesh_submit echo --payload 7 --task-id my-task --priority high")
    assert done.ok and done.data == {"task_id": "my-task"} and done.bare == "my-task" and "my-task" in done.text
    assert (await node.wait_task("my-task", 10)).result == 7
    listed = await run_command(node, "/mesh_tasks succeeded")
    assert [t["task_id"] for t in listed.data] == ["my-task"] and listed.data[0]["priority"] == "high"


async def test_mesh_submit_failures_carry_the_cli_exit_codes(node: AgentMeshManager) -> None:
    unknown = await run_command(node, "/mesh_submit no_such_task")
    assert not unknown.ok and unknown.exit_code == 3 and "no_such_task" in unknown.text
    failed = await run_command(node, """/mesh_submit fail --payload '{"message": "nope", "times": 99}' --wait""")
    assert not failed.ok and failed.exit_code == 1 and failed.data["status"] in ("failed", "dead_letter")
    slow = await run_command(node, """/mesh_submit sleep --payload '{"seconds": 5}' --wait --wait-timeout 0.2""")
    assert not slow.ok and slow.exit_code == 3
    usage = await run_command(node, "/mesh_submit echo --payload {nope")
    assert not usage.ok and usage.exit_code == 2 and "--payload is not valid JSON" in usage.text


async def test_a_cli_only_command_is_a_subcommand_and_unknown_on_the_line(node: AgentMeshManager) -> None:
    async def probe(mesh: AgentMeshManager, args: argparse.Namespace) -> CommandResult:
        return CommandResult(f"probed {args.what}", {"what": args.what})

    REGISTRY["/mesh_probe"] = Command("/mesh_probe", "a CLI-only probe", probe, (Arg("what"),),
                                      surfaces=frozenset({CLI}))
    try:
        assert "probe" in subcommands() and "/mesh_probe" not in complete("/mesh_")
        refused = await run_command(node, "/mesh_probe x")
        assert not refused.ok and "unknown command" in refused.text
        cmd = REGISTRY["/mesh_probe"]
        ran = await cmd.run(node, finish(cmd, build_parser().parse_args(["probe", "x"])))
        assert ran.data == {"what": "x"}
    finally:
        del REGISTRY["/mesh_probe"]
