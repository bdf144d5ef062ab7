"""The help screen: every key and every command, from the same bindings and registry the app uses."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from mesh_core.commands import REGISTRY

KEYS: tuple[tuple[str, str], ...] = (
    ("q", "quit (leaves the mesh gracefully)"),
    ("?", "this help"),
    ("ctrl+p", "command palette (every /mesh_* command)"),
    (":", "focus the command line"),
    ("tab / shift+tab", "next / previous pane"),
    ("n · t · c · l", "jump to nodes · tasks · conflicts · log"),
    ("enter", "open the selected node, task or conflict"),
    ("/", "filter the node table (words or type:, status:, name:, cap:)"),
    ("s · S", "sort the node table by the next column · reverse"),
    ("x · R", "cancel the selected task · retry a dead letter"),
    ("↑ ↓ (command line)", "command history"),
    ("tab (command line)", "complete commands, task types, node names"),
    ("1 2 m e d (conflict)", "keep left · keep right · merge · edit · defer"),
    ("escape", "close a screen, clear the filter"),
)


def help_text() -> Group:
    keys = Table(box=None, show_header=False, padding=(0, 2))
    keys.add_column(style="bold cyan", no_wrap=True, width=22)
    keys.add_column()
    for key, what in KEYS:
        keys.add_row(key, what)
    commands = Table(box=None, show_header=False, padding=(0, 2))
    commands.add_column(style="bold green", no_wrap=True)
    commands.add_column()
    for cmd in REGISTRY.values():
        commands.add_row(cmd.usage, cmd.summary)
    return Group(Text("Keys", style="bold"), keys, Text(""), Text("Commands (type them after :)", style="bold"),
                 commands)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Static(help_text())

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Keys and commands"
        self.query_one("#help-box").border_subtitle = "escape closes"
