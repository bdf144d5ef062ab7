"""A batch of incoming memory writes folded at once (``fold_batch`` + ``ReplicaStore.replace_many``) leaves a
replica exactly as applying them one by one in order did (``apply_remote`` + ``replace_siblings`` per item)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_core.memory.resolve import (
    APPLIED,
    IGNORED,
    MERGED,
    STRATEGIES,
    Resolution,
    _identity,
    add_to_frontier,
    apply_remote,
    fold_batch,
    frontier,
    resolve,
)
from mesh_core.memory.store import KeyChange, ReplicaStore
from mesh_core.model import MemoryItem
from tests.unit.test_convergence import RANKING, op, simulate

TYPES = ("fact", "note")


def writes_for(ops: list[tuple[bool, int, int, int]], seed: int, compatible: bool) -> list[MemoryItem]:
    """Real write histories for three keys of two types, interleaved, with duplicates, as a log delivers them."""
    rnd = random.Random(seed)
    out: list[MemoryItem] = []
    for n, (memory_type, key) in enumerate([("fact", "a"), ("fact", "b"), ("note", "a")]):
        history = simulate(ops[n::3] or ops, 4, compatible, skew_hlc=rnd.random() < 0.3, tombstones=True)
        out += [replace(w, memory_type=memory_type, key=key) for w in history]
    rnd.shuffle(out)
    return out + rnd.sample(out, min(len(out), rnd.randint(0, 4)))


def dump(store: ReplicaStore) -> dict[str, list[tuple[Any, ...]]]:
    db = store._db
    return {"items": db.execute("SELECT * FROM items ORDER BY 1, 2, 3, 4").fetchall(),
            "sources": db.execute("SELECT * FROM sources ORDER BY 1, 2, 3, 4").fetchall(),
            # ids are this replica's own: what counts is each key's order
            "history": db.execute("SELECT memory_type, key, origin, hlc, value, vv, strategy FROM history"
                                  " ORDER BY memory_type, key, id").fetchall()}


def one_by_one(store: ReplicaStore, writes: list[MemoryItem], strategy_of: Any) -> list[tuple[str, str]]:
    """How a replica applied writes before batches: read the key, ``apply_remote``, store; per item."""
    outcomes = []
    for item in writes:
        siblings, sources = store.state(item.memory_type, item.key)
        result = apply_remote(siblings, item, strategy_of(item.memory_type), ranking=RANKING, sources=sources)
        if result.outcome == IGNORED:
            continue
        store.replace_siblings(item.memory_type, item.key, result.siblings, result.losers, result.strategy,
                               sources=result.sources or None, fresh=not siblings and not sources)
        outcomes.append((item.key, result.outcome))
    return outcomes


def in_batches(store: ReplicaStore, writes: list[MemoryItem], cuts: list[int], strategy_of: Any
               ) -> list[tuple[str, str]]:
    outcomes = []
    bounds = sorted({0, len(writes), *(c % (len(writes) + 1) for c in cuts)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        batch = writes[start:end]
        names = [(i.memory_type, i.key) for i in batch]
        folds = fold_batch(store.states(names), batch, strategy_of, ranking=RANKING)
        with store.batch():
            store.replace_many([KeyChange(f.memory_type, f.key, f.siblings, f.sources, f.losers, f.fresh)
                                for f in folds.values()])
        steps = sorted(((batch.index(i), i.key, r.outcome) for f in folds.values() for i, r in f.steps),
                       key=lambda s: s[0])
        outcomes += [(key, outcome) for _, key, outcome in steps]
    return outcomes


@settings(max_examples=150, deadline=None)
@given(st.lists(op, min_size=1, max_size=18), st.integers(0, 2**16), st.booleans(),
       st.sampled_from(STRATEGIES), st.sampled_from(STRATEGIES), st.lists(st.integers(0, 60), max_size=4),
       st.integers(1, 20))
def test_a_batch_ends_where_one_by_one_ends(ops: list[tuple[bool, int, int, int]], seed: int, compatible: bool,
                                            fact_strategy: str, note_strategy: str, cuts: list[int],
                                            history_size: int) -> None:
    writes = writes_for(ops, seed, compatible)
    strategy_of = {"fact": fact_strategy, "note": note_strategy}.__getitem__
    single, batched = ReplicaStore(None, history_size), ReplicaStore(None, history_size)
    expected = one_by_one(single, writes, strategy_of)
    got = in_batches(batched, writes, cuts, strategy_of)
    assert dump(batched) == dump(single)
    assert sorted(got) == sorted(expected)


def test_a_batch_of_one_key_files_every_replaced_value_in_order() -> None:
    first = MemoryItem("fact", "k", 1, {"a": 1}, 10, "a")
    second = MemoryItem("fact", "k", 2, {"a": 2}, 20, "a")
    third = MemoryItem("fact", "k", 3, {"a": 2, "b": 1}, 30, "b")
    folds = fold_batch({}, [first, second, first, third], lambda _: "latest_wins")
    fold = folds[("fact", "k")]
    assert fold.fresh and [i.value for i in fold.siblings] == [3]
    assert [(loser.value, why) for loser, why in fold.losers] == [(1, "latest_wins"), (2, "latest_wins")]
    assert [i.value for i, _ in fold.steps] == [1, 2, 3]  # the duplicate of the first changed nothing
    assert fold_batch({("fact", "k"): ([third], [third])}, [first, second], lambda _: "latest_wins") == {}


def general_fold(local: Any, incoming: MemoryItem, strategy: str, sources: Any) -> Resolution:
    """``apply_remote`` without its shortcuts: every write through the frontier, the strategy and the identities."""
    if not local and not sources:
        return Resolution((incoming,), APPLIED, strategy=strategy, sources=(incoming,))
    base = frontier(sources if sources else local)
    new, _, ignored = add_to_frontier(base, incoming)
    if ignored:
        return Resolution(tuple(local), IGNORED, strategy=strategy, sources=base)
    after = resolve(new, strategy, ranking=RANKING)
    visible = {_identity(s) for s in after.siblings}
    losers = [s for s in local if _identity(s) not in visible]
    if _identity(incoming) not in visible and after.outcome != MERGED:
        losers.append(incoming)
    return after._replace(outcome=APPLIED if len(new) == 1 else after.outcome, losers=tuple(losers))


@settings(max_examples=150, deadline=None)
@given(st.lists(op, min_size=1, max_size=18), st.integers(0, 2**16), st.booleans(), st.sampled_from(STRATEGIES))
def test_the_shortcuts_of_apply_remote_decide_as_the_general_fold(ops: list[tuple[bool, int, int, int]], seed: int,
                                                                  compatible: bool, strategy: str) -> None:
    """A rewrite that dominates the key's whole state, and a write a stored one dominates or is, are decided
    without the general fold: every write of real histories (duplicates, concurrency, skewed stamps, deletions)
    gets the same resolution from ``apply_remote`` as from the general fold, stored state or not."""
    store = ReplicaStore(None)
    for item in writes_for(ops, seed, compatible):
        siblings, sources = store.state(item.memory_type, item.key)
        result = apply_remote(siblings, item, strategy, ranking=RANKING, sources=sources)
        assert result == general_fold(siblings, item, strategy, sources)
        assert apply_remote(siblings, item, strategy, ranking=RANKING) == general_fold(siblings, item, strategy, None)
        if result.outcome != IGNORED:
            store.replace_siblings(item.memory_type, item.key, result.siblings, result.losers, result.strategy,
                                   sources=result.sources or None, fresh=not siblings and not sources)


def test_equal_vectors_with_different_content_go_through_the_general_fold() -> None:
    """Two different items with one vector (a misbehaving node): the larger by (hlc, origin, content) is kept,
    whichever arrives first, as the general fold keeps it; an exact duplicate is ignored."""
    small = MemoryItem("fact", "k", 1, {"a": 1}, 10, "a")
    large = MemoryItem("fact", "k", 2, {"a": 1}, 10, "a")
    for strategy in STRATEGIES:
        for stored, incoming in ((small, large), (large, small), (small, small)):
            got = apply_remote([stored], incoming, strategy, ranking=RANKING, sources=[stored])
            assert got == general_fold([stored], incoming, strategy, [stored])
        assert apply_remote([small], large, strategy, sources=[small]).outcome == APPLIED
        assert apply_remote([large], small, strategy, sources=[large]).outcome == IGNORED
