"""One task in detail: where it is and why, every attempt, its context, payload and result."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from mesh_core.model import Task, short_id

from ..messages import TaskAction
from ..state import PRIORITY_STYLES, TASK_STYLES, stamp


def _json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def render_task(task: Task) -> RenderableType:
    status = task.status.value
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Task", Text(task.task_id, style="bold"))
    grid.add_row("Type", task.task_type)
    grid.add_row("Status", Text(status, style=TASK_STYLES.get(status, "")))
    priority = task.priority.name.lower()
    grid.add_row("Priority", Text(priority, style=PRIORITY_STYLES.get(priority, "")))
    grid.add_row("Node", f"{task.node_name or '-'}  {(task.node_id or '')[:12]}")
    grid.add_row("Why", task.why or "-")
    if task.progress is not None:
        line = Text(f"{round(task.progress * 100)}%", style="bold cyan")
        if task.progress_message:
            line.append(f"  {task.progress_message}", style="")
        grid.add_row("Progress", line)
    grid.add_row("Attempts", f"{task.attempt} (failures {task.failures}, max retries {task.max_retries})")
    grid.add_row("Submitted", stamp(task.submitted_at))
    grid.add_row("Started", stamp(task.started_at))
    grid.add_row("Finished", stamp(task.finished_at))
    if task.lease_expires:
        grid.add_row("Lease until", stamp(task.lease_expires))
    grid.add_row("Timeout", f"{task.timeout_s:g} s" if task.timeout_s else "node default")
    if task.preferred_node_types:
        grid.add_row("Prefers", ", ".join(t.value for t in task.preferred_node_types))
    if task.required_capabilities:
        grid.add_row("Requires", ", ".join(sorted(task.required_capabilities)))
    if task.error:
        grid.add_row("Error", Text(task.error, style="red"))

    attempts = Table(title="Attempts", title_justify="left", expand=True, show_edge=False, header_style="bold")
    for label in ("#", "Node", "Started", "Took", "Error"):
        attempts.add_column(label, overflow="fold")
    for a in task.attempts:
        took = f"{a.duration_s * 1000:.1f} ms" if a.duration_s is not None else "-"
        attempts.add_row(str(a.attempt), a.node_name or a.node_id[:12], stamp(a.started_at), took,
                         Text(a.error or "", style="red"))
    if not task.attempts:
        attempts.add_row("-", "no attempt recorded yet", "", "", "")

    blocks = Table(expand=True, show_edge=False, header_style="bold")
    blocks.add_column("Context")
    blocks.add_column("Payload")
    blocks.add_column("Result")
    blocks.add_row(_json(task.context), _json(task.payload),
                   _json(task.result) if task.status.value == "succeeded" else Text("-", style="dim"))
    return Group(grid, Text(""), attempts, Text(""), blocks)


class TaskDetailScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Close"),
        Binding("x", "cancel", "Cancel task"),
        Binding("R", "retry", "Retry dead letter"),
    ]

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task_data = task

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="task-box", classes="dialog"):
            yield Static(render_task(self.task_data), id="task-body")

    def on_mount(self) -> None:
        box = self.query_one("#task-box")
        box.border_title = f"Task {short_id(self.task_data.task_id)} · {self.task_data.task_type}"
        box.border_subtitle = "x cancel · R retry · escape closes"
        box.focus()

    def action_cancel(self) -> None:
        self.post_message(TaskAction("/mesh_cancel", self.task_data.task_id))

    def action_retry(self) -> None:
        self.post_message(TaskAction("/mesh_retry", self.task_data.task_id))
