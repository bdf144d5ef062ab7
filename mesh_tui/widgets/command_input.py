"""The command line: every ``/mesh_*`` command from the one registry, with history, Tab completion and help."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.widgets import Input

from mesh_core.commands import REGISTRY, complete, lookup
from mesh_core.model import TaskStatus

from ..messages import CommandEntered
from ..state import MeshState, common_prefix

HISTORY_SIZE = 200


def takes_arguments(name: str) -> bool:
    cmd = REGISTRY.get(name)
    return cmd is not None and cmd.takes_arguments


class CommandLine(Input):
    """An Input that runs ``/mesh_*`` commands: ↑/↓ history, Tab completes, the usage shows as you type."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", show=False),
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
    ]

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, **kwargs: Any) -> None:
        # select_on_focus off: a key typed on the main screen lands here first and must not be selected away
        super().__init__(placeholder="/mesh_status · Tab completes · ↑ history · ? keys · ctrl+p palette",
                         select_on_focus=False, **kwargs)
        self.history: list[str] = []
        self._index = 0
        self._draft = ""

    def on_mount(self) -> None:
        self.border_title = "Command"

    # -- completion ------------------------------------------------------------------------
    def words(self) -> list[str]:
        """Argument completions: task types, node names, task statuses, conflict ids."""
        found: set[str] = {s.value for s in TaskStatus}
        state = self.mesh_state
        if state is not None:
            found |= set(state.task_types)
            found |= {n["name"] for n in state.nodes}
            found |= {c.conflict_id for c in state.conflicts}
        return sorted(found)

    def candidates(self, text: str) -> tuple[int, list[str]]:
        """Where the word being completed starts, and what it could become."""
        start = text.rfind(" ") + 1
        word = text[start:]
        if start == 0:
            return 0, complete(word if word.startswith("/") else f"/{word}")
        return start, [w for w in self.words() if w.startswith(word)]

    def action_complete(self) -> None:
        text = self.value[: self.cursor_position]
        if not self.value:
            self.screen.focus_next()
            return
        start, found = self.candidates(text)
        if not found:
            self.border_subtitle = "no completion"
            return
        if len(found) == 1:
            word = found[0]
            tail = " " if start > 0 or takes_arguments(word) else ""
        else:
            word = common_prefix(found)
            tail = ""
            self.border_subtitle = "  ".join(found[:8]) + (" …" if len(found) > 8 else "")
        rest = self.value[self.cursor_position:]
        self.value = text[:start] + word + tail + rest
        self.cursor_position = len(text[:start] + word + tail)

    # -- history -----------------------------------------------------------------------------
    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._index == len(self.history):
            self._draft = self.value
        self._index = max(0, min(len(self.history), self._index + step))
        self.value = self.history[self._index] if self._index < len(self.history) else self._draft
        self.cursor_position = len(self.value)

    def remember(self, line: str) -> None:
        if not self.history or self.history[-1] != line:
            self.history.append(line)
            del self.history[:-HISTORY_SIZE]
        self._index = len(self.history)
        self._draft = ""

    # -- help and submit -----------------------------------------------------------------------
    @on(Input.Changed)
    def _show_usage(self, event: Input.Changed) -> None:
        head = event.value.strip().split(" ", 1)[0]
        cmd = lookup(head) if head else None
        self.border_subtitle = f"{cmd.usage} — {cmd.summary}" if cmd else ""

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        line = event.value.strip()
        if not line:
            return
        if not line.startswith("/"):
            line = f"/{line}"
        self.remember(line)
        self.value = ""
        self.post_message(CommandEntered(line))
