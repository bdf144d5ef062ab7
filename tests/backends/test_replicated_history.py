"""Replicated history on every backend (issue 11, defect 12): the medium keeps each key's versions through
compaction, bounded per key, and every replica and client names and numbers them the same."""

from __future__ import annotations

from mesh_core.backends.contracts import MEMORY_VERSIONS_KEPT
from mesh_core.errors import MemoryNotFound

from .conftest import Cluster, eventually


async def test_history_survives_compaction_and_is_the_same_for_a_client(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    await cluster.wait_active(a, ["a", "b"])
    for value in ("one", "two", "three"):
        await a.sync_memory_item("fact", value, key="h")
    await eventually(lambda: _value_is(b, "h", "three"))
    # Compaction drops the log entries both replicas applied; the versions stay. The sweeping node compacts by
    # itself every few seconds: the log counts as compacted once this call or that round dropped the entries (a
    # call after the round drops nothing). On grpc each node compacts its own log, so a's must have been.
    sharing = [a] if cluster.backend == "grpc" else [a, b]

    async def compacted() -> bool:
        await a.compact_memory()
        return sum(m.services.ctx.counters["memory_log_compacted"] for m in sharing) > 0
    await eventually(compacted, timeout=10)
    client = await cluster.client()
    views = [await mesh.history("h") for mesh in (a, b, client)]
    assert [h["value"] for h in views[0]] == ["two", "one"]
    assert views[0] == views[1] == views[2]


async def test_the_medium_keeps_a_bounded_number_of_versions_per_key(cluster: Cluster) -> None:
    a = await cluster.node("a", memory_sync={"history_size": MEMORY_VERSIONS_KEPT + 50})
    for i in range(MEMORY_VERSIONS_KEPT + 20):
        await a.sync_memory_item("fact", i, key="many")
    await a.sync_memory_item("fact", "other", key="few")
    history = await a.history("many")
    assert len(history) == MEMORY_VERSIONS_KEPT - 1  # the rest of the kept versions are earlier ones
    assert history[0]["value"] == MEMORY_VERSIONS_KEPT + 18 and history[-1]["value"] == 20
    assert await a.history("few") == []


async def _value_is(mesh, key: str, value: object) -> bool:
    try:
        return bool((await mesh.recall_item(key)).value == value)
    except MemoryNotFound:
        return False
