"""The app's messages: workers post engine news, panes post what the operator picked."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from mesh_core.commands import CommandResult
from mesh_core.events import Event

from .state import MeshState


@dataclass
class MeshRefreshed(Message):
    """A new picture of the mesh; a newer one makes an unhandled older one moot."""

    state: MeshState

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MeshRefreshed)


@dataclass
class EngineEvents(Message):
    """A batch of engine events, in order (one message per batch keeps a burst cheap)."""

    events: tuple[Event, ...]
    skipped: int = 0  # task updates folded into a count during a burst


@dataclass
class EngineTrouble(Message):
    """An engine call failed; ``where`` says which, ``error`` what. Shown, never raised."""

    where: str
    error: str


@dataclass
class EngineRecovered(Message):
    where: str


@dataclass
class CommandEntered(Message):
    line: str


@dataclass
class CommandDone(Message):
    line: str
    result: CommandResult


@dataclass
class NodeChosen(Message):
    node_id: str


@dataclass
class TaskChosen(Message):
    task_id: str


@dataclass
class TaskAction(Message):
    """Run a task command (``/mesh_cancel``, ``/mesh_retry``) on one task."""

    command: str
    task_id: str


@dataclass
class ConflictChosen(Message):
    conflict_id: str
