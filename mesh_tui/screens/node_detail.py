"""One node in detail: its /mesh_agents block and the tasks it holds or last held; live."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import var
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from mesh_core.commands import render_agent
from mesh_core.model import short_id

from ..messages import TaskChosen
from ..state import TASK_STYLES, MeshState, age
from ..widgets._rows import spec, sync_rows

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "Task", 12), ("type", "Type", 10), ("status", "Status", 11), ("priority", "Prio", 8),
    ("attempt", "Try", 3), ("age", "Submitted", 10), ("why", "Why / error", None),
)
KEYS = tuple(c[0] for c in COLUMNS)


class NodeDetailScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Close")]

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, node_id: str, state: MeshState | None) -> None:
        super().__init__()
        self.node_id = node_id
        self._initial = state
        self._shown: dict[str, tuple[Any, ...]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="node-box", classes="dialog"):
            yield Static("", id="node-agent")
            table: DataTable[Any] = DataTable(id="node-tasks", cursor_type="row", zebra_stripes=True)
            for key, label, width in COLUMNS:
                table.add_column(label, key=key, width=width)
            yield table

    def on_mount(self) -> None:
        box = self.query_one("#node-box")
        box.border_subtitle = "enter opens a task · escape closes"
        self.mesh_state = self._initial
        self.query_one("#node-tasks").focus()

    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is None:
            return
        node = state.node(self.node_id)
        box = self.query_one("#node-box")
        agent = self.query_one("#node-agent", Static)
        if node is None:
            agent.update(Text(f"Node {self.node_id[:12]} is no longer in the mesh view.", style="yellow"))
            return
        local = node["node_id"] == state.local_id
        box.border_title = f"Node {node['name']}" + (" (this node)" if local else "")
        agent.update(Text("\n".join(render_agent(dict(node), local=local))))
        tasks = state.tasks_on(self.node_id)[:50]
        rows = {t.task_id: (
            spec(short_id(t.task_id), TASK_STYLES.get(t.status.value, ""), t.submitted_at),
            spec(t.task_type), spec(t.status.value, TASK_STYLES.get(t.status.value, "")),
            spec(t.priority.name.lower()), spec(f"{t.attempt:>3}"), spec(f"{age(state.now - t.submitted_at)} ago"),
            spec(t.error or t.why or "", "red" if t.error else "dim"),
        ) for t in tasks}
        table = self.query_one("#node-tasks", DataTable)
        if sync_rows(table, KEYS, rows, self._shown):
            table.sort("id", key=lambda cell: cell.sort_key, reverse=True)
        table.border_title = f"Recent tasks on {node['name']} ({len(rows)})"

    @on(DataTable.RowSelected, "#node-tasks")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(TaskChosen(event.row_key.value))
