"""What the panes show: one plain, immutable picture of the mesh per refresh, and small text helpers.

No Textual and no I/O here: the engine adapter builds a ``MeshState``, the
app posts it, the panes render it. Every age is measured against
``MeshState.now`` (never the wall clock), so a state built from fixed data
renders the same every time.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh_core.model import STATUS_LIGHTS, Conflict, NodeStatus, Task

# The task pane's views and the task statuses each one shows.
TASK_VIEWS: dict[str, tuple[str, ...]] = {
    "pending": ("pending", "assigned"),
    "running": ("running",),
    "done": ("succeeded",),
    "failed": ("failed", "cancelled"),
    "dead_letter": ("dead_letter",),
}

STATUS_STYLES = {"active": "green", "suspect": "yellow", "dead": "red", "left": "grey50"}
TASK_STYLES = {"pending": "cyan", "assigned": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
               "dead_letter": "bold red", "cancelled": "grey50"}
PRIORITY_STYLES = {"low": "grey50", "normal": "", "high": "yellow", "critical": "bold red"}


@dataclass(frozen=True)
class MeshState:
    """The mesh as this node sees it at ``now`` (one refresh)."""

    now: float
    enabled: bool
    local: Mapping[str, Any]                 # commands.node_dict + protocol, backend, healthy, uptime_s
    nodes: tuple[Mapping[str, Any], ...]     # commands.node_dict per known worker node
    task_counts: Mapping[str, int]           # raw counts per task status
    tasks: Mapping[str, tuple[Task, ...]]    # newest first, per TASK_VIEWS key
    conflicts: tuple[Conflict, ...] = ()
    memory_items: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    task_types: tuple[str, ...] = ()

    @property
    def local_id(self) -> str:
        return str(self.local.get("node_id", ""))

    def node(self, node_id: str) -> Mapping[str, Any] | None:
        return next((n for n in self.nodes if n["node_id"] == node_id), None)

    def node_names(self) -> dict[str, str]:
        return {n["node_id"]: n["name"] for n in self.nodes}

    def view_count(self, view: str) -> int:
        return sum(self.task_counts.get(s, 0) for s in TASK_VIEWS[view])

    def tasks_on(self, node_id: str) -> list[Task]:
        """Tasks in this state's lists that are (or were last) on ``node_id``, newest first."""
        found = [t for tasks in self.tasks.values() for t in tasks if t.node_id == node_id]
        return sorted(found, key=lambda t: t.submitted_at, reverse=True)


# -- text helpers -------------------------------------------------------------------------

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def bar(fraction: float, width: int = 10) -> str:
    """A load bar: ``███████░░░`` for 0.7."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def status_light(status: str, unknown: str = "⚫") -> str:
    """The coloured light for a node status name (``🟢`` for active); ``unknown`` for any other text."""
    try:
        return STATUS_LIGHTS[NodeStatus(status)]
    except ValueError:
        return unknown


def load_style(fraction: float) -> str:
    return "red" if fraction >= 0.9 else "yellow" if fraction >= 0.6 else "green"


def sparkline(values: Iterable[float], width: int = 12) -> str:
    """Load history as block characters, 0..1 mapped onto eight heights; padded on the left."""
    data = list(values)[-width:]
    chars = "".join(SPARK_CHARS[min(7, max(0, round(v * 7)))] for v in data)
    return chars.rjust(width)


SAMPLE_EVERY = 0.5


def push_sample(history: deque[float], last: list[float], now: float, value: float,
                every: float = SAMPLE_EVERY) -> None:
    """Add one history sample per ``every`` seconds of ``now``; within that, the newest value replaces the last.

    ``last`` holds the time of the previous sample (a one-item list, or empty);
    the caller updates it. Refreshes faster than ``every`` (or repeated states
    with the same ``now``) therefore never stretch the history.
    """
    if history and last and now - last[0] < every:
        history[-1] = value
        return
    history.append(value)
    last[:] = [now]


def age(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h04m``, ``3d02h``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock_time(at: float | None) -> str:
    """Local wall-clock time of day, ``14:03:27``."""
    if not at:
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def stamp(at: float | None) -> str:
    """Local date and time, ``2025-06-01 14:03:27.120``."""
    if not at:
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def short(node_id: str | None, n: int = 12) -> str:
    return (node_id or "-")[:n]


def common_prefix(words: Sequence[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    i = 0
    while i < len(first) and i < len(last) and first[i] == last[i]:
        i += 1
    return first[:i]
