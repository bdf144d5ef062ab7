"""Task queues: pending, running (lease and node), done, failed, dead letter; priority and the router's why."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import DataTable, TabbedContent, TabPane

from mesh_core.model import Task, short_id

from ..messages import TaskAction, TaskChosen
from ..state import PRIORITY_STYLES, TASK_STYLES, TASK_VIEWS, MeshState, age
from ._rows import Spec, cursor_key, spec, sync_rows

LABELS = {"pending": "Pending", "running": "Running", "done": "Done", "failed": "Failed", "dead_letter": "Dead letter"}
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "Task", 12),
    ("type", "Type", 8),
    ("priority", "Prio", 8),
    ("node", "Node", 12),
    ("attempt", "Try", 3),
    ("when", "When", 11),
    ("progress", "Progress", 9),
    ("why", "Why / error", 33),
)
KEYS = tuple(c[0] for c in COLUMNS)


def when(task: Task, view: str, now: float) -> Spec:
    if view == "running":
        if task.lease_expires is None:
            return spec(f"up {age(now - (task.started_at or now))}", "", task.started_at or 0)
        left = task.lease_expires - now
        return spec(f"lease {age(left)}" if left >= 0 else f"lapsed {age(-left)}", "" if left >= 0 else "bold red",
                    left)
    if view == "pending":
        return spec(f"{age(now - task.submitted_at)} ago", "", task.submitted_at)
    finished = task.finished_at or task.submitted_at
    return spec(f"{age(now - finished)} ago", "", finished)


def progress_cell(task: Task) -> Spec:
    """``▰▰▱▱▱ 40%``: the handler's last progress report (blank when it made none)."""
    if task.progress is None:
        return spec("", "", -1.0)
    filled = round(task.progress * 5)
    style = "green" if task.progress >= 1.0 else "cyan"
    return spec(f"{'▰' * filled}{'▱' * (5 - filled)} {round(task.progress * 100)}%", style, task.progress)


def task_cells(task: Task, view: str, now: float) -> tuple[Spec, ...]:
    priority = task.priority.name.lower()
    failed = view in ("failed", "dead_letter")
    detail = task.error if failed and task.error else task.why
    return (
        spec(short_id(task.task_id), TASK_STYLES.get(task.status.value, ""), task.submitted_at),
        spec(task.task_type),
        spec(priority, PRIORITY_STYLES.get(priority, ""), int(task.priority)),
        spec(task.node_name or "-"),
        spec(f"{task.attempt:>3}", "", task.attempt),
        when(task, view, now),
        progress_cell(task),
        spec(detail or "", "red" if failed else "dim"),
    )


class TaskQueues(Vertical):
    """One tab per queue; Enter opens a task, ``x`` cancels it, ``R`` retries a dead letter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "cancel_task", "Cancel task"),
        Binding("R", "retry_task", "Retry dead letter"),
    ]

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, dict[str, tuple[Any, ...]]] = {view: {} for view in TASK_VIEWS}
        self._labels: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with TabbedContent(id="task-tabs"):
            for view in TASK_VIEWS:
                with TabPane(LABELS[view], id=f"tq-{view}"):
                    table: DataTable[Any] = DataTable(id=f"tasks-{view}", cursor_type="row", zebra_stripes=True)
                    for key, label, width in COLUMNS:
                        table.add_column(label, key=key, width=width)
                    yield table

    def on_mount(self) -> None:
        self.border_title = "Tasks"

    def table(self, view: str) -> DataTable[Any]:
        return self.query_one(f"#tasks-{view}", DataTable)

    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is None:
            return
        tabs = self.query_one("#task-tabs", TabbedContent)
        for view in TASK_VIEWS:
            tasks = state.tasks.get(view, ())
            rows = {t.task_id: task_cells(t, view, state.now) for t in tasks}
            if sync_rows(self.table(view), KEYS, rows, self._shown[view]):
                # Newest first: the id cell sorts by submission time, which never changes for a task.
                self.table(view).sort("id", key=lambda cell: cell.sort_key, reverse=True)
            label = f"{LABELS[view]} {state.view_count(view)}"
            if self._labels.get(view) != label:  # a new label re-animates the tab underline: only on change
                self._labels[view] = label
                tabs.get_tab(f"tq-{view}").label = label
        total = sum(state.task_counts.values())
        self.border_subtitle = f"{total} tasks in the mesh · newest {max(len(v) for v in state.tasks.values())} shown" \
            if any(state.tasks.values()) else f"{total} tasks in the mesh"

    # -- keys --------------------------------------------------------------------------
    def active_view(self) -> str:
        active = self.query_one("#task-tabs", TabbedContent).active or "tq-pending"
        return active.removeprefix("tq-")

    def chosen_id(self) -> str | None:
        return cursor_key(self.table(self.active_view()))

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(TaskChosen(event.row_key.value))

    def action_cancel_task(self) -> None:
        task_id = self.chosen_id()
        if task_id:
            self.post_message(TaskAction("/mesh_cancel", task_id))

    def action_retry_task(self) -> None:
        task_id = self.chosen_id()
        if task_id:
            self.post_message(TaskAction("/mesh_retry", task_id))
