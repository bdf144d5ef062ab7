"""A worker looks up a task's submitter it does not know (a node that joined since its view), but not once per task:
a client writes no node record on a shared store, and a read of every record before each of its tasks ran cost the
workers half their CPU under load (found by ``bench tasks``: 2.6k → 7.4k tasks/s on Redis once bounded)."""

from __future__ import annotations

import asyncio
import time

from mesh_core.node.membership import LOOKUP_AGAIN_SECONDS

from .conftest import Cluster, eventually


async def test_a_clients_tasks_cost_its_worker_a_lookup_at_most_every_second(cluster: Cluster) -> None:
    worker = await cluster.node("w", max_capacity=1000)
    members = worker.services.members
    lookups = 0
    learn = members.learn

    async def counted() -> None:
        nonlocal lookups
        lookups += 1
        await learn()
    members.learn = counted  # type: ignore[method-assign]  # the real lookup, counted
    client = await cluster.client()

    async def ready() -> bool:
        return any(m.info.node_id == worker.node_id for m in client.members())
    await eventually(ready, timeout=3)
    started = time.monotonic()
    ids = [await client.submit_task("echo", {"i": i}) for i in range(300)]
    results = await asyncio.gather(*(client.wait_for(task_id, timeout=20) for task_id in ids))
    elapsed = time.monotonic() - started
    assert results == [{"i": i} for i in range(300)]
    assert lookups <= 1 + elapsed / LOOKUP_AGAIN_SECONDS, (lookups, elapsed)
