"""A node applies what it pulls as one batch (``MemoryService.apply_frames``): conflicts opened and closed within
the batch, events only for a subscriber that asked, and a bad frame in the middle refused alone. Its own writes go
in batches too: a call's items, and the concurrent calls of one event-loop pass, as one replica change."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any

import pytest

from mesh_core import AgentMeshManager
from mesh_core.clock import LOGICAL_BITS
from mesh_core.events import ConflictOpened, ConflictResolved, MemoryChanged
from mesh_core.memory.digest import BUCKETS, bucket_of
from mesh_core.memory.resolve import local_write
from mesh_core.model import MemoryItem

from .conftest import STORE_BACKENDS, Cluster


def _write(origin: AgentMeshManager, value: object, seen: list[MemoryItem], key: str = "k") -> MemoryItem:
    draft = MemoryItem("fact", key, value, {}, origin.services.memory.hlc.now(), origin.node_id)
    return local_write(seen, draft, origin.node_id)


async def _quiet(mesh: AgentMeshManager) -> None:
    """Stop the node's own memory loop: only what the test hands it is applied."""
    for loop_task in mesh.services.ctx.loops:
        if loop_task.get_name() == "memory":
            loop_task.cancel()


async def test_a_batch_opens_and_closes_a_conflict_as_its_writes_did_in_turn(cluster: Cluster) -> None:
    a = await cluster.node("a", **{"memory_sync.conflict_resolution_strategy": "manual"})
    b = await cluster.node("b", **{"memory_sync.conflict_resolution_strategy": "manual"})
    c = await cluster.node("c", **{"memory_sync.conflict_resolution_strategy": "manual"})
    await _quiet(c)
    one, two = _write(a, "from a", []), _write(b, "from b", [])  # concurrent: a conflict
    settled = _write(a, "settled", [one, two])  # has seen both: closes it
    events: list[object] = []

    async def watch() -> None:
        async for event in c.subscribe():
            events.append(event)
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.01)
    memory = c.services.memory
    frames = [memory.frame_of(one), b"MF\x01\x00garbage", memory.frame_of(two), memory.frame_of(one),
              memory.frame_of(settled)]
    assert memory.apply_frames(frames) == 3  # the duplicate changes nothing, the garbage is refused
    await asyncio.sleep(0.05)
    watcher.cancel()
    assert c.counters["corrupt_memory_frames"] == 1
    assert (await c.recall_item("k")).value == "settled"
    assert memory.conflicts() == []
    kinds = [type(e).__name__ for e in events if isinstance(e, MemoryChanged | ConflictOpened | ConflictResolved)]
    assert kinds.count("MemoryChanged") == 3 and kinds.count("ConflictOpened") == 1
    assert kinds.count("ConflictResolved") == 1
    closed = [r for r in memory.store.conflicts(include_closed=True)]
    assert [(r["choice"], r["closed_at"] is not None) for r in closed] == [("superseded", True)]
    filed = [i.value for i in sorted([one, two], key=lambda i: (i.hlc, i.origin))]  # in stored order
    assert [h["value"] for h in memory.store.history("fact", "k")] == filed[::-1]  # newest first


async def test_no_subscriber_for_routine_events_gets_no_per_item_event(cluster: Cluster) -> None:
    a = await cluster.node("a")
    c = await cluster.node("c")
    await _quiet(c)
    published: list[object] = []
    ctx = c.services.ctx
    bus = ctx.events
    original = bus.publish_many  # every event goes through it
    bus.publish_many = lambda events: (published.extend(events), original(events))[1]  # type: ignore[method-assign]
    try:
        frames = [c.services.memory.frame_of(_write(a, i, [], key=f"k{i}")) for i in range(50)]
        assert not ctx.events.wants_routine()
        assert c.services.memory.apply_frames(frames) == 50
    finally:
        bus.publish_many = original  # type: ignore[method-assign]
    assert not [e for e in published if isinstance(e, MemoryChanged)]
    assert c.services.memory.count() == 50


async def test_entries_held_in_the_frontier_are_left_out_before_the_fold_and_others_applied(cluster: Cluster) -> None:
    """An anti-entropy round hands over what its replica held at its start (``held``): those entries change
    nothing and are not folded, a newer write to the same key and a new key are applied, garbage is counted."""
    a = await cluster.node("a")
    c = await cluster.node("c")
    await _quiet(c)
    memory = c.services.memory
    first = _write(a, 1, [])
    other = _write(a, "x", [], key="other")
    assert memory.apply_frames([memory.frame_of(first), memory.frame_of(other)]) == 2
    held = set(memory.store.frontier_marks())
    assert ("fact", "k", a.node_id, first.hlc) in held
    newer = _write(a, 2, [first])
    fresh = _write(a, "new", [], key="fresh")
    folded: list[MemoryItem] = []
    fold = memory._fold
    memory._fold = lambda items: (folded.extend(items), fold(items))[1]  # type: ignore[method-assign]
    frames = [memory.frame_of(first), memory.frame_of(other), b"MF\x01\x00garbage", memory.frame_of(newer),
              memory.frame_of(fresh)]
    assert memory.apply_frames(frames, held=held) == 2
    assert [i.value for i in folded] == [2, "new"]
    assert c.counters["corrupt_memory_frames"] == 1
    assert (await c.recall_item("k")).value == 2 and (await c.recall_item("fresh")).value == "new"
    assert memory.apply_frames([memory.frame_of(first)]) == 0  # held or not, the same outcome: ignored


async def test_folded_names_only_frames_folded_again_for_nothing(cluster: Cluster) -> None:
    """``folded`` (what an anti-entropy round need not read again) holds a trusted frame once folded, held or not,
    and never a refused one nor one whose stamp was clamped (re-reading those counts them again, as before)."""
    a = await cluster.node("a")
    c = await cluster.node("c")
    await _quiet(c)
    memory = c.services.memory
    one, two = _write(a, 1, []), _write(a, 2, [], key="other")
    ahead = replace(_write(a, 3, [], key="ahead"), hlc=(int(time.time() * 1000) + 3_600_000) << LOGICAL_BITS)
    garbage = b"MF\x01\x00garbage"
    frames = [memory.frame_of(one), garbage, memory.frame_of(ahead)]
    folded: dict[int, set[int]] = {}
    assert memory.apply_frames(frames, folded=folded) == 2
    assert folded == {bucket_of("fact", "k"): {hash(frames[0])}}
    assert c.counters["corrupt_memory_frames"] == 1 and c.counters["clock_skew_clamped"] == 1
    again: dict[int, set[int]] = {}
    held = set(memory.store.frontier_marks())
    assert memory.apply_frames([frames[0], memory.frame_of(two)], held=held, folded=again) == 1
    assert {h for marks in again.values() for h in marks} == {hash(frames[0]), hash(memory.frame_of(two))}
    assert again[bucket_of("fact", "other")] >= {hash(memory.frame_of(two))}


async def test_a_version_vector_counting_with_a_bool_is_refused_alone(cluster: Cluster) -> None:
    """A frame whose vector holds ``true`` for a count is corrupt: refused and counted at the edge, the rest of its
    batch applied (a vector comparison refuses a bool: folded, it failed the whole batch, read again each round)."""
    a = await cluster.node("a")
    c = await cluster.node("c")
    await _quiet(c)
    memory = c.services.memory
    first = _write(a, 1, [])
    assert memory.apply_frames([memory.frame_of(first)]) == 1
    bad = replace(_write(a, 2, [first]), vv={a.node_id: True})
    fresh = _write(a, "new", [], key="fresh")
    assert memory.apply_frames([memory.frame_of(bad), memory.frame_of(fresh)]) == 1
    assert c.counters["corrupt_memory_frames"] == 1
    assert (await c.recall_item("k")).value == 1 and (await c.recall_item("fresh")).value == "new"


async def test_a_batch_of_local_writes_settles_each_keys_conflict_and_leaves_other_types_alone(
        cluster: Cluster) -> None:
    """``sync_memory_items`` stores its writes as one change of the replica: each key's open conflict closes as a
    lone write's would, and a key of the same name under another type keeps its value and its conflict."""
    w1 = await cluster.node("w1", **{"memory_sync.conflict_resolution_strategy": "manual"})
    await _quiet(w1)
    memory = w1.services.memory
    for memory_type in ("fact", "note"):
        for key in ("a", "b"):  # two other writers, concurrent on every key: a conflict each
            memory.apply_frames([memory.frame_of(MemoryItem(memory_type, key, f"{origin[0]} {memory_type} {key}",
                                                            {origin: 1}, memory.hlc.now(), origin))
                                 for origin in ("a" * 32, "b" * 32)])
    assert sorted((c.memory_type, c.key) for c in w1.conflicts()) == [("fact", "a"), ("fact", "b"), ("note", "a"),
                                                                       ("note", "b")]
    settled: list[str] = []

    async def watch() -> None:
        async for event in w1.subscribe():
            if isinstance(event, ConflictResolved):
                settled.append(event.key)
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await w1.sync_memory_items("fact", {"a": "settled a", "b": "settled b"})
    await asyncio.sleep(0.05)
    watcher.cancel()
    assert sorted(settled) == ["a", "b"]
    assert sorted((c.memory_type, c.key) for c in w1.conflicts()) == [("note", "a"), ("note", "b")]
    for key in ("a", "b"):
        fact = await w1.recall_item(key, "fact")
        assert fact.value == f"settled {key}" and not fact.siblings
        note = await w1.recall_item(key, "note")
        assert len(note.siblings) == 2  # still in conflict, untouched
        filed = memory.store.history("fact", key)  # the values it replaced, in the replica's history
        assert sorted(h["value"] for h in filed) == [f"a fact {key}", f"b fact {key}"]


async def test_concurrent_local_writes_share_one_publish_and_a_bad_one_fails_alone(cluster: Cluster) -> None:
    """Local writes made in one event-loop pass are stored in one replica change and published together; one that
    cannot be written (too large, not encodable) fails for its caller alone, before it joins the others."""
    a = await cluster.node("a", **{"memory_sync.max_item_bytes": 4096})
    memory = a.services.memory
    publish = memory.log.publish_memory
    published: list[int] = []

    async def counting(origin: str, entries: Any, broadcast: bool = True) -> Any:
        published.append(len(entries))
        return await publish(origin, entries, broadcast=broadcast)

    memory.log.publish_memory = counting  # type: ignore[method-assign]
    writes = [a.sync_memory_item("fact", {"n": n}, key=f"k{n}") for n in range(20)]
    writes += [a.sync_memory_item("fact", os.urandom(10_000), key="too-large"),
               a.sync_memory_item("fact", object(), key="not-encodable")]
    done = await asyncio.gather(*writes, return_exceptions=True)
    assert done[:20] == [f"k{n}" for n in range(20)]
    assert isinstance(done[20], Exception) and "max_item_bytes" in str(done[20])
    assert isinstance(done[21], Exception) and "cannot be encoded" in str(done[21])
    assert sum(published) == 20 and len(published) < 20  # shared publishes (one, when the loop is not busy)
    for n in range(20):
        assert await a.recall(f"k{n}") == {"n": n}
    assert memory.store.siblings("fact", "too-large") == [] and memory.store.siblings("fact", "not-encodable") == []


@pytest.mark.parametrize("cluster", STORE_BACKENDS, indirect=True)
async def test_anti_entropy_decodes_only_what_the_log_did_not_bring(cluster: Cluster) -> None:
    """Under steady writes every bucket differs from a peer's digests (a round old), so a round reads whole buckets:
    what this node's log reads folded already is skipped by its frame's hash, not decoded and folded again (a round
    over 25,000 items took 0.35-0.8 s of CPU per node, all nodes at once, and held their log reading up)."""
    a = await cluster.node("a")
    b = await cluster.node("b")
    c = await cluster.node("c")
    await _quiet(b)  # b keeps its replica as it is: its digests differ from c's in every bucket written below
    await _quiet(c)  # c reads the log when told, and runs no anti-entropy round of its own meanwhile
    for i in range(200):
        await a.sync_memory_item("fact", i, key=f"k{i}")
    await c.services.sync.sync_now()
    assert c.services.memory.count() == 200
    # b's digests, as c never had them (a peer's digest c had lately would spare it reading the bucket at all)
    await b.services.ctx.backend.put_digests(b.node_id, {bucket: "f" * 16 for bucket in range(BUCKETS)})
    memory = c.services.memory
    decoded = []
    item_of = memory._item_of

    def counted(frame: bytes, **kw: Any) -> Any:
        decoded.append(frame)
        return item_of(frame, **kw)
    memory._item_of = counted  # type: ignore[method-assign]
    round_ = await c.services.sync.anti_entropy()
    assert round_["buckets"] > 32 and round_["applied"] == 0, round_
    assert decoded == []  # before: all 200, each decoded and folded for nothing
