"""Convergence of replicated memory under every conflict strategy (mesh_core/memory/resolve.py).

A simulated mesh of a few nodes produces one key's write history: each node
writes from its own replica state (``local_write``, so vectors are real) after
random partial syncs from other nodes. Then fresh replicas are fed all those
writes, each in its own random order with duplicates, and must end identical —
the same visible siblings (values *and* vectors), the same frontier, the same
conflict flags — and equal to ``resolve`` over the whole write set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from hypothesis import given
from hypothesis import strategies as st

from mesh_core.clock import VersionVector
from mesh_core.memory.digest import differing, digests
from mesh_core.memory.resolve import (
    IGNORED,
    STRATEGIES,
    Ranking,
    Resolution,
    apply_remote,
    canonical,
    frontier,
    local_write,
    resolve,
)
from mesh_core.model import MemoryItem

NODE_IDS = ("n0", "n1", "n2", "n3")
RANKING = Ranking({"n0": 1, "n1": 3, "n2": 3})  # n3 unknown → rank 0; n1 and n2 tie


# --- the simulated mesh that produces the writes ----------------------------------------

@dataclass
class SimNode:
    node_id: str
    state: tuple[MemoryItem, ...] = ()  # the frontier of originals this node has
    known: tuple[MemoryItem, ...] = ()  # originals it can forward

    def receive(self, item: MemoryItem) -> None:
        self.state = frontier([*self.state, item])
        if item not in self.known:
            self.known = (*self.known, item)


def compatible_value(node: int, counter: int, rnd: random.Random) -> object:
    """Writes that never disagree: own field under "by", a tag subset, shared constants."""
    return {"by": {NODE_IDS[node]: counter}, "tags": rnd.sample(["x", "y", "z", "w"], rnd.randint(0, 3)),
            "same": {"k": 1}, "log": [{"v": 1}] * rnd.randint(0, 2)}


def clashing_value(rnd: random.Random) -> object:
    """Writes that often disagree (and sometimes happen to merge)."""
    return rnd.choice([
        rnd.randint(0, 2),
        {"a": rnd.randint(0, 1)},
        {"b": [rnd.randint(0, 2)]},
        {"a": rnd.randint(0, 1), "c": {"d": rnd.choice(["p", "q"])}},
        [[rnd.randint(0, 1)]],
        None,
    ])


# (is a write, node, other node for a sync, seed)
op = st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**16))


def simulate(ops: list[tuple[bool, int, int, int]], n_nodes: int, compatible: bool, skew_hlc: bool,
             tombstones: bool) -> list[MemoryItem]:
    nodes = [SimNode(NODE_IDS[i]) for i in range(n_nodes)]
    writes: list[MemoryItem] = []
    for step, (is_write, who, other, seed) in enumerate(ops):
        rnd = random.Random(seed)
        if is_write or step == 0:
            node = nodes[who % n_nodes]
            value = compatible_value(nodes.index(node), len(writes), rnd) if compatible else clashing_value(rnd)
            draft = MemoryItem("fact", "k", value, {}, rnd.randint(0, 30), node.node_id, rnd.randint(1, 3),
                               tombstone=tombstones and rnd.random() < 0.2)
            item = local_write(node.state, draft, node.node_id)
            if skew_hlc:  # a clock that ignores causality: convergence must not depend on the stamps
                item = replace(item, hlc=rnd.randint(0, 30))
            node.receive(item)
            writes.append(item)
        else:
            source, target = nodes[who % n_nodes], nodes[other % n_nodes]
            for item in rnd.sample(source.known, rnd.randint(0, len(source.known))):
                target.receive(item)
    return writes


# --- replicas that fold the writes, as the manager does ------------------------------------

class Replica:
    def __init__(self, strategy: str, keep_sources: bool = True) -> None:
        self.strategy = strategy
        self.keep_sources = keep_sources
        self.visible: tuple[MemoryItem, ...] = ()
        self.sources: tuple[MemoryItem, ...] = ()
        self.last: Resolution | None = None

    def apply(self, item: MemoryItem) -> Resolution:
        result = apply_remote(self.visible, item, self.strategy, ranking=RANKING,
                              sources=self.sources if self.keep_sources else None)
        if result.outcome != IGNORED:
            self.visible, self.sources, self.last = result.siblings, result.sources, result
        return result

    def snapshot(self) -> tuple[object, ...]:
        last = self.last
        return (tuple((canonical(i.value), canonical(i.vv), i.hlc, i.origin, i.priority, i.tombstone)
                      for i in self.visible),
                tuple(canonical(i.vv) for i in self.sources) if self.keep_sources else (),
                (last.conflict, last.disagreements, last.warning) if last and len(self.sources) > 1 else None)


def feed(replica: Replica, writes: list[MemoryItem], seed: int) -> None:
    rnd = random.Random(seed)
    stream = writes + rnd.choices(writes, k=rnd.randint(0, len(writes)))  # duplicates
    rnd.shuffle(stream)
    applied: list[MemoryItem] = []
    writers = set()
    for item in stream:
        replica.apply(item)
        applied.append(item)
        writers.add(item.origin)
        # sibling sets stay minimal: an antichain, one per writer at most
        for sibling_set in (replica.visible, replica.sources if replica.keep_sources else ()):
            assert len({s.origin for s in sibling_set}) == len(sibling_set) <= len(writers)
            for a in sibling_set:
                for b in sibling_set:
                    assert a is b or not VersionVector(a.vv).dominates(b.vv)
        # every write seen is covered by the state's merged vector
        merged = VersionVector()
        for s in replica.visible:
            merged = merged.merge(s.vv)
        assert merged.dominates(item.vv)


def expected(writes: list[MemoryItem], strategy: str) -> tuple[object, ...]:
    oracle = Replica(strategy)
    view = resolve(writes, strategy, ranking=RANKING)
    oracle.visible, oracle.sources = view.siblings, view.sources
    oracle.last = view
    return oracle.snapshot()


@given(ops=st.lists(op, min_size=1, max_size=14), n_nodes=st.integers(2, 4), compatible=st.booleans(),
       skew_hlc=st.booleans(), tombstones=st.booleans(), seeds=st.lists(st.integers(0, 2**32), min_size=3,
                                                                        max_size=3))
def test_three_replicas_converge_under_every_strategy(ops, n_nodes, compatible, skew_hlc, tombstones, seeds):
    writes = simulate(ops, n_nodes, compatible, skew_hlc, tombstones)
    if not writes:
        return
    for strategy in STRATEGIES:
        replicas = [Replica(strategy) for _ in seeds]
        for replica, seed in zip(replicas, seeds, strict=True):
            feed(replica, writes, seed)
        want = expected(writes, strategy)
        assert [r.snapshot() for r in replicas] == [want] * len(replicas), strategy
        if strategy == "merge_compatible" and compatible and not tombstones:
            assert len(replicas[0].visible) == 1 and not replicas[0].last.conflict  # type: ignore[union-attr]
        if strategy in ("latest_wins", "source_priority") or (strategy == "merge_compatible" and compatible
                                                               and not tombstones):
            assert len(replicas[0].visible) == 1
            top = VersionVector()
            for w in writes:
                top = top.merge(w.vv)
            assert replicas[0].visible[0].vv == top.to_dict()  # dominates every write


@given(ops=st.lists(op, min_size=1, max_size=10), n_nodes=st.integers(2, 4), tombstones=st.booleans(),
       seeds=st.lists(st.integers(0, 2**32), min_size=3, max_size=3))
def test_visible_siblings_alone_converge_for_lww_manual_and_version_vector(ops, n_nodes, tombstones, seeds):
    """The manager as it stands keeps only the visible siblings: exact for these three (causal stamps)."""
    writes = simulate(ops, n_nodes, compatible=False, skew_hlc=False, tombstones=tombstones)
    if not writes:
        return
    for strategy in ("latest_wins", "manual", "version_vector"):
        replicas = [Replica(strategy, keep_sources=False) for _ in seeds]
        for replica, seed in zip(replicas, seeds, strict=True):
            feed(replica, writes, seed)
        want = resolve(writes, strategy, ranking=RANKING).siblings
        for replica in replicas:
            assert [(canonical(i.value), i.vv, i.hlc, i.origin) for i in replica.visible] == \
                   [(canonical(i.value), i.vv, i.hlc, i.origin) for i in want], strategy


def test_merging_a_derived_item_with_a_later_write_would_diverge_which_is_why_sources_are_kept():
    """A ∥ B merged; C has seen A only and changed A's field. Truth: merge(B, C)."""
    a = MemoryItem("fact", "k", {"age": 30}, {"a": 1}, 1, "a")
    b = MemoryItem("fact", "k", {"name": "Bo"}, {"b": 1}, 2, "b")
    c = MemoryItem("fact", "k", {"age": 31}, {"a": 2}, 3, "a")
    truth = resolve([a, b, c], "merge_compatible")
    assert truth.siblings[0].value == {"age": 31, "name": "Bo"}
    for order in ([a, b, c], [c, b, a], [b, c, a], [a, c, b]):
        with_sources = Replica("merge_compatible")
        for item in order:
            with_sources.apply(item)
        assert with_sources.visible == truth.siblings
    without = Replica("merge_compatible", keep_sources=False)
    for item in (a, b, c):
        without.apply(item)
    assert without.last is not None and without.last.conflict  # {"age": 30} (from A via M) vs 31: a false conflict


# --- drops repaired by anti-entropy -----------------------------------------------------------

def _marks(replica: Replica) -> list[tuple[str, str, str, int]]:
    return [(s.memory_type, s.key, s.origin, s.hlc) for s in replica.sources]


@given(ops=st.lists(op, min_size=1, max_size=12), n_nodes=st.integers(2, 4), compatible=st.booleans(),
       tombstones=st.booleans(), seed=st.integers(0, 2**32))
def test_replicas_that_dropped_writes_converge_after_anti_entropy(ops, n_nodes, compatible, tombstones, seed):
    """Each write reaches a random non-empty subset of three replicas (the rest dropped it, duplicates too);
    digest comparison finds the differing bucket and exchanging frontiers there makes them identical."""
    writes = simulate(ops, n_nodes, compatible, skew_hlc=False, tombstones=tombstones)
    if not writes:
        return
    rnd = random.Random(seed)
    for strategy in STRATEGIES:
        replicas = [Replica(strategy) for _ in range(3)]
        for item in writes:
            receivers = [r for r in replicas if rnd.random() < 0.5] or [rnd.choice(replicas)]
            for replica in receivers + rnd.sample(receivers, k=rnd.randint(0, len(receivers))):
                replica.apply(item)
        for _ in range(2):  # anti-entropy rounds: every pair compares digests and swaps what differs
            for a in replicas:
                for b in replicas:
                    if a is not b and differing(digests(_marks(a)), digests(_marks(b))):
                        for item in b.sources:
                            a.apply(item)
        want = expected(writes, strategy)
        assert [r.snapshot() for r in replicas] == [want] * 3, strategy
        assert len({tuple(sorted(digests(_marks(r)).items())) for r in replicas}) == 1
