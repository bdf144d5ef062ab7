"""MeshApp: the terminal cockpit for one node. Composes the panes and bridges the engine to messages.

Two workers talk to the engine: one reads its events, one takes a fresh
``MeshState`` every ``refresh_interval`` (sooner after membership changes or a
command). Both only post messages; the handlers here own all state and push it
down to the panes (``data_bind``). Engine errors become notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Input

from mesh_core.commands import REGISTRY, CommandResult, medium_label
from mesh_core.config import MeshConfig
from mesh_core.events import Event, NodeJoined, NodeStatusChanged, TaskUpdated
from mesh_core.heap import settle_after_start
from mesh_core.manager import AgentMeshManager
from mesh_core.model import NodeRole, short_id

from .engine import EngineSource, MeshSource
from .messages import (
    CommandDone,
    CommandEntered,
    ConflictChosen,
    EngineEvents,
    EngineRecovered,
    EngineTrouble,
    MeshRefreshed,
    NodeChosen,
    TaskAction,
    TaskChosen,
)
from .palette import MeshCommands
from .screens.conflict import ConflictScreen, Resolution
from .screens.help import HelpScreen
from .screens.node_detail import NodeDetailScreen
from .screens.task_detail import TaskDetailScreen
from .state import MeshState
from .widgets.command_input import CommandLine
from .widgets.command_output import CommandOutput
from .widgets.conflict_inbox import ConflictInbox
from .widgets.event_log import EventLog
from .widgets.local_node import LocalNodePane
from .widgets.nodes_table import NodesTable
from .widgets.task_queues import TaskQueues

BURST_WINDOW = 0.05       # events arriving this close together travel as one message
TASK_LINES_PER_BATCH = 20  # beyond this, a burst's task updates are folded into a count
MIN_REFRESH_GAP = 0.1


class MeshApp(App[int]):
    """One node of the mesh, and everything it can see."""

    CSS_PATH = "styles/app.tcss"
    TITLE = "Agent Mesh"
    COMMANDS = App.COMMANDS | {MeshCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("colon", "focus_command", "Command", key_display=":"),
        Binding("n", "focus_pane('nodes')", "Nodes", show=False),
        Binding("t", "focus_pane('tasks')", "Tasks", show=False),
        Binding("c", "focus_pane('conflicts')", "Conflicts", show=False),
        Binding("l", "focus_pane('log')", "Log", show=False),
        Binding("pageup", "scroll_output(-1)", "Scroll output up", show=False),
        Binding("pagedown", "scroll_output(1)", "Scroll output down", show=False),
        Binding("ctrl+z", "suspend_node", "Suspend to the shell", show=False),
    ]

    # Screen classes for small terminals (see styles/app.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (130, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, config: MeshConfig | None = None, *, source: MeshSource | None = None,
                 refresh_interval: float = 1.0, clock: Callable[[], float] = time.time,
                 owns_process: bool = False, observe: bool = False) -> None:
        super().__init__()
        # observe: a client that executes nothing and is not listed as a worker (mesh-tui --observe)
        self.source = source or EngineSource(AgentMeshManager(config, role=NodeRole.CLIENT if observe
                                                              else NodeRole.WORKER))
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.apply_ms = 0.0  # how long the last refresh took to apply to the panes
        self.refreshes = 0
        self._poke = asyncio.Event()
        self._troubles: dict[str, str] = {}
        self._stopped = False
        self._quitting = False
        self._owns_process = owns_process  # the cockpit is the process: settle its heap after start
        self._return_to: Widget | None = None  # where Escape goes back to from the command line

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield LocalNodePane(id="local-node").data_bind(MeshApp.mesh_state)
                yield ConflictInbox(id="conflict-inbox").data_bind(MeshApp.mesh_state)
            with Vertical(id="right"):
                yield NodesTable(id="nodes-table").data_bind(MeshApp.mesh_state)
                yield TaskQueues(id="task-queues").data_bind(MeshApp.mesh_state)
        yield CommandOutput(id="command-output")
        yield EventLog(id="event-log")
        yield CommandLine(id="command-line").data_bind(MeshApp.mesh_state)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#nodes", DataTable).focus()
        self._start_engine()

    # -- engine lifecycle ----------------------------------------------------------------
    @work(group="engine", exit_on_error=False)
    async def _start_engine(self) -> None:
        self._pump_events()
        try:
            await self.source.start()
        except Exception as exc:  # the node could not join: say so, keep the UI up
            self.notify(f"The node could not start: {exc}", title="Engine", severity="error", timeout=30)
            self.query_one(EventLog).add_note(self.clock(), f"the node could not start: {exc}", "bold red")
            return
        self.title = self.source.title
        if self._owns_process:
            settle_after_start()
        self._refresh_loop()

    async def _stop_engine(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.workers.cancel_group(self, "refresh")
        try:
            await self.source.stop()
        except Exception as exc:
            self.log.error(f"stopping the node failed: {exc}")

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        with contextlib.suppress(Exception):
            self.query_one(EventLog).add_note(self.clock(), "leaving the mesh…", "bold")
        self._leave_and_exit()

    async def action_suspend_node(self) -> None:
        """Ctrl-Z: back to the shell as in any terminal program, ``fg`` brings the cockpit back. The process stops
        only once the node holds nothing the other nodes wait for (``MeshSource.stop_process``): stopped inside a
        write to a shared SQLite file it would freeze every node on that file."""
        try:
            with self.suspend():
                await self.source.stop_process()
        except SuspendNotSupported:
            self.notify("this terminal cannot suspend the cockpit", severity="warning")

    @work(group="engine", exit_on_error=False)
    async def _leave_and_exit(self) -> None:
        # In a worker, so the screen stays live while running tasks finish or are handed back.
        await self._stop_engine()
        self.exit(0)

    async def on_unmount(self) -> None:
        await self._stop_engine()

    # -- workers: they only read the engine and post ---------------------------------------
    @work(group="events", exit_on_error=False)
    async def _pump_events(self) -> None:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for event in self.source.events():
                    queue.put_nowait(event)
            finally:
                queue.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            done = False
            while not done:
                first = await queue.get()
                if first is None:
                    return
                await asyncio.sleep(BURST_WINDOW)  # let a burst gather into one message
                batch = [first]
                while not queue.empty():
                    event = queue.get_nowait()
                    if event is None:
                        done = True
                        break
                    batch.append(event)
                self.post_message(fold(batch))
                if any(isinstance(e, NodeJoined | NodeStatusChanged | TaskUpdated) for e in batch):
                    self._poke.set()
        finally:
            reader.cancel()

    @work(group="refresh", exclusive=True, exit_on_error=False)
    async def _refresh_loop(self) -> None:
        while True:
            self._poke.clear()
            try:
                state = await self.source.state()
            except Exception as exc:
                self.post_message(EngineTrouble("refresh", f"{type(exc).__name__}: {exc}"))
            else:
                self.post_message(MeshRefreshed(state))
                if "refresh" in self._troubles:
                    self.post_message(EngineRecovered("refresh"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_interval):
                    await self._poke.wait()
            await asyncio.sleep(MIN_REFRESH_GAP if self.refresh_interval > MIN_REFRESH_GAP else 0)

    def request_refresh(self) -> None:
        """Refresh soon rather than at the next tick (after a command, a membership change)."""
        self._poke.set()

    @work(group="commands", exit_on_error=False)
    async def _run_command(self, line: str) -> None:
        try:
            result = await self.source.run(line)
        except Exception as exc:  # run_command returns errors as results; anything else is a bug shown, not raised
            result = CommandResult(f"error: {type(exc).__name__}: {exc}", ok=False)
        self.post_message(CommandDone(line, result))

    @work(group="tasks", exclusive=True, exit_on_error=False)
    async def _open_task(self, task_id: str) -> None:
        try:
            task = await self.source.task(task_id)
        except Exception as exc:
            self.post_message(EngineTrouble("task", f"cannot load task {short_id(task_id)}: {exc}"))
            return
        self.push_screen(TaskDetailScreen(task))

    @work(group="conflicts", exit_on_error=False)
    async def _resolve(self, conflict_id: str, resolution: Resolution) -> None:
        state = self.mesh_state
        conflict = next((c for c in state.conflicts if c.conflict_id == conflict_id), None) if state else None
        if conflict is None:
            self.notify("That conflict is already settled.", severity="warning")
            return
        choice, value = resolution
        try:
            said = await self.source.resolve_conflict(conflict, choice, value)
        except Exception as exc:
            self.post_message(EngineTrouble("conflict", f"cannot resolve {conflict.key}: {exc}"))
            return
        self.query_one(EventLog).add_note(self.clock(), f"✔ {said}", "green")
        self.notify(said, title="Conflict")
        self.request_refresh()

    # -- handlers: all state lives here ------------------------------------------------------
    @on(MeshRefreshed)
    def _refreshed(self, message: MeshRefreshed) -> None:
        started = time.perf_counter()
        self.mesh_state = message.state
        for screen in self.screen_stack[1:]:
            if hasattr(screen, "mesh_state"):
                screen.mesh_state = message.state  # type: ignore[attr-defined]
        self.apply_ms = (time.perf_counter() - started) * 1000
        self.refreshes += 1

    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is not None:
            local = state.local
            self.sub_title = f"{local.get('node_type') or 'observer'} · {medium_label(local)}"

    def _event_log(self) -> EventLog | None:
        """The events pane; None once the screen is gone (an engine message can land while the app exits)."""
        found = self.query(EventLog)
        return found.first() if found else None

    @on(EngineEvents)
    def _events(self, message: EngineEvents) -> None:
        log = self._event_log()
        if log is not None:
            log.add_events(message.events, message.skipped)

    @on(EngineTrouble)
    def _trouble(self, message: EngineTrouble) -> None:
        first = self._troubles.get(message.where) != message.error
        self._troubles[message.where] = message.error
        if first:
            self.notify(message.error, title=f"Engine ({message.where})", severity="error", timeout=8)
            log = self._event_log()
            if log is not None:
                log.add_note(self.clock(), f"⚠ {message.where}: {message.error}", "red")

    @on(EngineRecovered)
    def _recovered(self, message: EngineRecovered) -> None:
        if self._troubles.pop(message.where, None) is not None:
            self.notify(f"{message.where} works again", title="Engine")

    @on(CommandEntered)
    def _command_entered(self, message: CommandEntered) -> None:
        self._run_command(message.line)

    @on(CommandDone)
    def _command_done(self, message: CommandDone) -> None:
        log = self._event_log()
        if log is None:
            return
        log.add_command(self.clock(), message.line, message.result)  # the history
        self.query_one("#main").display = False
        self.query_one(CommandOutput).show(message.line, message.result)
        if not message.result.ok:
            self.notify(message.result.text.splitlines()[0] if message.result.text else "command failed",
                        severity="warning")
        self.request_refresh()

    @on(NodeChosen)
    def _node_chosen(self, message: NodeChosen) -> None:
        self.push_screen(NodeDetailScreen(message.node_id, self.mesh_state))

    @on(TaskChosen)
    def _task_chosen(self, message: TaskChosen) -> None:
        self._open_task(message.task_id)

    @on(TaskAction)
    def _task_action(self, message: TaskAction) -> None:
        if message.command not in REGISTRY:
            self.notify(f"This engine has no {message.command} yet.", severity="warning")
            return
        self._run_command(f"{message.command} {message.task_id}")

    @on(ConflictChosen)
    def _conflict_chosen(self, message: ConflictChosen) -> None:
        state = self.mesh_state
        conflict = next((c for c in state.conflicts if c.conflict_id == message.conflict_id), None) if state else None
        if conflict is None or state is None:
            return
        try:
            screen = ConflictScreen(conflict, state.node_names(), state.local_id, state.now)
        except Exception as exc:
            self.notify(f"Cannot show this conflict: {exc}", severity="error")
            return

        def done(resolution: Resolution | None) -> None:
            if resolution is not None:
                self._resolve(message.conflict_id, resolution)

        self.push_screen(screen, done)

    # -- actions -------------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_focus_command(self) -> None:
        line = self.query_one(CommandLine)
        if self.focused is not line and not isinstance(self.focused, CommandOutput):
            self._return_to = self.focused
        # Now, not after this message (``focus()`` defers): keys typed fast behind this one must land in the line.
        self.screen.set_focus(line)

    def action_scroll_output(self, pages: int) -> None:
        output = self.query_one(CommandOutput)
        if output.display:
            output.scroll_page_down() if pages > 0 else output.scroll_page_up()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "scroll_output":  # only while the output shows; the panes' own page keys otherwise
            return any(output.display for output in self.query(CommandOutput))
        return True

    def on_key(self, event: events.Key) -> None:
        """Chat-style: on the main screen, a printable key that no shortcut takes starts the command line with
        that character typed (so ``/mesh_status`` Enter just works). Runs before the bindings are looked up."""
        if self.screen is not self.screen_stack[0] or not event.is_printable or not event.character:
            return
        line = self.query_one(CommandLine)
        if self.focused is line:
            # The line types what reaches it itself; a key that comes here instead was typed before the focus
            # moved (queued for the pane it left): it is the line's too, shortcut or not.
            pass
        elif isinstance(self.focused, Input) or event.key in self.screen.active_bindings:
            return
        event.prevent_default()
        event.stop()
        self.action_focus_command()
        line.insert_text_at_cursor(event.character)

    def close_output(self) -> bool:
        """Hide the command output and show the panes again; False when it was not shown."""
        output = self.query_one(CommandOutput)
        if not output.display:
            return False
        output.display = False
        self.query_one("#main").display = True
        return True

    def action_focus_pane(self, pane: str) -> None:
        if pane == "nodes":
            self.query_one("#nodes", DataTable).focus()
        elif pane == "tasks":
            queues = self.query_one(TaskQueues)
            queues.table(queues.active_view()).focus()
        elif pane == "conflicts":
            self.query_one("#conflicts").focus()
        elif pane == "log":
            self.query_one(EventLog).focus()

    def offer_command(self, name: str) -> None:
        """From the palette: run a command that takes no arguments, or put it on the command line."""
        cmd = REGISTRY.get(name)
        line = self.query_one(CommandLine)
        if cmd is not None and cmd.usage.strip() == cmd.name:
            line.remember(name)
            self._run_command(name)
        else:
            line.value = f"{name} "
            line.cursor_position = len(line.value)
            line.focus()

    def key_escape(self) -> None:
        """Back to where you were: the command output closes, and from the command line focus returns to the
        pane it came from."""
        closed = self.close_output()
        if isinstance(self.focused, CommandLine | CommandOutput) or closed:
            back = self._return_to
            self._return_to = None
            if back is None or not back.is_attached or not back.display or back is self.focused:
                back = self.query_one("#nodes", DataTable)
            back.focus()


def fold(batch: list[Event]) -> EngineEvents:
    """One message for a burst; past a few task updates, the rest become a count (membership is always kept)."""
    kept: list[Event] = []
    tasks = skipped = 0
    for event in batch:
        if isinstance(event, TaskUpdated):
            tasks += 1
            if tasks > TASK_LINES_PER_BATCH:
                skipped += 1
                continue
        kept.append(event)
    return EngineEvents(tuple(kept), skipped)


def run_app(config: MeshConfig, **kwargs: Any) -> int:
    """Run the cockpit in this terminal until the operator quits; the node leaves the mesh on the way out."""
    logging.getLogger("mesh").setLevel(logging.CRITICAL)  # problems arrive as events and show in the log
    result = MeshApp(config, owns_process=True, **kwargs).run()
    return int(result or 0)
