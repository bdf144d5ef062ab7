"""Engine errors show as notifications and log lines; the app keeps running and recovers."""

from __future__ import annotations

from typing import Any

from mesh_core.commands import CommandResult
from mesh_core.errors import BackendUnavailable
from mesh_tui.app import MeshApp
from mesh_tui.state import MeshState
from mesh_tui.widgets.event_log import EventLog

from .conftest import eventually
from .fixed import FixedSource


class FlakySource(FixedSource):
    """Fails the first refreshes and every command with an unexpected exception, then works."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    async def state(self) -> MeshState:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("database is locked")
        return await super().state()

    async def run(self, line: str) -> CommandResult:
        raise RuntimeError("boom")

    async def task(self, task_id: str) -> Any:
        raise KeyError(task_id)


async def test_engine_errors_are_shown_and_never_crash_the_app() -> None:
    app = MeshApp(source=FlakySource(), refresh_interval=0.05)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        log = app.query_one(EventLog)
        await eventually(lambda: "refresh: BackendUnavailable: database is locked" in log.text())
        assert any("database is locked" in str(n.message) for n in app._notifications)
        await eventually(lambda: app.mesh_state is not None)  # recovered
        await pilot.press("colon", *"/mesh_status", "enter")
        await eventually(lambda: "error: RuntimeError: boom" in log.text())
        app._open_task("nope")
        await eventually(lambda: "cannot load task nope" in log.text())
        assert app.is_running and type(app.screen).__name__ == "Screen"
