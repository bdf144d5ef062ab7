"""``python -m bench.tui``: time the cockpit applying one refresh with 1,000 nodes and 10,000 tasks.

Uses the same state builder as ``tests/tui/test_scale.py`` (``mesh_testing.cockpit``) and posts it
through the same ``MeshRefreshed`` message the app's refresh worker posts;
the figure is the time the app spends applying it to every pane. Target
(issue 6): ≤ 50 ms. Prints a line and writes JSON to bench/results/.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

from mesh_testing.cockpit import NODES, TASKS, QuietSource, big_state
from mesh_tui.app import MeshApp
from mesh_tui.messages import MeshRefreshed


async def measure(ticks: int = 20) -> dict[str, float]:
    app = MeshApp(source=QuietSource(), refresh_interval=3600)
    states = [big_state(tick) for tick in range(ticks + 1)]
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(MeshRefreshed(states[0]))
        await pilot.pause()
        first = app.apply_ms
        times = []
        for state in states[1:]:
            app.post_message(MeshRefreshed(state))
            await pilot.pause()
            times.append(app.apply_ms)
    times.sort()
    return {"nodes": NODES, "tasks": TASKS, "first_ms": round(first, 2), "p50_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(len(times) * 0.9) - 1], 2), "max_ms": round(max(times), 2), "ticks": ticks}


def main() -> None:
    figures = asyncio.run(measure())
    figures.update({"cpus": os.cpu_count() or 0, "python": platform.python_version(),
                    "load_average": list(os.getloadavg())})
    verdict = "met" if figures["p50_ms"] <= 50 else "missed"
    print(f"tui refresh, {NODES} nodes / {TASKS} tasks: first {figures['first_ms']} ms, p50 {figures['p50_ms']} ms, "
          f"p90 {figures['p90_ms']} ms, max {figures['max_ms']} ms [target p50 ≤ 50 ms: {verdict}]")
    out = Path(__file__).parent / "results" / f"tui-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
