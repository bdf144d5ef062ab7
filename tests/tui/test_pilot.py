"""Behaviour of the cockpit on a real mesh: keys in, what the panes and the other nodes see out."""

from __future__ import annotations

import asyncio
import io
import json
import sys

from rich.console import Console
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TextArea

from mesh_core import AgentMeshManager, UnknownTaskType
from mesh_core.commands import REGISTRY
from mesh_tui.app import MeshApp
from mesh_tui.screens.conflict import ConflictScreen
from mesh_tui.screens.help import HelpScreen
from mesh_tui.widgets.command_input import CommandLine
from mesh_tui.widgets.command_output import CommandOutput
from mesh_tui.widgets.conflict_inbox import ConflictInbox
from mesh_tui.widgets.event_log import EventLog
from mesh_tui.widgets.nodes_table import NodesTable
from mesh_tui.widgets.task_queues import TaskQueues

from .conftest import SIZE, Mesh, eventually, status_seen_by


def plain(widget: Static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()


def names_shown(app: MeshApp) -> list[str]:
    state = app.mesh_state
    assert state is not None
    by_id = state.node_names()
    return [by_id.get(node_id, node_id) for node_id in app.query_one(NodesTable).shown_ids()]


async def started(app: MeshApp, nodes: int = 1) -> None:
    await eventually(lambda: app.mesh_state is not None and len(app.mesh_state.nodes) >= nodes)


async def test_typing_a_command_from_a_fresh_start_shows_its_output_from_the_first_line(mesh: Mesh) -> None:
    app = mesh.app()
    async with app.run_test(size=(160, 32)) as pilot:  # shorter than the status block
        await started(app)
        assert isinstance(app.focused, DataTable)  # a fresh start: the node table has focus, nothing else pressed
        await pilot.press(*"/mesh_status", "enter")
        output = app.query_one(CommandOutput)
        await eventually(lambda: output.display and "Agent Mesh Status" in output.text())
        text = output.text()
        assert text.startswith("› /mesh_status\n🌐 Agent Mesh Status: 🟢 ENABLED")  # echoed, then the first line
        assert "🏠 Local Node:" in text and "  • Name: cockpit" in text
        assert "📊 Mesh Statistics:" in text and "🤖 Known Nodes" in text
        await eventually(lambda: output.max_scroll_y > 0)  # taller than the panel ...
        assert output.scroll_y == 0  # ... and shown from its top
        assert "Agent Mesh Status" in app.query_one(EventLog).text()  # and kept in the history
        assert not app.query_one("#main").display and isinstance(app.focused, CommandLine)
        await pilot.press("pagedown")
        assert output.scroll_y > 0
        await pilot.press("escape")  # back to where it started
        assert not output.display and app.query_one("#main").display
        assert app.focused is app.query_one("#nodes", DataTable)


async def test_keys_that_are_shortcuts_stay_shortcuts_and_the_rest_start_a_command(mesh: Mesh) -> None:
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("t")  # a pane shortcut: focus moves to the task queues, nothing typed
        line = app.query_one(CommandLine)
        assert line.value == "" and not isinstance(app.focused, CommandLine)
        await pilot.press("m")  # not a shortcut: the command line, with the key typed
        assert isinstance(app.focused, CommandLine) and line.value == "m"
        await pilot.press(*"esh_help", "enter")  # the leading / is optional
        output = app.query_one(CommandOutput)
        await eventually(lambda: output.display and "Mesh commands" in output.text())
        assert output.text().startswith("› /mesh_help")
        await pilot.press("escape")
        assert app.focused is not None and app.query_one(TaskQueues) in app.focused.ancestors


async def test_hybrid_shows_the_medium_it_chose_in_the_header_and_why_on_the_local_card(mesh: Mesh) -> None:
    app = mesh.app(protocol="hybrid")
    async with app.run_test(size=SIZE):
        await started(app)
        assert app.sub_title == "general · hybrid→sqlite_local"
        card = plain(app.query_one("#local-body", Static))
        assert "hybrid→sqlite_local" in card
        assert "hybrid chose sqlite_local: no redis.url or grpc.seeds configured" in " ".join(card.split())


async def test_the_palette_and_the_help_come_from_the_one_registry(mesh: Mesh) -> None:
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("ctrl+p")
        await eventually(lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"mesh_agents")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await eventually(lambda: "Mesh Agents Overview" in app.query_one(EventLog).text())
        await pilot.press("question_mark")
        await eventually(lambda: isinstance(app.screen, HelpScreen))
        shown = plain(app.screen.query_one(Static))
        assert all(cmd.usage in shown for cmd in REGISTRY.values())
        await pilot.press("escape")


async def test_tab_completes_a_command_and_up_recalls_the_last_one(mesh: Mesh) -> None:
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        line = app.query_one(CommandLine)
        await pilot.press("colon", *"/mesh_st", "tab")
        assert line.value == "/mesh_status"
        await pilot.press("enter")
        assert line.value == ""
        await pilot.press(*"/mesh_he", "tab", "enter")
        await eventually(lambda: "Mesh commands" in app.query_one(EventLog).text())
        await pilot.press("up")
        assert line.value == "/mesh_help"
        await pilot.press("up")
        assert line.value == "/mesh_status"
        await pilot.press("down", "down")
        assert line.value == ""
        await pilot.press(*"/mesh_tasks dead", "tab")  # arguments: task statuses, task types, node names
        assert line.value == "/mesh_tasks dead_letter "
        line.value = ""
        await pilot.press(*"/mesh_recall cock", "tab")
        assert line.value == "/mesh_recall cockpit "
        line.value = ""
        await pilot.press(*"/mesh_s", "tab")  # several matches: the common prefix, and the choices shown
        assert line.value == "/mesh_s" and "/mesh_status" in str(line.border_subtitle)


async def test_disable_leaves_the_mesh_and_enable_rejoins(mesh: Mesh) -> None:
    watcher = await mesh.node("watcher")
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        await eventually(lambda: status_seen_by(watcher, "cockpit"), timeout=5)
        assert await status_seen_by(watcher, "cockpit") == "active"
        await pilot.press("colon", *"/mesh_disable", "enter")
        await eventually(lambda: _is(status_seen_by(watcher, "cockpit"), "left"))
        await eventually(lambda: app.mesh_state is not None and app.mesh_state.local["status"] == "left")
        assert not app.mesh_state.enabled  # type: ignore[union-attr]
        await pilot.press(*"/mesh_enable", "enter")
        await eventually(lambda: _is(status_seen_by(watcher, "cockpit"), "active"))
        await eventually(lambda: app.mesh_state is not None and app.mesh_state.local["status"] == "active")


async def _is(pending, expected: str) -> bool:  # type: ignore[no-untyped-def]
    return (await pending) == expected


async def test_filter_the_node_table_by_type(mesh: Mesh) -> None:
    await mesh.node("lang-01", "language_expert")
    await mesh.node("lang-02", "language_expert")
    await mesh.node("plan-01", "planning_only")
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 4)
        await eventually(lambda: len(app.query_one(NodesTable).shown_ids()) == 4)
        await pilot.press("n", "f", *"type:lang", "enter")
        await eventually(lambda: names_shown(app) == ["lang-01", "lang-02"])
        assert "Nodes (2 of 4)" in str(app.query_one(NodesTable).border_title)
        await pilot.press("f", "ctrl+u", *"plan", "enter")
        await eventually(lambda: names_shown(app) == ["plan-01"])
        await pilot.press("escape")
        await pilot.press("f", "escape")
        await eventually(lambda: len(names_shown(app)) == 4)


async def test_sorting_by_load_puts_the_busiest_first(mesh: Mesh) -> None:
    busy = await mesh.node("busy", max_capacity=4)

    async def hold(payload: object) -> None:
        await asyncio.sleep(30)

    busy.register_handler("hold", hold)  # only this node serves "hold", so its load rises alone
    await mesh.node("idle")
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 3)

        async def submitted() -> bool:
            try:
                await busy.submit_task("hold", {})
            except UnknownTaskType:
                return False  # peers learn the new task type with the next heartbeat
            return True

        await eventually(submitted)
        await busy.submit_task("hold", {})
        await eventually(lambda: app.mesh_state is not None and any(
            n["name"] == "busy" and n["load"] >= 0.5 for n in app.mesh_state.nodes))
        table = app.query_one(NodesTable)
        await pilot.press("n")
        while table.sort_column != "load":
            await pilot.press("s")
        assert names_shown(app)[-1] == "busy"
        await pilot.press("S")  # descending
        assert names_shown(app)[0] == "busy"
        assert "sort: load ▼" in str(table.border_subtitle)


async def test_a_killed_node_turns_dead_in_the_table(mesh: Mesh) -> None:
    victim = await mesh.node("victim")
    app = mesh.app()
    async with app.run_test(size=SIZE):
        await started(app, 2)
        table = app.query_one(NodesTable)
        await eventually(lambda: victim.node_id in table.shown_ids())
        assert table.table.get_cell(victim.node_id, "status").plain == "🟢"
        await mesh.crash(victim)
        # Dead after node_timeout_seconds (1.2 s) without a heartbeat, plus one refresh.
        await eventually(lambda: table.table.get_cell(victim.node_id, "status").plain == "🔴", timeout=5)


async def test_quit_leaves_the_mesh(mesh: Mesh) -> None:
    watcher = await mesh.node("watcher")
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        await eventually(lambda: _is(status_seen_by(watcher, "cockpit"), "active"))
        await pilot.press("q")
        await pilot.pause()
    await eventually(lambda: _is(status_seen_by(watcher, "cockpit"), "left"))


async def test_enter_on_a_node_opens_its_detail_and_a_task_opens_from_there(mesh: Mesh) -> None:
    worker = await mesh.node("worker")
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        task_id = await worker.submit_task("echo", {"hello": "detail"}, preferred_node_types=["general"],
                                           context={"caller": "pilot"})
        await worker.wait_task(task_id, timeout=5)
        table = app.query_one(NodesTable)
        await eventually(lambda: worker.node_id in table.shown_ids())
        await eventually(lambda: app.mesh_state is not None and any(
            t.task_id == task_id for t in app.mesh_state.tasks["done"]))
        done = next(t for t in app.mesh_state.tasks["done"] if t.task_id == task_id)  # type: ignore[union-attr]
        ran_on = done.node_id or ""
        await pilot.press("n")
        table.table.move_cursor(row=table.shown_ids().index(ran_on))
        await pilot.press("enter")
        await eventually(lambda: type(app.screen).__name__ == "NodeDetailScreen")
        agent = plain(app.screen.query_one("#node-agent", Static))
        assert f"📧 ID: {ran_on}" in agent
        await eventually(lambda: app.screen.query_one("#node-tasks").row_count >= 1)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await eventually(lambda: type(app.screen).__name__ == "TaskDetailScreen")
        body = plain(app.screen.query_one("#task-body", Static))
        assert task_id in body and '"hello": "detail"' in body and '"caller": "pilot"' in body
        await pilot.press("escape", "escape")
        assert type(app.screen).__name__ == "Screen"


MANUAL = {"memory_sync": {"strategies": {"important_fact": "manual"}}}


async def open_conflict(mesh: Mesh, app: MeshApp, pilot: Pilot[MeshApp], mine: object, theirs: object) -> object:
    """Two real nodes write one key at once; the conflict shows in the inbox and opens with keys alone."""
    other = await mesh.node("other", **MANUAL)
    await started(app, 2)
    local = app.source.mesh  # type: ignore[attr-defined]
    await asyncio.gather(local.sync_memory_item("important_fact", mine, key="k"),
                         other.sync_memory_item("important_fact", theirs, key="k"))
    await eventually(lambda: app.mesh_state is not None and len(app.mesh_state.conflicts) == 1, timeout=10)
    assert "Conflicts (1)" in str(app.query_one(ConflictInbox).border_title)
    await pilot.press("c", "enter")
    await eventually(lambda: isinstance(app.screen, ConflictScreen))
    return other


async def settles_everywhere(mesh: Mesh, app: MeshApp, other: AgentMeshManager, value: object) -> None:
    await eventually(lambda: app.mesh_state is not None and not app.mesh_state.conflicts, timeout=10)

    async def settled() -> bool:
        found = await other.recall_item("k")
        return found.value == value and not found.siblings and not other.conflicts()
    await eventually(settled, timeout=10)
    # And as a user on another terminal sees it: the real CLI, `recall --json`.
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh_tui", "--db", str(mesh.root / "mesh.db"), "--state-dir", str(mesh.root / "cli"),
        "recall", "k", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await cli.communicate()
    assert cli.returncode == 0, err
    recalled = json.loads(out)
    assert recalled["value"] == value and recalled["siblings"] == []


async def test_a_conflict_is_resolved_by_keys_alone(mesh: Mesh) -> None:
    app = mesh.app(**MANUAL)
    async with app.run_test(size=SIZE) as pilot:
        other = await open_conflict(mesh, app, pilot, {"v": "cockpit"}, {"v": "other"})
        screen = app.screen
        assert isinstance(screen, ConflictScreen)
        assert screen.left.value == {"v": "cockpit"} and screen.differing == ["$.v"]
        await pilot.press("1")  # keep left: this node's own version
        await settles_everywhere(mesh, app, other, {"v": "cockpit"})  # type: ignore[arg-type]


async def test_a_conflict_is_merged_or_edited_from_the_modal(mesh: Mesh) -> None:
    app = mesh.app(**MANUAL)
    async with app.run_test(size=SIZE) as pilot:
        other = await open_conflict(mesh, app, pilot, {"a": 1, "tags": ["x"]}, {"b": 2, "tags": ["y"]})
        await pilot.press("e")  # edit a new value instead of the offered merge
        area = app.screen.query_one(TextArea)
        assert json.loads(area.text) == {"a": 1, "tags": ["x", "y"], "b": 2}  # prefilled with the merge
        area.text = '{"a": 1, "b": 2, "note": "edited"}'
        await pilot.press("ctrl+s")
        await settles_everywhere(mesh, app, other, {"a": 1, "b": 2, "note": "edited"})  # type: ignore[arg-type]


async def test_an_edited_value_that_spells_a_choice_is_stored_as_that_value(mesh: Mesh) -> None:
    app = mesh.app(**MANUAL)
    async with app.run_test(size=SIZE) as pilot:
        other = await open_conflict(mesh, app, pilot, {"v": "cockpit"}, {"v": "other"})
        await pilot.press("e")
        app.screen.query_one(TextArea).text = '"merge"'  # a JSON string that spells the merge choice
        await pilot.press("ctrl+s")
        # The cockpit hands it over as a value (value=), so it is written as the string, not read as "merge".
        await settles_everywhere(mesh, app, other, "merge")  # type: ignore[arg-type]


async def test_an_observer_cockpit_says_so_runs_nothing_and_shows_a_workers_tasks(mesh: Mesh) -> None:
    worker = await mesh.node("w")
    client = await mesh.client()
    app = MeshApp(mesh.node_config("watcher"), refresh_interval=0.5, observe=True)
    async with app.run_test(size=SIZE):
        await started(app)
        assert app.title.endswith(" (observer)") and app.sub_title.startswith("observer · ")
        card = plain(app.query_one("#local-body", Static))
        assert "OBSERVER · executes nothing" in card and "observing the mesh (not a worker)" in card
        assert names_shown(app) == ["w"]  # the workers only: the observer is not one
        await asyncio.sleep(0.6)  # the observer's first read of the tasks is its baseline
        task_id = await client.submit_task("echo", {"hi": 1})
        assert (await client.wait_task(task_id, 10)).node_id == worker.node_id
        log = app.query_one(EventLog)
        await eventually(lambda: task_id[:8] in log.text() and "succeeded" in log.text())
        await eventually(lambda: app.mesh_state is not None
                         and task_id in {t.task_id for t in app.mesh_state.tasks["done"]})
        assert "watcher" not in {m.info.name for m in worker.members()}


async def test_a_running_task_shows_its_progress_in_the_table_and_its_message_in_the_detail(mesh: Mesh) -> None:
    from textual.widgets import TabbedContent
    worker = await mesh.node("worker")
    release = asyncio.Event()

    async def slow(payload, ctx):
        ctx.progress(0.6, "step 3/5")
        await release.wait()
        return "ok"
    worker.register_handler("slow", slow)
    app = mesh.app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        ids: list[str] = []

        async def submitted() -> bool:
            try:
                ids.append(await worker.submit_task("slow", {}))
            except UnknownTaskType:
                return False  # the new task type is known with the next heartbeat
            return True
        await eventually(submitted)
        task_id = ids[0]
        queues = app.query_one(TaskQueues)
        table = queues.table("running")

        def shown() -> bool:
            return task_id in {k.value for k in table.rows} and \
                "60%" in str(table.get_cell(task_id, "progress"))
        await eventually(shown, timeout=10)
        assert str(table.get_cell(task_id, "progress")) == "▰▰▰▱▱ 60%"
        app.query_one("#task-tabs", TabbedContent).active = "tq-running"
        await pilot.pause()
        table.focus()
        table.move_cursor(row=table.get_row_index(task_id))
        await pilot.press("enter")
        await eventually(lambda: type(app.screen).__name__ == "TaskDetailScreen")
        body = plain(app.screen.query_one("#task-body", Static))
        assert "Progress" in body and "60%  step 3/5" in body
        await pilot.press("escape")
        release.set()
        await worker.wait_task(task_id, timeout=5)
