"""The help screen: every key, read from the BINDINGS of the app, its panes and screens; commands from the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

from mesh_core.commands import HELP, on_surface

from ..widgets.command_input import CommandLine
from ..widgets.nodes_table import NodesTable
from ..widgets.task_queues import TaskQueues
from .conflict import ConflictScreen
from .node_detail import NodeDetailScreen
from .task_detail import TaskDetailScreen

# Textual's own bindings worth telling about; the rest of its defaults (copy, scrolling) go without saying.
FROM_TEXTUAL = frozenset({"app.focus_next", "app.focus_previous", "select_cursor"})

# Where each group of keys works; the keys themselves come from each class's BINDINGS.
PLACES: tuple[tuple[str, tuple[type[DOMNode], ...]], ...] = (
    ("Node table", (NodesTable, DataTable)),
    ("Task queues", (TaskQueues, DataTable)),
    ("Command line", (CommandLine,)),
    ("Node detail", (NodeDetailScreen,)),
    ("Task detail", (TaskDetailScreen,)),
    ("Conflict", (ConflictScreen,)),
)

KeyRow = tuple[str, str]  # (keys as shown, what they do)


def bindings_of(cls: type[DOMNode]) -> list[Binding]:
    """The bindings ``cls`` declares, its own and its project bases', plus the few from Textual worth telling."""
    found: list[Binding] = []
    for klass in reversed(cls.__mro__):
        declared = klass.__dict__.get("BINDINGS")
        if not declared:
            continue
        ours = klass.__module__.startswith("mesh_tui")
        found += [b for b in Binding.make_bindings(declared) if ours or b.action in FROM_TEXTUAL]
    return found


def key_rows(bindings: Iterable[Binding], display: Callable[[Binding], str],
             shown: set[tuple[str, str]]) -> list[KeyRow]:
    """One row per action: every key bound to it, and what it does; a key already ``shown`` (everywhere) is left out."""
    rows: dict[tuple[str, str], list[str]] = {}
    for b in bindings:
        if (b.key, b.action) in shown:
            continue
        shown.add((b.key, b.action))
        keys = rows.setdefault((b.action, b.tooltip or b.description or b.action), [])
        if display(b) not in keys:
            keys.append(display(b))
    return [(" · ".join(keys), what) for (_, what), keys in rows.items()]


def key_sections(app_class: type[App[object]], display: Callable[[Binding], str]) -> list[tuple[str, list[KeyRow]]]:
    """Every key of the cockpit, grouped by where it works."""
    palette = Binding(app_class.COMMAND_PALETTE_BINDING, "command_palette", "Command palette (every /mesh_* command)")
    shown: set[tuple[str, str]] = set()
    everywhere = [*bindings_of(app_class), palette, *bindings_of(Screen)]
    return [("Everywhere", key_rows(everywhere, display, shown)),
            *((place, key_rows([b for c in classes for b in bindings_of(c)], display, set(shown)))
              for place, classes in PLACES)]


def _plain_key(binding: Binding) -> str:
    return binding.key_display or binding.key


def help_text(app_class: type[App[object]], display: Callable[[Binding], str] = _plain_key) -> Group:
    """The help as one renderable: keys by place, then every command on the help surface."""
    keys = Table(box=None, show_header=False, padding=(0, 2))
    keys.add_column(style="bold cyan", no_wrap=True, width=22)
    keys.add_column()
    for place, rows in key_sections(app_class, display):
        if not rows:
            continue
        keys.add_row(Text(place, style="bold"), "")
        for key, what in rows:
            keys.add_row(f"  {key}", what)
    parts: list[Text | Table] = [Text("Keys", style="bold underline"), keys, Text(""),
                                 Text("Commands (just type: a key that is not a shortcut starts the command line)",
                                      style="bold underline")]
    for cmd in on_surface(HELP):
        parts += [Text(cmd.usage, style="bold green"), Text(f"    {cmd.summary}")]
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Static(help_text(type(self.app), self.app.get_key_display))

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Keys and commands"
        self.query_one("#help-box").border_subtitle = "escape closes"
