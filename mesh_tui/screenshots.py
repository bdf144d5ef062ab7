"""``make screenshots``: start the seeded demo mesh, drive the app by keys, save SVGs into ``screenshots/``.

Saves command_output.svg (``/mesh_status`` typed from a fresh start), main.svg,
node_detail.svg, task_detail.svg and conflict.svg (the oldest of the demo's open
conflicts, opened from the conflict inbox).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .app import MeshApp
from .demo import start_demo
from .widgets.command_output import CommandOutput
from .widgets.nodes_table import NodesTable
from .widgets.task_queues import TaskQueues

SIZE = (160, 48)


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"screenshots: {what} not reached within {timeout:g} s")


async def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mesh-demo-") as tmp:
        demo = await start_demo(Path(tmp))
        try:
            app = MeshApp(demo.cockpit_config(), refresh_interval=0.5)
            async with app.run_test(size=SIZE) as pilot:

                def save(name: str) -> None:
                    saved.append(Path(app.save_screenshot(name, str(out))))

                def status_of(name: str) -> str:
                    state = app.mesh_state
                    return next((n["status"] for n in state.nodes if n["name"] == name), "") if state else ""

                await until(lambda: status_of("crash-01") == "dead", what="the killed node dead")
                await until(lambda: app.mesh_state is not None and len(app.mesh_state.conflicts) >= 2,
                            what="the two demo conflicts")
                await pilot.press(*"/mesh_status", "enter")  # typed as in a chat: no ':' first
                output = app.query_one(CommandOutput)
                await until(lambda: output.display and "Agent Mesh Status" in output.text(),
                            what="the /mesh_status output")
                await pilot.pause(0.3)
                save("command_output.svg")
                demo.pause("paused-01")
                await until(lambda: status_of("paused-01") == "suspect", what="the paused node suspect")
                await pilot.pause(0.6)
                await pilot.press("escape", "n")
                await pilot.pause(0.3)
                save("main.svg")

                table = app.query_one(NodesTable)
                rows = table.shown_ids()
                target = next(i for i, node_id in enumerate(rows)
                              if app.mesh_state and (app.mesh_state.node(node_id) or {}).get("name") == "lang-01")
                table.table.move_cursor(row=target)
                await pilot.press("enter")
                await pilot.pause(0.8)
                save("node_detail.svg")
                await pilot.press("escape")

                queues = app.query_one(TaskQueues)
                app.query_one("#task-tabs").active = "tq-dead_letter"  # type: ignore[attr-defined]
                await pilot.pause(0.2)
                queues.table("dead_letter").focus()
                await pilot.pause(0.2)
                await pilot.press("enter")
                await until(lambda: type(app.screen).__name__ == "TaskDetailScreen", what="task detail")
                await pilot.pause(0.3)
                save("task_detail.svg")
                await pilot.press("escape")

                await pilot.press("c", "enter")
                await pilot.pause(0.5)
                save("conflict.svg")
                await pilot.press("escape")
                await pilot.press("q")
        finally:
            await demo.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh_tui.screenshots", description=__doc__)
    parser.add_argument("--out", default="screenshots", help="folder for the SVGs (default: screenshots)")
    args = parser.parse_args(argv)
    logging.getLogger("mesh").setLevel(logging.CRITICAL)
    for path in asyncio.run(take(Path(args.out))):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
