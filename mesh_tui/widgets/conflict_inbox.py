"""Conflict inbox: open memory conflicts (key, type, nodes involved, age); Enter opens the resolver."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from mesh_core.model import Conflict

from ..messages import ConflictChosen
from ..state import MeshState, age


def conflict_prompt(c: Conflict, names: dict[str, str], now: float) -> Text:
    """Two lines per conflict: key, type and age; then the nodes whose versions disagree."""
    origins = " ↔ ".join(dict.fromkeys(names.get(s.origin, s.origin[:8]) for s in c.siblings))
    return Text.assemble(("⚡ ", "yellow"), (c.key, "bold"), f"  {c.memory_type}",
                         (f"  {age(now - c.opened_at)}", "dim"), "\n   ", (origins, "cyan"),
                         (f"  ({len(c.siblings)} versions)", "dim"))


class ConflictInbox(Vertical):
    """Conflicts a person has to settle, oldest first; empty (and says so) when there are none."""

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, Text] = {}

    def compose(self) -> ComposeResult:
        yield OptionList(id="conflicts")
        yield Static("", id="conflicts-empty")

    def on_mount(self) -> None:
        self.border_title = "Conflicts"

    @property
    def options(self) -> OptionList:
        return self.query_one("#conflicts", OptionList)

    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is None:
            return
        names = state.node_names()
        wanted = {c.conflict_id: conflict_prompt(c, names, state.now)
                  for c in sorted(state.conflicts, key=lambda c: c.opened_at)}
        options = self.options
        if list(wanted) != list(self._shown):
            keep = options.highlighted_option.id if options.highlighted_option else None
            options.clear_options()
            options.add_options([Option(prompt, id=cid) for cid, prompt in wanted.items()])
            if wanted:
                options.highlighted = list(wanted).index(keep) if keep in wanted else 0
        else:
            for cid, prompt in wanted.items():
                if prompt != self._shown[cid]:
                    options.replace_option_prompt(cid, prompt)
        self._shown = wanted
        empty = self.query_one("#conflicts-empty", Static)
        options.display = bool(wanted)
        empty.display = not wanted
        if not wanted:
            empty.update("✔ No open conflicts.")
        self.border_title = f"Conflicts ({len(wanted)})" if wanted else "Conflicts"
        self.border_subtitle = "enter resolves" if wanted else ""
        self.set_class(bool(wanted), "-has-conflicts")

    @on(OptionList.OptionSelected, "#conflicts")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(ConflictChosen(event.option.id))
