"""The results loop reads a node's result feed when something there can be new, not once per submit and wait.

On a medium without blocking reads (SQLite, gRPC) the loop reads on a wake-up. An own submission and its waiter
used to wake it too: each woke a read that found nothing (the task was not even stored yet), and the one the
submit woke ran on the submitter's loop ahead of the submit's own write. The task's own wake-up (its result
landing) starts the read that finds it.
"""

from __future__ import annotations

import asyncio
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


async def test_the_sweep_does_not_ask_about_a_waiter_answered_in_this_pass(cluster: Cluster) -> None:
    """The periodic sweep asks the medium about waiters the feed did not answer. A waiter answered in the loop
    pass the sweep runs in is still listed until its caller runs: under load (a batch of results settled just
    before the sweep) it asked about hundreds of finished tasks, then read each one back (from every peer on gRPC),
    for waiters already answered."""
    await cluster.node("w")
    client = await cluster.client()
    answered_id = await client.submit_task("echo", {"n": 1})
    await client.wait_task(answered_id, timeout=10)
    other_id = await client.submit_task("echo", {"n": 2})  # finished, but waited for by a caller the feed missed
    await client.wait_task(other_id, timeout=10)
    results = client.services.results
    transport: Any = client.services.ctx.backend
    asked: list[str] = []
    task_states = transport.task_states

    async def counted(task_ids: Any) -> Any:
        asked.extend(task_ids)
        return await task_states(task_ids)
    transport.task_states = counted
    loop = asyncio.get_running_loop()
    answered, waiting = loop.create_future(), loop.create_future()
    answered.set_result(None)
    results._waiters[answered_id] = [answered]
    results._waiters[other_id] = [waiting]
    try:
        ready = await results._sweep_waiters([])
    finally:
        results._waiters.pop(answered_id, None)
        results._waiters.pop(other_id, None)
    assert answered_id not in asked
    assert other_id in asked and ready == [other_id]
