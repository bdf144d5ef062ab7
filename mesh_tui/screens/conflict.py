"""The conflict resolver: two siblings side by side, differing paths marked; keys alone settle it."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

from mesh_core.clock import hlc_logical, hlc_to_seconds
from mesh_core.model import Conflict, MemoryItem

from ..diff import differing_paths, is_marked, merge, pretty_lines
from ..engine import EDIT, KEEP_LEFT, KEEP_RIGHT, MERGE, order_siblings
from ..state import age, stamp

Resolution = tuple[str, Any]


def render_sibling(item: MemoryItem, differing: list[str]) -> Text:
    out = Text()
    for path, line in pretty_lines(item.value):
        out.append(line + "\n", style="bold black on yellow" if is_marked(path, differing) else "")
    out.rstrip()
    return out


def sibling_title(item: MemoryItem, names: dict[str, str], local_id: str, side: str) -> str:
    who = names.get(item.origin, item.origin[:12])
    mine = " (this node)" if item.origin == local_id else ""
    return f"{side}: {who}{mine}"


def sibling_subtitle(item: MemoryItem) -> str:
    return f"HLC {stamp(hlc_to_seconds(item.hlc))} +{hlc_logical(item.hlc)}"


class ConflictScreen(ModalScreen[Resolution | None]):
    """Dismisses with ``(choice, value)``: keep-left, keep-right, merge, edit (with the new value), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1,left", "keep_left", "Keep left"),
        Binding("2,right", "keep_right", "Keep right"),
        Binding("m", "merge", "Merge"),
        Binding("e", "edit", "Edit"),
        Binding("ctrl+s", "save", "Save edit", show=False),
        Binding("d,escape", "defer", "Defer"),
    ]

    def __init__(self, conflict: Conflict, names: dict[str, str], local_id: str, now: float) -> None:
        super().__init__()
        self.conflict = conflict
        self.names = names
        self.local_id = local_id
        self.now = now
        self.left, self.right = order_siblings(conflict, local_id)
        self.differing = differing_paths(self.left.value, self.right.value)
        self.merged, self.clashes = merge(self.left.value, self.right.value)
        self.editing = False

    def compose(self) -> ComposeResult:
        c = self.conflict
        with Vertical(id="conflict-box", classes="dialog"):
            yield Static(Text.assemble(("key ", "dim"), (c.key, "bold"), ("  type ", "dim"), c.memory_type,
                                       ("  strategy ", "dim"), c.strategy, ("  open ", "dim"),
                                       age(self.now - c.opened_at),
                                       (f"  siblings {len(c.siblings)}", "dim"),
                                       (f"\n{c.reason}" if c.reason else "", "dim italic")), id="conflict-head")
            with Horizontal(id="siblings"):
                for item, wid in ((self.left, "left"), (self.right, "right")):
                    with VerticalScroll(id=f"sibling-{wid}", classes="sibling"):
                        yield Static(render_sibling(item, self.differing))
            yield Static(self._summary(), id="conflict-diff")
            yield TextArea(json.dumps(self.merged if not self.clashes else self.left.value, indent=2,
                                      ensure_ascii=False, default=str), id="conflict-edit")
            yield Static("", id="conflict-keys")

    def on_mount(self) -> None:
        box = self.query_one("#conflict-box")
        box.border_title = f"Conflict on {self.conflict.key}"
        for item, wid, side in ((self.left, "left", "Left"), (self.right, "right", "Right")):
            pane = self.query_one(f"#sibling-{wid}")
            pane.border_title = sibling_title(item, self.names, self.local_id, side)
            pane.border_subtitle = sibling_subtitle(item)
        self.query_one("#conflict-edit", TextArea).display = False
        self._show_keys()

    def _summary(self) -> Text:
        paths = ", ".join(self.differing) or "(values are equal)"
        line = Text.assemble(("Differs at: ", "dim"), (paths, "yellow"))
        if self.clashes:
            line.append(f"\nMerge: not compatible ({', '.join(self.clashes)} disagree)", style="dim")
        else:
            line.append("\nMerge: compatible → ", style="dim")
            line.append(json.dumps(self.merged, ensure_ascii=False, default=str), style="green")
        return line

    def _show_keys(self) -> None:
        if self.editing:
            keys = "[b]ctrl+s[/] save the edited value · [b]escape[/] back"
        else:
            merge_key = "[b]m[/] merge · " if not self.clashes else "[dim]m merge (n/a)[/] · "
            keys = f"[b]1[/]/[b]←[/] keep left · [b]2[/]/[b]→[/] keep right · {merge_key}[b]e[/] edit · " \
                   "[b]d[/]/[b]esc[/] defer"
        self.query_one("#conflict-keys", Static).update(keys)

    # -- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.editing and action in ("keep_left", "keep_right", "merge", "edit"):
            return False
        if action == "merge" and self.clashes:
            return None  # shown disabled
        return True

    def action_keep_left(self) -> None:
        self.dismiss((KEEP_LEFT, self.left.value))

    def action_keep_right(self) -> None:
        self.dismiss((KEEP_RIGHT, self.right.value))

    def action_merge(self) -> None:
        if self.clashes:
            self.notify("These siblings disagree; edit a value instead.", severity="warning")
            return
        self.dismiss((MERGE, self.merged))

    def action_edit(self) -> None:
        self.editing = True
        area = self.query_one("#conflict-edit", TextArea)
        area.display = True
        area.focus()
        self._show_keys()
        self.refresh_bindings()

    def action_save(self) -> None:
        if not self.editing:
            return
        text = self.query_one("#conflict-edit", TextArea).text
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.notify(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", severity="error")
            return
        self.dismiss((EDIT, value))

    def action_defer(self) -> None:
        if self.editing:
            self.editing = False
            self.query_one("#conflict-edit", TextArea).display = False
            self._show_keys()
            self.refresh_bindings()
            return
        self.dismiss(None)
