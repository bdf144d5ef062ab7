"""Event log: membership, task and memory events and command output, coloured, capped."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from mesh_core.commands import CommandResult
from mesh_core.events import (
    BackendStatus,
    ConflictOpened,
    ConflictResolved,
    Event,
    MemoryChanged,
    NodeJoined,
    NodeStatusChanged,
    Problem,
    TaskUpdated,
)

from ..state import STATUS_STYLES, TASK_STYLES, clock_time, short, status_light

MAX_LINES = 1000


def describe(event: Event) -> Text:
    """One coloured line for one engine event (without the time)."""
    if isinstance(event, NodeJoined):
        return Text.assemble(("＋ ", "green"), (event.name, "bold"), f" joined ({event.node_type}, "
                             f"incarnation {event.incarnation})")
    if isinstance(event, NodeStatusChanged):
        style = STATUS_STYLES.get(event.new, "")
        light = status_light(event.new, unknown="•")
        return Text.assemble(f"{light} ", (event.name, "bold"), f" {event.old} → ", (event.new, style))
    if isinstance(event, TaskUpdated):
        style = TASK_STYLES.get(event.status, "")
        line = Text.assemble(("▸ ", style), "task ", (short(event.task_id, 8), "bold"),
                             f" {event.task_type} " if event.task_type else " ", (event.status, style))
        if event.node_name:
            line.append(f" on {event.node_name}")
        if event.attempt:
            line.append(f" (try {event.attempt})", style="dim")
        if event.error:
            line.append(f": {event.error}", style="red")
        elif event.why:
            line.append(f" — {event.why}", style="dim")
        return line
    if isinstance(event, MemoryChanged):
        extra = f" by {event.strategy}" if event.strategy else ""
        return Text.assemble(("◆ ", "magenta"), "memory ", (event.key, "bold"), f" ({event.memory_type}) ",
                             (event.outcome, "magenta"), f"{extra} from {short(event.origin, 8)}")
    if isinstance(event, ConflictOpened):
        return Text.assemble(("⚡ conflict ", "bold yellow"), (event.key, "bold"), f" ({event.memory_type}) between "
                             f"{', '.join(short(n, 8) for n in event.nodes)} — {event.strategy}")
    if isinstance(event, ConflictResolved):
        return Text.assemble(("✔ conflict ", "green"), (event.key, "bold"), f" resolved: {event.choice}")
    if isinstance(event, BackendStatus):
        if event.healthy:
            return Text.assemble(("✔ backend ", "green"), f"{event.backend} healthy again")
        return Text.assemble(("⚠ backend ", "bold red"), f"{event.backend} degraded: {event.detail}")
    if isinstance(event, Problem):
        return Text.assemble(("⚠ ", "yellow"), (event.counter, "yellow"), f": {event.detail}")
    fields = " ".join(f"{k}={v}" for k, v in event.to_dict().items() if k not in ("at", "event") and v)
    return Text(f"{event.kind} {fields}")


class EventLog(RichLog):
    """The log pane. ``lines_text`` keeps the plain text of recent lines (tests and copy-out read it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, highlight=False, **kwargs)
        self.lines_text: deque[str] = deque(maxlen=MAX_LINES)

    def on_mount(self) -> None:
        self.border_title = "Events"

    def _line(self, at: float, body: Text) -> None:
        line = Text.assemble((clock_time(at) + " ", "dim"), body)
        self.lines_text.append(line.plain)
        self.write(line)

    def add_events(self, events: Iterable[Event], skipped: int = 0) -> None:
        last = 0.0
        for event in events:
            last = event.at
            self._line(event.at, describe(event))
        if skipped:
            self._line(last, Text(f"… and {skipped} more task updates (burst folded)", style="dim"))

    def add_command(self, at: float, line: str, result: CommandResult) -> None:
        self._line(at, Text.assemble(("› ", "bold cyan"), (line, "bold")))
        if result.text:
            body = Text(result.text, style="" if result.ok else "red")
            for text_line in result.text.splitlines():
                self.lines_text.append(text_line)
            self.write(body)

    def add_note(self, at: float, text: str, style: str = "") -> None:
        self._line(at, Text(text, style=style))

    def text(self) -> str:
        return "\n".join(self.lines_text)
