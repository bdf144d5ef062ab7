"""SVG snapshots of the cockpit on a fixed dataset with a frozen clock (see ``fixed.py``).

Update after an intended change of looks with ``pytest tests/tui --snapshot-update``
and review the SVGs under ``tests/tui/__snapshots__/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from mesh_tui.app import MeshApp
from mesh_tui.widgets.event_log import EventLog
from mesh_tui.widgets.nodes_table import NodesTable
from mesh_tui.widgets.task_queues import TaskQueues

from .fixed import HISTORY_STEPS, IDS, FixedSource, events, hex_id

SIZE = (160, 48)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times of day on screen are local: pin the zone so the pictures match everywhere."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def fixed_app() -> MeshApp:
    return MeshApp(source=FixedSource(), refresh_interval=0.01)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until the whole scripted history and every event are on screen."""
    app = pilot.app
    assert isinstance(app, MeshApp) and isinstance(app.source, FixedSource)
    log = app.query_one(EventLog)
    for _ in range(500):
        if app.source.settled and app.refreshes >= HISTORY_STEPS and len(log.lines_text) >= len(events()):
            break
        await pilot.pause(0.02)
    await pilot.pause(0.1)


def then(*steps: Callable[[Pilot[Any]], Awaitable[None]]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for step in steps:
            await step(pilot)
            await pilot.pause(0.1)
    return run


async def open_node_lang_01(pilot: Pilot[Any]) -> None:
    table = pilot.app.query_one(NodesTable)
    table.table.focus()
    table.table.move_cursor(row=table.shown_ids().index(IDS["lang-01"]))
    await pilot.press("enter")
    await shows(pilot, "NodeDetailScreen")


async def open_dead_letter(pilot: Pilot[Any]) -> None:
    queues = pilot.app.query_one(TaskQueues)
    pilot.app.query_one("#task-tabs").active = "tq-dead_letter"  # type: ignore[attr-defined]
    await pilot.pause(0.05)
    queues.table("dead_letter").focus()
    assert queues.chosen_id() == hex_id("t-dead-1")
    await pilot.press("enter")
    await shows(pilot, "TaskDetailScreen")


async def open_first_conflict(pilot: Pilot[Any]) -> None:
    await pilot.press("c", "enter")
    await shows(pilot, "ConflictScreen")


async def shows(pilot: Pilot[Any], screen: str) -> None:
    for _ in range(100):
        if type(pilot.app.screen).__name__ == screen:
            return
        await pilot.pause(0.02)
    raise AssertionError(f"{screen} did not open (on {type(pilot.app.screen).__name__})")


class TestLooks:
    def test_main_screen(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=settle)

    def test_node_detail(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=then(open_node_lang_01))

    def test_task_detail(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=then(open_dead_letter))

    def test_conflict_modal(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=then(open_first_conflict))
