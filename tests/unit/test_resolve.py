"""Conflict strategies for one key (mesh_core/memory/resolve.py): known answers and properties."""

from __future__ import annotations

import random
from itertools import permutations
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core.clock import VersionVector
from mesh_core.memory.resolve import (
    APPLIED,
    CONFLICT,
    IGNORED,
    IMPLEMENTED,
    MERGED,
    RESOLVED,
    SIBLINGS,
    Ranking,
    Resolution,
    apply_remote,
    canonical,
    frontier,
    local_sibling,
    local_write,
    merge_values,
    resolve,
    resolve_manually,
)
from mesh_core.model import MemoryItem
from tests.unit.test_convergence import op, simulate


def item(value: Any, vv: dict[str, int], hlc: int, origin: str, priority: int = 5,
         tombstone: bool = False) -> MemoryItem:
    return MemoryItem("fact", "k", value, vv, hlc, origin, priority, tombstone)


def fold(items: list[MemoryItem], strategy: str, **kw: Any) -> tuple[tuple[MemoryItem, ...], Resolution]:
    """Fold items into an empty replica keeping visible siblings and sources, as the manager should."""
    visible: tuple[MemoryItem, ...] = ()
    sources: tuple[MemoryItem, ...] = ()
    last = Resolution((), IGNORED)
    for i in items:
        result = apply_remote(visible, i, strategy, sources=sources, **kw)
        if result.outcome != IGNORED:
            visible, sources, last = result.siblings, result.sources, result
    return visible, last


A = item("from a", {"a": 1}, 10, "a")
B = item("from b", {"b": 1}, 20, "b")


# --- the public surface ----------------------------------------------------------------

def test_every_strategy_is_implemented_and_unknown_ones_are_refused():
    assert set(IMPLEMENTED) == {"latest_wins", "merge_compatible", "source_priority", "manual", "version_vector"}
    with pytest.raises(ValueError, match="unknown conflict strategy"):
        apply_remote([], A, "coin_flip")
    with pytest.raises(ValueError, match="unknown conflict strategy"):
        resolve([A], "coin_flip")


def test_the_managers_current_call_still_works():
    result = apply_remote([A], B, "latest_wins")
    assert result.outcome == RESOLVED and result.strategy == "latest_wins"
    assert [i.value for i in result.siblings] == ["from b"] and result.losers == (A,)
    assert not result.conflict and result.warning is None and result.disagreements == ()
    assert apply_remote([], A).outcome == APPLIED
    # a key stored before sources were kept: empty sources fall back to the visible siblings
    assert apply_remote([B], A, "manual", sources=()).siblings == (A, B)


# --- the frontier: ignore, supersede, duplicates ---------------------------------------

@pytest.mark.parametrize("strategy", IMPLEMENTED)
def test_dominated_or_equal_incoming_is_ignored_and_dominating_incoming_supersedes(strategy):
    newer = item("newer", {"a": 2, "b": 1}, 30, "a")
    assert apply_remote([newer], A, strategy).outcome == IGNORED
    assert apply_remote([A], A, strategy).outcome == IGNORED
    result = apply_remote([A, B], newer, strategy, sources=[A, B])
    assert result.outcome == APPLIED and result.siblings == (newer,) and result.sources == (newer,)
    assert not result.conflict


def test_frontier_keeps_maximal_items_once_in_a_fixed_order():
    c = item("c", {"a": 1, "c": 1}, 5, "c")
    assert frontier([B, A, c, A, B]) == frontier([c, B, A]) == (c, B)
    assert frontier([]) == ()


def test_equal_vectors_with_different_content_keep_the_larger_whatever_the_order():
    twin = item("twin", {"a": 1}, 11, "a")  # a misbehaving node reused a vector
    assert frontier([A, twin]) == frontier([twin, A]) == (twin,)


# --- latest_wins -------------------------------------------------------------------------

def test_latest_wins_picks_the_higher_hlc_with_the_merged_vector_in_any_order():
    for order in ([A, B], [B, A]):
        visible, last = fold(order, "latest_wins")
        assert visible == (item("from b", {"a": 1, "b": 1}, 20, "b"),)
        assert last.outcome == RESOLVED
    assert apply_remote([A], B, "latest_wins").losers == (A,)
    assert apply_remote([B], A, "latest_wins").losers == (A,)  # the incoming write lost: history gets it


def test_latest_wins_tie_goes_to_the_higher_node_id():
    x = item("x", {"x": 1}, 7, "node-x")
    y = item("y", {"y": 1}, 7, "node-y")
    assert fold([x, y], "latest_wins")[0][0].value == "y"
    assert fold([y, x], "latest_wins")[0][0].value == "y"


def test_losers_are_not_reported_twice():
    c = item("from c", {"c": 1}, 30, "c")
    r1 = apply_remote([A], B, "latest_wins")
    r2 = apply_remote(r1.siblings, c, "latest_wins", sources=r1.sources)
    assert [i.value for i in r2.losers] == ["from b"]  # A already went to history with r1


# --- source_priority ---------------------------------------------------------------------

def test_source_priority_higher_rank_wins_even_when_older():
    ranking = Ranking({"a": 2, "b": 1})
    visible, last = fold([B, A], "source_priority", ranking=ranking)
    assert visible == (item("from a", {"a": 1, "b": 1}, 10, "a"),)
    assert last.outcome == RESOLVED and "rank 2" in last.reason


def test_source_priority_equal_or_unknown_rank_falls_back_to_latest_wins():
    for ranking in (Ranking({"a": 1, "b": 1}), Ranking({"c": 5}), None):
        visible, last = fold([A, B], "source_priority", ranking=ranking)
        assert visible[0].value == "from b"
    assert "equal rank, latest wins" in last.reason
    x, y = item("x", {"x": 1}, 7, "node-x"), item("y", {"y": 1}, 7, "node-y")
    assert fold([y, x], "source_priority", ranking=Ranking({"node-x": 1, "node-y": 1}))[0][0].value == "y"


def test_ranking_from_an_ordered_list_of_ids_names_and_types():
    nodes = [("id-1", "alpha", "general"), ("id-2", "beta", "language_expert"), ("id-3", "gamma", "general"),
             ("id-4", "delta", "sensor_connected")]
    ranking = Ranking.from_order(["beta", "general", "id-9"], nodes)
    assert ranking.rank("id-2") == 3  # by name, first entry
    assert ranking.rank("id-1") == ranking.rank("id-3") == 2  # by type
    assert ranking.rank("id-9") == 1  # a node id listed directly
    assert ranking.rank("id-4") == 0 and ranking.rank("unknown") == 0
    assert Ranking.from_order(["id-1", "alpha"], nodes).rank("id-1") == 2  # the best matching entry counts
    assert Ranking({"x": 1}) == Ranking({"x": 1}) != Ranking({"x": 2})


# --- merge_compatible ------------------------------------------------------------------

def test_merge_compatible_deep_merges_and_unions_scalar_lists():
    a = item({"profile": {"name": "Ann"}, "tags": ["b", "a"], "same": 1}, {"a": 1}, 10, "a", priority=3)
    b = item({"profile": {"age": 3}, "tags": ["c", "a"], "same": 1}, {"b": 1}, 20, "b", priority=7)
    for order in ([a, b], [b, a]):
        visible, last = fold(order, "merge_compatible")
        assert last.outcome == MERGED and not last.conflict
        assert last.losers == (order[0],)  # the value readers saw before goes to history; the incoming is merged
        assert visible == (item({"profile": {"age": 3, "name": "Ann"}, "tags": ["a", "b", "c"], "same": 1},
                                {"a": 1, "b": 1}, 20, "b", priority=7),)


def test_merge_compatible_merges_lists_of_records_by_position_and_treats_empty_lists_as_neutral():
    assert merge_values([[{"id": 1}], [{"id": 1, "n": 2}, {"id": 2}]]).value == [{"id": 1, "n": 2}, {"id": 2}]
    assert merge_values([[], [3, 1]]).value == [3, 1]
    assert merge_values([[], [{"x": 1}]]).value == [{"x": 1}]


def test_merge_compatible_disagreement_falls_back_to_manual_naming_the_paths():
    a = item({"profile": {"age": 30, "name": "Ann"}, "items": [{"id": 1}, {"id": 2}, {"id": 3}]}, {"a": 1}, 10, "a")
    b = item({"profile": {"age": 31, "name": "Ann"}, "items": [{"id": 1}, {"id": 2}, {"id": 4}]}, {"b": 1}, 20, "b")
    for order in ([a, b], [b, a]):
        visible, last = fold(order, "merge_compatible")
        assert last.outcome == CONFLICT and last.conflict and last.strategy == "manual"
        assert last.disagreements == ("items[2].id", "profile.age")
        assert "items[2].id, profile.age" in last.reason
        assert visible == (a, b)


@pytest.mark.parametrize(("values", "paths"), [
    ([1, 2], ("$",)),
    ([1, 1.0], ("$",)),
    ([True, 1], ("$",)),
    ([{"a": 1}, [1]], ("$",)),
    ([{"t": [1, 2]}, {"t": [[1]]}], ("t",)),  # a set of scalars against a list of records
    ([{"a": {"b": 1}}, {"a": {"b": "1"}}, {"a": {"b": 1, "c": 2}}], ("a.b",)),
    ([{1: "x"}, {1: "y"}], ("[1]",)),
    ([[{"a": 1}, {"b": 1}], [{"a": 1}, {"b": 2}]], ("[1].b",)),
])
def test_merge_disagreement_paths(values, paths):
    result = merge_values(values)
    assert not result.ok and result.disagreements == paths


def test_tombstones_merge_only_with_tombstones():
    gone_a = item(None, {"a": 1}, 10, "a", tombstone=True)
    gone_b = item(None, {"b": 1}, 20, "b", tombstone=True)
    visible, last = fold([gone_a, gone_b], "merge_compatible")
    assert last.outcome == MERGED and visible[0].tombstone
    visible, last = fold([gone_a, B], "merge_compatible")
    assert last.conflict and last.disagreements == ("$",)


# --- manual ------------------------------------------------------------------------------

def test_manual_keeps_both_siblings_until_a_resolution_that_dominates_them():
    visible, last = fold([B, A], "manual")
    assert last.outcome == CONFLICT and last.conflict and visible == (A, B)
    assert "await a manual resolution" in last.reason
    assert local_sibling(visible, "a") == A and local_sibling(visible, "zz") == B
    fix = resolve_manually(visible, "settled", "c", hlc=5)
    assert fix.vv == {"a": 1, "b": 1, "c": 1} and fix.origin == "c" and fix.hlc == 21  # stamp above the siblings
    for sibling in visible:
        assert VersionVector(fix.vv).descends_strictly(sibling.vv)
    result = apply_remote(visible, fix, "manual", sources=last.sources)
    assert result.outcome == APPLIED and result.siblings == (fix,) and not result.conflict
    assert result.losers == (A, B)
    assert apply_remote(result.siblings, A, "manual", sources=result.sources).outcome == IGNORED


def test_a_third_concurrent_write_joins_an_open_manual_conflict():
    c = item("from c", {"c": 1}, 5, "c")
    visible, last = fold([A, B, c], "manual")
    assert len(visible) == 3 and last.conflict


def test_resolve_manually_refuses_no_siblings_or_mixed_keys():
    with pytest.raises(ValueError):
        resolve_manually([], 1, "c", 1)
    with pytest.raises(ValueError):
        resolve_manually([A, MemoryItem("fact", "other", 1, {"b": 1}, 1, "b")], 1, "c", 1)


# --- version_vector --------------------------------------------------------------------

def test_version_vector_keeps_siblings_until_a_write_that_has_seen_them_all():
    visible, last = fold([A, B], "version_vector")
    assert last.outcome == SIBLINGS and not last.conflict and visible == (A, B) and last.warning is None
    write = local_write(visible, item("both", {}, 1, "x"), "a")
    assert write.vv == {"a": 2, "b": 1} and write.hlc == 21 and write.origin == "a"
    result = apply_remote(visible, write, "version_vector", sources=last.sources)
    assert result.outcome == APPLIED and result.siblings == (write,)


def test_version_vector_warns_from_25_siblings():
    writers = [item(i, {f"n{i:02}": 1}, i, f"n{i:02}") for i in range(25)]
    _, at_24 = fold(writers[:24], "version_vector")
    assert at_24.warning is None
    visible, at_25 = fold(writers, "version_vector")
    assert len(visible) == 25 and at_25.warning and "25 concurrent siblings" in at_25.warning
    assert fold(writers[:3], "version_vector", sibling_warning=3)[1].warning


# --- canonical encoding ------------------------------------------------------------------

def test_canonical_encoding_keeps_types_apart_and_ignores_mapping_order():
    assert len({canonical(1), canonical(1.0), canonical(True), canonical("1"), canonical(b"1")}) == 5
    assert canonical({"a": 1, "b": [1, 2]}) == canonical({"b": [1, 2], "a": 1})
    assert canonical([1, 2]) == canonical((1, 2)) != canonical([2, 1])
    assert canonical(float("nan")) == canonical(float("nan"))


# --- properties of merge_values -------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["x", "y", ""]),
                    st.sampled_from([0.5, 1.0]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
                      max_leaves=8)


def same(r1: Any, r2: Any) -> bool:
    return (r1.ok, canonical(r1.value), r1.disagreements) == (r2.ok, canonical(r2.value), r2.disagreements)


@given(values, values)
def test_merge_is_commutative_and_idempotent(a, b):
    assert same(merge_values([a, b]), merge_values([b, a]))
    for v in (a, b):
        for merged in (merge_values([v]), merge_values([v, v]), merge_values([v, v, v])):
            assert merged.ok and canonical(merged.value) == canonical(v)
    ab = merge_values([a, b])
    if ab.ok:  # merging the result again with an input changes nothing
        assert canonical(merge_values([ab.value, a]).value) == canonical(ab.value)


@given(values, values, values)
def test_merge_is_associative_where_it_applies(a, b, c):
    whole = merge_values([a, b, c])
    ab, bc = merge_values([a, b]), merge_values([b, c])
    left = merge_values([ab.value, c]) if ab.ok else ab
    right = merge_values([a, bc.value]) if bc.ok else bc
    assert whole.ok == left.ok == right.ok
    if whole.ok:
        assert canonical(whole.value) == canonical(left.value) == canonical(right.value)
        for order in permutations([a, b, c]):
            assert canonical(merge_values(order).value) == canonical(whole.value)


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    """A nested value with dicts, scalar lists (sets) and lists of records (built from a seed: cheap to draw)."""
    kind = rnd.random() if depth < 3 else 1.0
    if kind < 0.4:
        return {k: random_value(rnd, depth + 1) for k in rnd.sample("abcd", rnd.randint(1, 4))}
    if kind < 0.55:
        return [{k: random_value(rnd, depth + 1) for k in rnd.sample("pq", rnd.randint(1, 2))}
                for _ in range(rnd.randint(1, 2))]
    if kind < 0.7:
        return rnd.sample([0, 1, "x", "y", None, True, 1.5], rnd.randint(0, 4))
    return rnd.choice([0, 1, 2, "x", "y", None, True, False, 0.5])


def project(value: Any, rnd: random.Random) -> Any:
    """A part of ``value``: random keys dropped, scalar lists subsetted, record lists cut. Never disagrees."""
    if isinstance(value, dict):
        return {k: project(v, rnd) for k, v in value.items() if rnd.random() < 0.7}
    if isinstance(value, list):
        if any(isinstance(e, dict | list) for e in value):
            return [project(e, rnd) for e in value[:rnd.randint(0, len(value))]]
        return rnd.sample(value, rnd.randint(0, len(value)))
    return value


@given(st.integers(0, 2**32), st.lists(st.integers(0, 2**32), min_size=3, max_size=3))
def test_parts_of_one_value_always_merge_in_any_grouping(universe_seed, seeds):
    universe = {"root": random_value(random.Random(universe_seed))}
    a, b, c = (project(universe, random.Random(s)) for s in seeds)
    whole = merge_values([a, b, c])
    assert whole.ok
    pairwise = merge_values([merge_values([a, b]).value, c])
    assert pairwise.ok and canonical(pairwise.value) == canonical(whole.value)
    assert canonical(merge_values([c, merge_values([b, a]).value]).value) == canonical(whole.value)
    for order in permutations([a, b, c]):
        assert canonical(merge_values(order).value) == canonical(whole.value)


def leaves(value: Any, path: str = "") -> list[str]:
    """Paths of the scalar leaves of nested dicts and lists of records, named as merge_values names them."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
        return [p for i, e in enumerate(value) for p in leaves(e, f"{path}[{i}]")]
    return [path]


def changing(value: Any, path: str, changed: set[str]) -> Any:
    """A copy of ``value`` with the leaves at ``changed`` replaced by a value of another type."""
    if isinstance(value, dict) and value:
        return {k: changing(v, f"{path}.{k}" if path else k, changed) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
        return [changing(e, f"{path}[{i}]", changed) for i, e in enumerate(value)]
    return {"changed": repr(value)} if path in changed else value


@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_merge_names_exactly_the_fields_that_disagree(seed, pick):
    base = {"profile": random_value(random.Random(seed)), "tags": ["x", "y"]}
    paths = leaves(base)
    rnd = random.Random(pick)
    changed = set(rnd.sample(paths, rnd.randint(0, len(paths))))
    result = merge_values([base, changing(base, "", changed)])
    assert sorted(result.disagreements) == sorted(changed)
    assert result.ok == (not changed)


# --- manual resolution settles everything everywhere ---------------------------------------

@given(ops=st.lists(op, min_size=2, max_size=12), n_nodes=st.integers(2, 4),
       cut=st.lists(st.integers(0, 2**32), min_size=3, max_size=3), pick=st.integers(0, 3))
def test_a_manual_resolution_dominates_all_siblings_and_settles_every_replica(ops, n_nodes, cut, pick):
    writes = simulate(ops, n_nodes, compatible=False, skew_hlc=False, tombstones=False)
    siblings = resolve(writes, "manual").siblings
    chosen = siblings[pick % len(siblings)].value if pick < 3 else {"new": "value"}
    fix = resolve_manually(siblings, chosen, "resolver", hlc=0)
    assert all(VersionVector(fix.vv).descends_strictly(s.vv) for s in writes)
    finals = []
    for seed in cut:  # replicas that have seen some of the writes, in their own order
        rnd = random.Random(seed)
        order = rnd.sample(writes, len(writes))
        visible, last = fold(order[:rnd.randint(0, len(order))], "manual")
        result = apply_remote(visible, fix, "manual", sources=last.sources)
        assert result.outcome == APPLIED and result.siblings == (fix,) and not result.conflict
        for late in order:  # every original, seen before or not, is now older than the resolution
            assert apply_remote(result.siblings, late, "manual", sources=result.sources).outcome == IGNORED
        finals.append(result.siblings)
    assert finals == [(fix,)] * 3


@pytest.mark.parametrize("strategy", IMPLEMENTED)
def test_a_key_new_here_is_applied_as_the_general_fold_would(strategy: str) -> None:
    incoming = MemoryItem("fact", "k", {"v": 1}, {"n1": 1}, 10, "n1", 5, False)
    fast = apply_remote([], incoming, strategy)
    # the same fold through the general path: an empty frontier plus the incoming original
    general = resolve([incoming], strategy)
    assert fast.siblings == general.siblings == (incoming,) and fast.sources == general.sources
    assert fast.outcome == "applied" and fast.losers == () and fast.strategy == strategy
