"""Writer backpressure (``memory_sync.max_lag_items``): a write waits while the slowest active replica is that
many of the writer's items behind, is released when it catches up, fails clearly when it waits too long, and a
dead replica holds no one back. On every medium, with a replica whose memory loop is really stalled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from mesh_core import AgentMeshManager
from mesh_core.errors import BackendUnavailable, MemoryNotFound, ReplicasBehind
from mesh_core.model import NodeStatus

from .conftest import Cluster, eventually

LAG = 20


@contextlib.asynccontextmanager
async def stalled(mesh: AgentMeshManager) -> AsyncIterator[None]:
    """``mesh`` stays active (it heartbeats) but applies no memory entry: its log reader waits on its lock."""
    reading = mesh.services.sync._reading
    await reading.acquire()
    try:
        yield
    finally:
        reading.release()


async def pair(cluster: Cluster, wait: float) -> tuple[AgentMeshManager, AgentMeshManager]:
    writer = await cluster.node("w", **{"memory_sync.max_lag_items": LAG, "memory_sync.max_lag_wait_seconds": wait})
    replica = await cluster.node("r")

    async def both_active() -> bool:
        return writer.services.members.status_of(replica.node_id) is NodeStatus.ACTIVE
    await eventually(both_active)
    return writer, replica


async def write(mesh: AgentMeshManager, first: int, n: int) -> None:
    for i in range(first, first + n):
        await mesh.sync_memory_item("fact", i, key=f"k{i}")


async def test_a_stalled_replica_holds_writers_back_until_it_applies(cluster: Cluster) -> None:
    writer, replica = await pair(cluster, wait=60.0)
    async with stalled(replica):
        await write(writer, 0, LAG + 1)  # over the limit now: the next write waits
        held = asyncio.create_task(write(writer, LAG + 1, 5))
        await eventually(lambda: _async(writer.counters["memory_writes_held_back"] >= 1))
        await asyncio.sleep(0.5)
        assert not held.done()
    await asyncio.wait_for(held, 30)  # the replica applies and acks: the writer goes on
    assert writer.counters["memory_writes_held_too_long"] == 0
    await eventually(lambda: _async(replica.services.memory.count() == LAG + 6))


async def test_a_write_held_too_long_fails_and_names_the_replica(cluster: Cluster) -> None:
    writer, replica = await pair(cluster, wait=0.5)
    async with stalled(replica):
        await write(writer, 0, LAG + 1)
        with pytest.raises(ReplicasBehind, match="r") as refused:
            await writer.sync_memory_item("fact", "late", key="late")
        assert refused.value.behind == ["r"]
        assert writer.counters["memory_writes_held_too_long"] == 1
    await eventually(lambda: _async(replica.services.memory.count() == LAG + 1))
    with pytest.raises(MemoryNotFound):
        await replica.recall("late")  # the refused write was not made


async def test_a_dead_replica_holds_no_one_back(cluster: Cluster) -> None:
    writer, replica = await pair(cluster, wait=60.0)
    async with stalled(replica):
        await write(writer, 0, LAG + 1)
        held = asyncio.create_task(write(writer, LAG + 1, 3))
        await eventually(lambda: _async(writer.counters["memory_writes_held_back"] >= 1))
        assert not held.done()
        await cluster.crash(replica)
    await asyncio.wait_for(held, 30)  # declared dead (node_timeout_seconds): it no longer counts
    assert writer.services.members.status_of(replica.node_id) is not NodeStatus.ACTIVE


async def _async(value: object) -> object:
    return value


async def test_the_lag_behind_a_stalled_replica_is_a_metric_and_goes_back_to_zero(cluster: Cluster) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mesh_core.metrics import NodeMetrics

    writer, replica = await pair(cluster, wait=60.0)
    metrics = NodeMetrics(writer)

    async def scraped() -> dict[str, float]:
        text = metrics.render(await metrics.gather()).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name.startswith("mesh_memory_sync_lag")}
    async with stalled(replica):
        await write(writer, 0, 5)
        await asyncio.sleep(0.2)
        lag = await writer.services.memory.backpressure.lag()
        assert lag is not None and lag.items == 5 and lag.behind == ("r",) and lag.oldest_seconds >= 0.2, lag
        shown = await scraped()
        assert shown["mesh_memory_sync_lag_items"] == 5 and shown["mesh_memory_sync_lag_seconds"] >= 0.2, shown

    async def caught_up() -> bool:
        return (await scraped()) == {"mesh_memory_sync_lag_items": 0, "mesh_memory_sync_lag_seconds": 0}
    await eventually(caught_up, timeout=10)


async def test_one_look_at_the_acks_releases_every_held_write(cluster: Cluster) -> None:
    """Writes held together wait for one read of the acks, not one each. On a busy node (each pass of its event loop
    25 ms here) a read each in turn, as the held writes got the lock one pass after another, kept the last of 64
    writes waiting for all the others' reads (120-370 ms in ``bench memory``'s sustained run)."""
    writer, replica = await pair(cluster, wait=60.0)
    log = writer.services.ctx.backend
    read_acks = log.memory_acks
    backpressure = writer.services.memory.backpressure
    needless = []  # reads made while this node's writes were within the limit already

    async def counted_acks() -> dict[str, object]:
        needless.append(backpressure._unapplied_items <= LAG)
        return await read_acks()

    async def busy_loop() -> None:
        while True:
            time.sleep(0.025)  # noqa: ASYNC251 - the point: a loop pass that takes a while
            await asyncio.sleep(0)
    log.memory_acks = counted_acks  # type: ignore[method-assign]
    async with stalled(replica):
        await write(writer, 0, LAG + 1)
        held = [asyncio.create_task(write(writer, 100 + i, 1)) for i in range(8)]
        await eventually(lambda: _async(writer.counters["memory_writes_held_back"] >= 8))
        assert not any(task.done() for task in held)
        needless.clear()
        busy = asyncio.create_task(busy_loop())
    try:
        await asyncio.wait_for(asyncio.gather(*held), 30)
    finally:
        busy.cancel()
    assert needless.count(True) <= 1, needless  # the read that released them (each waiter read again before)


async def test_a_look_ahead_that_fails_leaves_the_write_to_the_medium(cluster: Cluster) -> None:
    """Past half the limit a write reads the acks ahead of time; when that read fails, the write goes on and meets
    the medium itself (stored here, or queued in the outbox while the medium is away), not a look it did not need."""
    writer, replica = await pair(cluster, wait=60.0)
    async with stalled(replica):
        await write(writer, 0, LAG // 2 + 1)

        async def refused() -> dict[str, object]:
            raise BackendUnavailable("memory acks: the medium did not answer")
        writer.services.ctx.backend.memory_acks = refused  # type: ignore[method-assign]
        await writer.sync_memory_item("fact", "still", key="still")
    assert await writer.recall("still") == "still"
