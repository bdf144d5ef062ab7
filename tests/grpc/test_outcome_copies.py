"""grpc_mesh tasks: the outcome an owner copies to its backup is its own record, as its store holds it.

An owner keeps its unfinished tasks in memory from their enqueue through their first attempt, and builds the
outcome's copy (and the push to the submitter) from that and the completion, without reading the task back.
The copy must still be exactly the stored record, whichever way the attempt ran: claimed by the owner itself,
or offered to another worker that accepted it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh_core.backends.grpc.tasks import task_fields
from mesh_core.model import TaskStatus

from ..backends.conftest import Cluster, eventually
from .conftest import backend_of


async def _async(value: Any) -> Any:
    return value


async def test_the_backup_holds_each_outcome_exactly_as_its_owner_stored_it(cluster: Cluster) -> None:
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    client = await cluster.client()
    b1, b2 = backend_of(w1), backend_of(w2)
    await eventually(lambda: _async(b1._backup_peer() == b2.node_id and b2._backup_peer() == b1.node_id))
    ids = [await client.submit_task("echo", {"i": i}, context={"n": i}) for i in range(20)]  # each owner runs its own
    ids += [await w1.submit_task("echo", {"j": i}) for i in range(20)]  # w1 owns these: some are offered to w2
    finals = await asyncio.gather(*(client.wait_task(i, timeout=15) for i in ids))
    assert all(t.status is TaskStatus.SUCCEEDED for t in finals)
    ran_on = {(t.task_id in ids[20:], t.node_id) for t in finals}
    assert (True, w2.node_id) in ran_on, "no task of w1's was accepted by w2: the offer path is not covered"
    compared = 0
    for owner, holder in ((b1, b2), (b2, b1)):
        records = await owner.store.get_tasks(ids, with_attempts=True)
        rows = await holder.store._read(lambda c, o=owner: c.execute(
            "SELECT task_id, record FROM grpc_backups WHERE owner_id=?", (o.node_id,)).fetchall())
        copies = {task_id: holder._task_of(record) for task_id, record in rows}
        for record in records:
            assert record.status is TaskStatus.SUCCEEDED
            copy = copies[record.task_id]
            assert task_fields(copy, owner.limits) == task_fields(record, owner.limits), record.task_id
            compared += 1
    assert compared == len(ids)
    # every outcome's record came from memory (none was read back from the store)
    assert b1.counters["task_outcomes_read_back"] == 0 and b2.counters["task_outcomes_read_back"] == 0
