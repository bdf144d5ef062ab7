"""The results loop reads a node's result feed when something there can be new, not once per submit and wait.

On a medium without blocking reads (SQLite, gRPC) the loop reads on a wake-up. An own submission and its waiter
used to wake it too: each woke a read that found nothing (the task was not even stored yet), and the one the
submit woke ran on the submitter's loop ahead of the submit's own write. The task's own wake-up (its result
landing) starts the read that finds it.
"""

from __future__ import annotations

import time
from typing import Any

from mesh_core.node.results import RESULTS_POLL_SECONDS

from .conftest import Cluster


async def test_an_own_task_costs_one_read_of_the_feed_not_three(cluster: Cluster) -> None:
    await cluster.node("w")
    client = await cluster.client()
    transport: Any = client.services.ctx.backend
    for _ in range(5):  # warm: routes known, the worker's wake-ups arriving
        await client.wait_task(await client.submit_task("echo", {"n": 0}), timeout=10)
    reads = 0
    finished_for = transport.finished_for

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await finished_for(*args, **kwargs)
    transport.finished_for = counted
    n = 40
    start = time.monotonic()
    for i in range(n):
        task = await client.wait_task(await client.submit_task("echo", {"n": i}), timeout=10)
        assert task.result == {"n": i}
    polls = (time.monotonic() - start) / RESULTS_POLL_SECONDS + 2  # the loop's safety-net reads (a loaded machine)
    if transport.blocking_results:  # Redis: the read itself waits for the next entry, one outstanding at a time
        assert reads <= 2 * n + polls, reads
    else:  # one read per result
        assert reads <= n + polls, reads
