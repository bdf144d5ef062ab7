"""Scale: one refresh with 1,000 known nodes and 10,000 tasks is applied incrementally (rows updated in place).

The state is built like ``fixed.py`` (real model objects through ``node_dict``)
and posted as the same ``MeshRefreshed`` message the refresh worker posts. The
figure printed is the time the app spends applying one refresh to every pane.
"""

from __future__ import annotations

import statistics

from mesh_testing.cockpit import NODES, TASKS, QuietSource, big_state
from mesh_tui.app import MeshApp
from mesh_tui.messages import MeshRefreshed
from mesh_tui.widgets.nodes_table import NodesTable


async def test_one_refresh_with_1000_nodes_and_10000_tasks_is_incremental_and_fast() -> None:
    app = MeshApp(source=QuietSource(), refresh_interval=3600)
    states = [big_state(tick) for tick in range(6)]
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(MeshRefreshed(states[0]))
        await pilot.pause()
        first = app.apply_ms
        table = app.query_one(NodesTable).table
        assert table.row_count == NODES
        row_key = next(iter(table.rows))
        times = []
        for state in states[1:]:
            app.post_message(MeshRefreshed(state))
            await pilot.pause()
            times.append(app.apply_ms)
        # Incremental: the same rows (same keys) were updated in place, not rebuilt.
        assert table.row_count == NODES and row_key in table.rows
    steady = statistics.median(times)
    # Speed is measured by `python -m bench.tui`, not asserted here.
    print(f"\nrefresh apply with {NODES} nodes / {TASKS} tasks: first {first:.1f} ms, "
          f"then median {steady:.1f} ms (max {max(times):.1f} ms)")
