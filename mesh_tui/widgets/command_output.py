"""The last command's output, over the panes from its first line, with the command echoed above it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from mesh_core.commands import CommandResult


class CommandOutput(VerticalScroll):
    """Shown in place of the four panes while a command's output is read; hidden again by Escape.

    Focus stays on the command line, so the next command can be typed at once; PageUp/PageDown there
    scroll this panel (see ``CommandLine``), and a click or Tab gives it the arrow keys."""

    can_focus = True

    def compose(self) -> ComposeResult:
        yield Static(id="command-echo")
        yield Static(id="command-text")

    def on_mount(self) -> None:
        self.border_title = "Command output"
        self.border_subtitle = "escape closes · pgup/pgdn scroll"

    def show(self, line: str, result: CommandResult) -> None:
        """Put ``result`` here, scrolled to its first line, under ``line`` as typed."""
        self.query_one("#command-echo", Static).update(Text.assemble(("› ", "bold cyan"), (line, "bold")))
        body = result.text or ("done" if result.ok else "failed")
        self.query_one("#command-text", Static).update(Text(body, style="" if result.ok else "red"))
        self.display = True
        self.scroll_home(animate=False)

    def text(self) -> str:
        """What the panel shows, as plain text (the echo, then the output)."""
        echo = self.query_one("#command-echo", Static).render()
        body = self.query_one("#command-text", Static).render()
        return f"{getattr(echo, 'plain', echo)}\n{getattr(body, 'plain', body)}"
