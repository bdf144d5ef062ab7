"""grpc_mesh: a task routed to the worker that owns it starts at enqueue (``SqliteTasks.start_own``).

A client hands each task to the worker it routed it to, which owns it and usually runs it itself. That owner's enqueue
starts the task in the same write that stores it (running, its lease granted, its attempt on record) within the slots
its worker had free at its last claim, and hands it to the worker in memory: no claim, no second write. A worker with
no free slot gets no more than it can run: the task waits in its inbox for a claim, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh_core.model import TaskStatus
from mesh_core.node.worker import RECORDING_PER_SLOT

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of, owner_and_client


async def _async(value: Any) -> Any:
    return value


async def test_a_task_routed_to_its_owner_starts_at_enqueue_and_runs_without_a_claim(cluster: Cluster) -> None:
    ran: list[int] = []

    async def only_w1(payload: Any) -> Any:
        ran.append(payload["n"])
        return payload

    w1, client = await owner_and_client(cluster, only_w1)
    for n in range(3):
        task = await client.wait_task(await client.submit_task("only_w1", {"n": n}), timeout=5)
        assert task.status is TaskStatus.SUCCEEDED and task.result == {"n": n} and task.attempt == 1
        assert task.node_name == "w1"
    assert ran == [0, 1, 2]
    full = await client.get_task(task.task_id)
    assert [(a.attempt, a.node_name) for a in full.attempts] == [(1, "w1")] and full.started_at
    info = w1.backend_info()
    assert info["tasks_started_in_wakeups"] == 3 and info["tasks_handed_again"] == 0


async def test_an_owner_with_no_free_slot_starts_nothing_more_the_task_waits_for_a_claim(cluster: Cluster) -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    async def only_w1(payload: Any) -> Any:
        ran.append(payload["n"])
        await gate.wait()
        return payload

    w1, client = await owner_and_client(cluster, only_w1, concurrency=1)
    first = await client.submit_task("only_w1", {"n": 1})
    await eventually(lambda: _async(ran == [1]), timeout=5)
    second = await client.submit_task("only_w1", {"n": 2})
    await asyncio.sleep(0.3)
    assert (await client.get_task(second)).status is TaskStatus.ASSIGNED and ran == [1]
    gate.set()
    for task_id in (first, second):
        task = await client.wait_task(task_id, timeout=5)
        assert task.status is TaskStatus.SUCCEEDED and task.attempt == 1
    assert ran == [1, 2]
    assert w1.backend_info()["tasks_started_in_wakeups"] == 1  # the second one came by a claim


async def test_a_handler_slot_is_free_while_the_outcome_before_waits_for_the_backup(cluster: Cluster) -> None:
    """With one slot, further tasks run while the outcomes before them wait for their copies on the backup: recording
    holds no handler (``Worker._free``), up to ``RECORDING_PER_SLOT`` outcomes a slot; the next task then waits. All
    are recorded once, when the backup answers; the heartbeat's load counts only handlers that run."""
    ran: list[int] = []
    hold = asyncio.Event()

    async def only_w1(payload: Any) -> Any:
        ran.append(payload["n"])
        return payload

    w1, client = await owner_and_client(cluster, only_w1, concurrency=1)
    w2 = next(m for m in cluster.nodes if m.node_id not in (w1.node_id, client.node_id))
    backup = backend_of(w2)
    keep = backup._keep_backups

    async def slow_keep(peer: Any, records: Any) -> None:
        await hold.wait()  # the backup's copies wait: w1's outcomes wait for their acks
        await keep(peer, records)
    backup._keep_backups = slow_keep
    in_hand = 1 + RECORDING_PER_SLOT
    submits = [asyncio.create_task(client.submit_task("only_w1", {"n": n})) for n in range(in_hand + 2)]
    await eventually(lambda: _async(len(ran) == in_hand), timeout=5)
    await asyncio.sleep(0.3)
    worker = w1.services.worker
    assert len(ran) == in_hand and worker._recording == in_hand and worker.executing == 0
    assert w1.running_tasks() == [] and w1.services.members.running() == 0
    hold.set()
    for submit in submits:
        task = await client.wait_task(await submit, timeout=5)
        assert task.status is TaskStatus.SUCCEEDED and task.attempt == 1
    assert sorted(ran) == list(range(in_hand + 2))
    await eventually(lambda: _async(worker.running == {} and worker._recording == 0), timeout=5)
