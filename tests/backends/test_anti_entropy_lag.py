"""An anti-entropy round reads only the buckets where a peer may hold something this replica lacks.

Under steady writes every bucket's digest differs from every peer's: each replica is a moment behind another, and
a peer's digests are as old as its last round. A round used to read every such bucket whole (on SQLite 53,000
frames to find a few dozen new ones, 1.2-1.9 CPU-s per node per round; on gRPC each peer also served a Pull of every
bucket). A replica's frontier only moves forward, so a peer whose digest for a bucket is one this replica had
lately holds nothing there it lacks: that bucket is not read for it.
"""

from __future__ import annotations

from typing import Any

from mesh_testing import eventually

from .conftest import Cluster


def _quiet(mesh: Any) -> None:
    for loop_task in mesh.services.ctx.loops:
        if loop_task.get_name() == "memory":
            loop_task.cancel()


async def _holds(mesh: Any, n: int) -> bool:
    return bool(mesh.services.memory.count() == n)


async def test_a_round_reads_no_bucket_a_lagging_peer_holds_nothing_new_in(cluster: Cluster) -> None:
    a = await cluster.node("a", sync_interval_seconds=3600)  # rounds only when the test runs them
    b = await cluster.node("b", sync_interval_seconds=3600)
    client = await cluster.client()
    await eventually(lambda: _holds(a, 0), timeout=5)
    await eventually(lambda: a.status_of(b.node_id) is not None and b.status_of(a.node_id) is not None, timeout=10)
    b.services.memory.store.digests()  # followed from here on, as a running node's are from its first round
    await client.sync_memory_items("fact", {f"k{i}": i for i in range(300)})
    await eventually(lambda: _holds(a, 300), timeout=20)
    await eventually(lambda: _holds(b, 300), timeout=20)
    await a.services.sync.anti_entropy()  # a's digests, published: the state both hold now
    await client.sync_memory_items("fact", {f"m{i}": i for i in range(300)})
    await eventually(lambda: _holds(a, 600), timeout=20)
    await eventually(lambda: _holds(b, 600), timeout=20)

    reads = 0
    log = b.services.ctx.backend
    memory_bucket = log.memory_bucket

    async def counted(bucket: int) -> Any:
        nonlocal reads
        reads += 1
        return await memory_bucket(bucket)
    log.memory_bucket = counted
    # a's digests are b's of a moment ago: they differ in nearly every bucket, and a holds nothing b lacks
    round_ = await b.services.sync.anti_entropy()
    assert round_["buckets"] > 32 and round_["read"] == 0 and reads == 0, (round_, reads)

    # A peer that does hold something this replica lacks is read as ever: b misses 50 writes (its memory loop
    # stopped, its log read only by the round itself), a publishes a state b never had.
    _quiet(b)
    await client.sync_memory_items("fact", {f"n{i}": i for i in range(50)})
    await eventually(lambda: _holds(a, 650), timeout=20)
    await a.services.sync.anti_entropy()
    round_ = await b.services.sync.anti_entropy()
    assert round_["read"] > 0 and reads == round_["read"], (round_, reads)
    assert b.services.memory.count() == 650
