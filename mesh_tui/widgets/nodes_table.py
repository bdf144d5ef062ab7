"""Known nodes: a sortable, filterable table updated cell by cell, with each node's load history."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.reactive import var
from textual.widgets import DataTable, Input

from ..messages import NodeChosen
from ..state import SAMPLE_EVERY, STATUS_STYLES, MeshState, age, bar, load_style, sparkline, status_light
from ._rows import Spec, cursor_key, sort_value, spec, sync_rows

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("status", "", 2),
    ("name", "Name", 14),
    ("type", "Type", 16),
    ("load", "Load", 11),
    ("history", "History", 10),
    ("running", "Run", 3),
    ("queued", "Queue", 5),
    ("heartbeat", "Heartbeat", 9),
    ("capabilities", "Capabilities", 20),
)
KEYS = tuple(c[0] for c in COLUMNS)
SORTABLE = ("name", "status", "type", "load", "queued", "heartbeat")
STATUS_RANK = {"active": 0, "suspect": 1, "dead": 2, "left": 3}
FILTER_FIELDS = {"name": "name", "type": "node_type", "status": "status", "cap": "capabilities",
                 "id": "node_id", "host": "host"}
HISTORY = 10


def matches(node: Mapping[str, Any], query: str) -> bool:
    """Every word must match: ``field:value`` (name, type, status, cap, id, host) or a substring of any."""
    for word in query.lower().split():
        field, sep, value = word.partition(":")
        if sep and field in FILTER_FIELDS:
            got = node.get(FILTER_FIELDS[field], "")
            text = " ".join(got) if isinstance(got, list | tuple | frozenset | set) else str(got)
            if value not in text.lower():
                return False
            continue
        hay = " ".join([str(node.get("name", "")), str(node.get("node_type", "")), str(node.get("status", "")),
                        str(node.get("node_id", ""))[:12], " ".join(node.get("capabilities", ()))]).lower()
        if word not in hay:
            return False
    return True


def node_cells(n: Mapping[str, Any], history: deque[float], local_id: str) -> tuple[Spec, ...]:
    status = str(n["status"])
    load = float(n["load"])
    light = status_light(status)
    local = n["node_id"] == local_id
    return (
        spec(light, "", STATUS_RANK.get(status, 9)),
        spec(n["name"] + (" ★" if local else ""), "bold" if local else "", n["name"]),
        spec(str(n["node_type"])),
        spec(f"{bar(load, 6)} {load * 100:3.0f}%", load_style(load), load),
        spec(sparkline(history, HISTORY), "cyan"),
        spec(f"{n['running']:>3}", "", n["running"]),
        spec(f"{n['queued']:>4}", "", n["queued"]),
        spec(f"{heartbeat_age(n['last_seen_s']):>8}", STATUS_STYLES.get(status, ""), n["last_seen_s"]),
        spec(", ".join(n.get("capabilities", ())), "dim"),
    )


def heartbeat_age(seconds: float) -> str:
    """Coarse on purpose: a healthy node reads ``<1s`` steadily instead of flickering every refresh."""
    return "<1s" if seconds < 1 else f"{int(seconds)}s" if seconds < 60 else age(seconds)


class NodesTable(Vertical):
    """Every worker node this node knows, one row each, keyed by node id."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filter", "Filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    mesh_state: var[MeshState | None] = var(None, always_update=True)
    filter_text: var[str] = var("")
    sort_column: var[str] = var("name")
    sort_reverse: var[bool] = var(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._history: dict[str, deque[float]] = {}
        self._sampled: list[float] = []  # when the last sample was taken (one clock for every row)
        self._total = 0

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: words or field:value (type:, status:, name:, cap:) · Enter keeps, Esc clears",
                    id="node-filter")
        table: DataTable[Any] = DataTable(id="nodes", cursor_type="row", zebra_stripes=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table

    def on_mount(self) -> None:
        self.border_title = "Nodes"
        self.query_one("#node-filter", Input).display = False

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#nodes", DataTable)

    def shown_ids(self) -> list[str]:
        """Row keys in display order (for tests and the detail screen)."""
        table = self.table
        return [table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value or "" for i in range(table.row_count)]

    # -- data --------------------------------------------------------------------------
    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is None:
            return
        fresh = not self._sampled or state.now - self._sampled[0] >= SAMPLE_EVERY
        for n in state.nodes:
            history = self._history.get(n["node_id"])
            if history is None:
                history = self._history[n["node_id"]] = deque(maxlen=HISTORY)
            if fresh or not history:
                history.append(float(n["load"]))
            else:
                history[-1] = float(n["load"])
        if fresh:
            self._sampled[:] = [state.now]
        known = {n["node_id"] for n in state.nodes}
        for gone in [k for k in self._history if k not in known]:
            del self._history[gone]
        self._total = len(state.nodes)
        self._apply()

    def _apply(self) -> None:
        state = self.mesh_state
        if state is None:
            return
        rows = {n["node_id"]: node_cells(n, self._history[n["node_id"]], state.local_id)
                for n in state.nodes if not self.filter_text or matches(n, self.filter_text)}
        if sync_rows(self.table, KEYS, rows, self._shown, self.sort_column):
            self._sort()
        shown = len(rows)
        where = f"{shown} of {self._total}" if shown != self._total else f"{self._total}"
        self.border_title = f"Nodes ({where})"
        arrow = "▼" if self.sort_reverse else "▲"
        self.border_subtitle = (f"filter: {self.filter_text} · " if self.filter_text else "") + \
            f"sort: {self.sort_column} {arrow}"

    def _sort(self) -> None:
        self.table.sort(self.sort_column, "name", key=lambda cells: tuple(sort_value(c) for c in cells),
                        reverse=self.sort_reverse)

    def watch_filter_text(self) -> None:
        self._apply()

    def watch_sort_column(self) -> None:
        self._sort()
        self._apply()

    def watch_sort_reverse(self) -> None:
        self._sort()
        self._apply()

    # -- keys --------------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#node-filter", Input)
        box.display = True
        box.focus()

    def action_cycle_sort(self) -> None:
        i = SORTABLE.index(self.sort_column) if self.sort_column in SORTABLE else -1
        self.sort_column = SORTABLE[(i + 1) % len(SORTABLE)]

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse

    @on(Input.Changed, "#node-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()

    @on(Input.Submitted, "#node-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.stop()
        box = self.query_one("#node-filter", Input)
        box.display = bool(box.value.strip())
        self.table.focus()

    def key_escape(self) -> None:
        box = self.query_one("#node-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.table.focus()

    @on(DataTable.HeaderSelected, "#nodes")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value or ""
        if key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        elif key in KEYS:
            self.sort_column = key

    @on(DataTable.RowSelected, "#nodes")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(NodeChosen(event.row_key.value))

    def chosen_id(self) -> str | None:
        return cursor_key(self.table)
