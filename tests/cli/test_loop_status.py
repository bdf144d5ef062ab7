"""Loop health in the status block and the cockpit's local node panel: one line per failed loop, none when healthy."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from rich.console import Console

from mesh_core.commands import loop_line, troubled_loops
from mesh_tui.widgets.local_node import render_local
from tests.tui.fixed import HISTORY_STEPS, state

RUNNING = {"name": "view", "state": "running", "restarts": 0, "last_error": "", "since": 1.0}
RECOVERED = {"name": "claim", "state": "running", "restarts": 2, "last_error": "ValueError: bad", "since": 2.0}
RESTARTING = {"name": "memory", "state": "restarting", "restarts": 1, "last_error": "TypeError: x", "since": 3.0}


def test_only_failed_loops_get_a_line() -> None:
    assert troubled_loops([RUNNING]) == []
    assert troubled_loops([RUNNING, RECOVERED, RESTARTING]) == [RECOVERED, RESTARTING]
    assert loop_line(RECOVERED) == "claim: running (2 restarts; last ValueError: bad)"
    assert loop_line(RESTARTING) == "memory: ⚠️ restarting (1 restarts; last TypeError: x)"


def _panel(loops: list[dict[str, Any]] | None, **local: Any) -> str:
    shown = state(HISTORY_STEPS - 1)
    if loops is not None:
        shown = dataclasses.replace(shown, local={**shown.local, "loops": loops, **local})
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(render_local(shown))
    return console.export_text()


def test_the_local_panel_is_unchanged_while_every_loop_runs_and_shows_a_failed_one() -> None:
    healthy = _panel([RUNNING])
    assert "Loop" not in healthy and "✔ healthy" in healthy
    assert healthy == _panel([]) == _panel(None)  # as before loops were shown
    failing = _panel([RUNNING, RESTARTING], healthy=False, backend_healthy=True)
    assert "memory: ⚠️ restarting (1 restarts; last TypeError: x)" in failing
    assert "✔ healthy" in failing  # the medium is fine; the loop line says what is wrong
