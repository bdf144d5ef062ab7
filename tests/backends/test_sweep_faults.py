"""The sweep routes each stranded or pending task on its own: one the router fails on (a fault, not a refusal) is
counted and left where it is, and the others are still routed; the sweep loop itself never stops over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh_core.model import TaskStatus
from mesh_core.node.tasks import TaskService

from .conftest import Cluster


async def test_a_task_the_router_fails_on_does_not_hold_up_the_pending_list(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        w1 = await cluster.node("w1", max_capacity=1, concurrency=1)
        client = await cluster.client()
        busy = await client.submit_task("sleep", {"seconds": 0.5})
        bad = await client.submit_task("echo", "bad", task_id="bad", queue=True)  # first in the pending list
        good = await client.submit_task("echo", "good", task_id="good", queue=True)
        assert {(await client.get_task(t)).status for t in (bad, good)} == {TaskStatus.PENDING}
        route = TaskService.route

        def failing(self: TaskService, task: Any, exclude: set[str]) -> Any:
            if task.task_id == "bad":
                raise RuntimeError("a router fault on this task")
            return route(self, task, exclude)
        monkeypatch.setattr(TaskService, "route", failing)
        await client.wait_for(busy, timeout=5)
        assert await client.wait_for(good, timeout=10) == "good"
        assert (await client.get_task(bad)).status is TaskStatus.PENDING
        counters = w1.services.ctx.counters
        assert counters["sweep_errors"] >= 1 and counters["loop_restarts"] == 0
    finally:
        await cluster.close()
