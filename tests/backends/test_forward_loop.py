"""master_slave: two nodes that each hold the other the memory primary (a moment of an election) do not hand a
write back and forth without end. On every medium: the write takes at most ``FORWARD_HOPS_MAX`` forwards, the hop
past them fails (counted, a Problem), and the write's retries put it through once the nodes agree again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mesh_core.node.primary import FORWARD_HOPS_MAX, FORWARD_WRITE

from .conftest import STORE_BACKENDS, Cluster, eventually


async def _is(value: Any) -> Any:
    return value


def _hold(mesh: Any, primary_id: str) -> Callable[[], None]:
    """Make ``mesh`` hold ``primary_id`` the primary, whatever its election says; returns the undo."""
    primary = mesh.services.primary

    async def current() -> str:
        return primary_id
    primary.current = current
    return lambda: delattr(primary, "current")


async def test_two_nodes_that_hold_each_other_primary_forward_a_write_a_bounded_number_of_times(
        cluster: Cluster) -> None:
    # The write waits forwarded_write_wait_s (6 node timeouts) from its first forward, split included: at 2 s a
    # loaded machine's slower split (a fresh-clone CI run took the 6 s of a 1 s timeout) leaves its retries room.
    ms = {"memory_sync": {"strategy": "master_slave", "conflict_resolution_strategy": "latest_wins"},
          "node_timeout_seconds": 2.0}
    a = await cluster.node("a", **ms)
    b = await cluster.node("b", **ms)
    await eventually(lambda: _is(all(any(n.node_id == other.node_id and FORWARD_WRITE in n.task_types
                                         for n in mesh.services.members.workers())
                                     for mesh, other in ((a, b), (b, a)))), timeout=10)
    undo = [_hold(a, b.node_id), _hold(b, a.node_id)]
    write = asyncio.ensure_future(a.sync_memory_item("fact", "split", key="looped"))
    counters = (a.services.ctx.counters, b.services.ctx.counters)
    await eventually(lambda: _is(sum(c["memory_forwards_refused"] for c in counters) >= 1), timeout=10)
    await asyncio.sleep(0.5)  # a storm makes dozens of tasks in this time (129 in a 6 s wait on the old code)
    forwards = {t.task_id for t in await a.list_tasks(limit=1000) if t.task_type == FORWARD_WRITE}
    assert len(forwards) <= FORWARD_HOPS_MAX, forwards  # a's write to b, b's hop back: the next hop fails
    assert not write.done()
    for u in undo:
        u()
    await asyncio.wait_for(write, a.services.ctx.timings.forwarded_write_wait_s)  # retried: through once agreed
    assert await a.recall("looped") == "split"


# On the media with a shared store the record b heartbeats is the one a reads. On gRPC, a held b's full record
# again within the half second (not explained yet), so there this test would not show the wait: the race is
# covered there by tests/cluster/test_grpc.py, whose three processes write as soon as a primary is elected.
@pytest.mark.parametrize("cluster", STORE_BACKENDS, indirect=True)
async def test_a_write_waits_for_a_new_primary_s_record_to_list_the_forwarded_write_handler(cluster: Cluster) -> None:
    # A node that just started is active with the record it joined with, which lists no task types until its first
    # heartbeat as a worker. A write forwarded to such a primary in that moment failed at once ("every node that can
    # run '_memory_write' is full", seen in a fresh-clone CI run); now it waits for the record, then goes through.
    from dataclasses import replace

    ms = {"memory_sync": {"strategy": "master_slave", "conflict_resolution_strategy": "latest_wins"}}
    a = await cluster.node("a", **ms)
    b = await cluster.node("b", **ms)
    _hold(a, b.node_id)
    _hold(b, b.node_id)
    members = b.services.members
    as_joined = members.local_info
    members.local_info = lambda: replace(as_joined(), task_types=frozenset())  # b's heartbeats list no handler
    await eventually(lambda: _is(any(n.node_id == b.node_id and not n.task_types
                                     for n in a.services.members.workers())), timeout=10)
    write = asyncio.ensure_future(a.sync_memory_item("fact", "early", key="first-write"))
    await asyncio.sleep(0.5)
    assert not write.done()  # it waits: it did not fail at once
    del members.local_info  # b's next heartbeat lists its handlers
    await asyncio.wait_for(write, a.services.ctx.timings.primary_wait_s)
    assert await a.recall("first-write") == "early"
