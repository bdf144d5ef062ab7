"""The api_key and the allowlist on the memory ingest paths (issue #11, defect 5), on every backend: entries
written raw into the medium under another node's id are never applied, whichever path brings them."""

from __future__ import annotations

import socket
from typing import Any

from mesh_core import AgentMeshManager, codec
from mesh_core.memory.store import item_to_wire
from mesh_core.model import MemoryItem
from mesh_core.security import ORIGIN_HOST, ORIGIN_NAME, memory_parts, sign

from .conftest import Cluster, eventually

KEY = "mesh-secret"
KEYED = {"security": {"api_key": KEY}}


async def _true(value: bool) -> bool:
    return value


def _holds(mesh: AgentMeshManager, key: str) -> bool:
    return bool(mesh.services.memory.store.siblings("fact", key))


def _frame(origin: AgentMeshManager, key: str, value: Any, *, api_key: str | None, **wire_changes: Any) -> bytes:
    """A memory frame naming ``origin`` as its writer, signed with ``api_key`` (None: unsigned), then changed."""
    item = MemoryItem("fact", key, value, {origin.node_id: 99}, 10**18, origin.node_id, 5, False)
    wire = item_to_wire(item)
    wire[ORIGIN_NAME], wire[ORIGIN_HOST] = origin.name, socket.gethostname()
    if api_key:
        wire["s"] = sign(api_key, *memory_parts(wire))
    wire.update(wire_changes)
    return codec.encode(wire)


async def test_forged_memory_entries_are_refused_on_every_path(cluster: Cluster) -> None:
    w1 = await cluster.node("w1", sync_interval_seconds=0.5, **KEYED)
    w2 = await cluster.node("w2", sync_interval_seconds=0.5, **KEYED)
    await w1.sync_memory_item("fact", "genuine", key="real")
    await eventually(lambda: _true(_holds(w2, "real")))
    genuine = _frame(w1, "copied", "the real value", api_key=KEY)
    forged = {
        "unsigned": _frame(w1, "unsigned", "forged", api_key=None),
        "wrong-key": _frame(w1, "wrong-key", "forged", api_key="guessed-key"),
        # w1's valid signature carried over onto another value, and onto another claimed origin
        "copied": _frame(w1, "copied", "forged", api_key=None, s=codec.decode(genuine)["s"]),
        "origin": _frame(w1, "origin", "forged", api_key=KEY, o=w2.node_id),
        "renamed": _frame(w1, "renamed", "forged", api_key=KEY, **{ORIGIN_NAME: "w9"}),
    }
    medium = w1.services.ctx.backend  # written raw into the shared medium, as w1, with no node's say-so
    await medium.publish_memory(w1.node_id, [("fact", key, frame) for key, frame in forged.items()])
    # w2 reads them from the log (the one claiming to be w2's own it ignores); a fresh node reads every key's
    # newest entry (bootstrap).
    await eventually(lambda: _true(w2.counters["refused_memory"] >= len(forged) - 1), timeout=10)
    w3 = await cluster.node("w3", **KEYED)
    await eventually(lambda: _true(_holds(w3, "real")), timeout=10)
    await eventually(lambda: _true(w3.counters["refused_memory"] >= len(forged)), timeout=10)
    for mesh in (w1, w2, w3):
        assert not any(_holds(mesh, key) for key in forged), mesh.name
    assert (await w2.recall("real")) == (await w3.recall("real")) == "genuine"


async def test_an_allowlisted_mesh_refuses_an_outsiders_memory_on_every_path(cluster: Cluster) -> None:
    guarded = {"security": {"allowlist": ["trusted-*"]}, "sync_interval_seconds": 0.5}
    t1 = await cluster.node("trusted-1", **guarded)
    outsider = await cluster.node("outsider", sync_interval_seconds=0.5)  # re-sends its writes every round
    await t1.sync_memory_item("fact", "inside", key="real")
    await eventually(lambda: _true(_holds(outsider, "real")))
    await outsider.sync_memory_item("fact", "outside", key="theirs")
    await outsider.forget("real")
    await eventually(lambda: _true(t1.counters["refused_memory"] >= 4), timeout=10)  # log, then anti-entropy
    t2 = await cluster.node("trusted-2", **guarded)  # bootstraps from the newest entries
    await eventually(lambda: _true(_holds(t2, "real") and t2.counters["refused_memory"] >= 2), timeout=10)
    for mesh in (t1, t2):
        assert not _holds(mesh, "theirs") and (await mesh.recall("real")) == "inside"
    assert t1.counters["refused_nodes"] == 1  # the outsider's record; logged once however often it is read
