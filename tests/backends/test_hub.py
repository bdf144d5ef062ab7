"""The coordination_hub node type: the preferred sweeper and memory primary (in-process nodes on SQLite).

Node ids are fixed before the nodes start (written into their state folders), so the hub never has the
lowest id: without the preference a general node would sweep and could hold the primary lease.
"""

from __future__ import annotations

import json
from pathlib import Path

from mesh_core import AgentMeshManager

from .conftest import Cluster, eventually

HUB = "coordination_hub"
MS = {"memory_sync": {"strategy": "master_slave"}}


def fix_id(cluster: Cluster, name: str, digit: str) -> str:
    """Give the node ``name`` the id ``digit * 32`` (it rejoins as itself, so the id is kept)."""
    folder = Path(cluster.state) / "nodes" / name
    folder.mkdir(parents=True, exist_ok=True)
    node_id = digit * 32
    (folder / "node.json").write_text(json.dumps({"node_id": node_id, "incarnation": 0}))
    return node_id


def active_names(mesh: AgentMeshManager) -> set[str]:
    return {m.info.name for m in mesh.members() if m.status.value == "active"}


def swept(mesh: AgentMeshManager) -> bool:
    """Whether this node has run the sweep hooks (white-box: the view loop records when it ran each)."""
    return bool(mesh.services.members._swept_at)


async def test_the_hub_sweeps_though_a_general_node_has_a_lower_id(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        ids = {name: fix_id(cluster, name, digit) for name, digit in (("g0", "0"), ("g1", "1"), ("hub", "f"))}
        g0, g1 = await cluster.node("g0"), await cluster.node("g1")
        await eventually(lambda: swept(g0), timeout=5)  # no hub yet: the lowest id sweeps
        hub = await cluster.node("hub", HUB)
        nodes = [g0, g1, hub]
        await eventually(lambda: all(active_names(n) == {"g0", "g1", "hub"} for n in nodes), timeout=5)
        assert [n.services.members.is_sweeper() for n in nodes] == [False, False, True]
        g0.services.members._swept_at.clear()
        await eventually(lambda: swept(hub), timeout=5)
        assert not swept(g0) and not swept(g1)
        await cluster.crash(hub)  # the hub dies: the lowest-id general takes the sweep over
        await eventually(lambda: g0.services.members.is_sweeper() and swept(g0), timeout=5)
        assert ids["g0"] < ids["hub"]
    finally:
        await cluster.close()


async def test_the_hub_becomes_memory_primary_and_the_next_hub_takes_over(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        ids = {name: fix_id(cluster, name, digit) for name, digit in
               (("g0", "0"), ("g1", "1"), ("hub1", "e"), ("hub2", "f"))}
        generals = [await cluster.node("g0", **MS), await cluster.node("g1", **MS)]
        # Before any hub: a general holds the lease.
        await eventually(lambda: all(n.memory_primary in (ids["g0"], ids["g1"]) for n in generals), timeout=5)
        hub1 = await cluster.node("hub1", HUB, **MS)
        hub2 = await cluster.node("hub2", HUB, **MS)
        nodes = [*generals, hub1, hub2]
        # The general hands the role back (its lease lapses), then the lowest-id hub takes it.
        await eventually(lambda: all(n.memory_primary == ids["hub1"] for n in nodes), timeout=8)
        await generals[0].sync_memory_item("fact", "through the hub", key="k1")
        found = hub1.services.memory.store.siblings("fact", "k1")
        assert [s.origin for s in found] == [ids["hub1"]]  # the hub made the write
        await cluster.crash(hub1)
        # The other hub takes over, not the general with the lowest id.
        survivors = [*generals, hub2]
        await eventually(lambda: all(n.memory_primary == ids["hub2"] for n in survivors), timeout=8)
        await generals[1].sync_memory_item("fact", "through hub2", key="k2")
        assert [s.origin for s in hub2.services.memory.store.siblings("fact", "k2")] == [ids["hub2"]]
        for node in survivors:
            await node.sync_now()
            assert await node.recall("k1") == "through the hub"
    finally:
        await cluster.close()
