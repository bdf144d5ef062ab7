"""Choosing the node for a task (mesh_core/routing.py)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core.errors import NoCapacity, TaskError, UnknownTaskType
from mesh_core.model import NodeInfo, NodeType
from mesh_core.routing import (
    AFFINITY_WEIGHT,
    ALGORITHMS,
    OVERLOAD_THRESHOLD,
    AffinityBook,
    AffinityStats,
    RouteDecision,
    RouteRequest,
    candidates,
    route,
)


def node(node_id: str, *, task_types=("t",), capabilities=(), node_type=NodeType.GENERAL,
         capacity: int = 10, name: str | None = None) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        name=name or f"name-{node_id}",
        node_type=node_type,
        capabilities=frozenset(capabilities),
        task_types=frozenset(task_types),
        capacity=capacity,
    )


def ids(nodes) -> list[str]:
    return sorted(n.node_id for n in nodes)


REQ = RouteRequest("t")


# --- candidates ------------------------------------------------------------------

def test_candidates_excludes_nodes_without_the_handler():
    nodes = [node("a"), node("b", task_types=("other",)), node("c", task_types=("t", "other"))]
    assert ids(candidates(REQ, nodes, {})) == ["a", "c"]


def test_candidates_excludes_nodes_missing_a_required_capability():
    nodes = [node("a", capabilities={"nlp"}), node("b", capabilities={"nlp", "gpu"}), node("c")]
    req = RouteRequest("t", required_capabilities=frozenset({"nlp", "gpu"}))
    assert ids(candidates(req, nodes, {})) == ["b"]
    req_one = RouteRequest("t", required_capabilities=frozenset({"nlp"}))
    assert ids(candidates(req_one, nodes, {})) == ["a", "b"]


def test_candidates_excludes_full_nodes():
    nodes = [node("a", capacity=2), node("b", capacity=2)]
    assert ids(candidates(REQ, nodes, {"a": 2, "b": 1})) == ["b"]
    assert ids(candidates(REQ, nodes, {"a": 3, "b": 0})) == ["b"]  # over capacity too


def test_candidates_excludes_nodes_with_zero_capacity():
    nodes = [node("a", capacity=0), node("b")]
    assert ids(candidates(REQ, nodes, {})) == ["b"]


def test_candidates_excludes_overloaded_nodes():
    # not full (91 < 100) but over the 0.9 overload threshold
    nodes = [node("a", capacity=100), node("b", capacity=100)]
    assert ids(candidates(REQ, nodes, {"a": 91, "b": 10})) == ["b"]


def test_overload_threshold_is_inclusive_and_configurable():
    nodes = [node("a", capacity=10)]
    assert OVERLOAD_THRESHOLD == 0.9
    assert ids(candidates(REQ, nodes, {"a": 9})) == ["a"]  # exactly 0.9 is still allowed
    with pytest.raises(NoCapacity):
        candidates(REQ, nodes, {"a": 6}, overload_threshold=0.5)
    assert ids(candidates(REQ, nodes, {"a": 5}, overload_threshold=0.5)) == ["a"]


def test_candidates_ignores_node_info_queued_and_uses_the_mapping():
    busy_on_paper = node("a")
    busy_on_paper.queued = 10
    assert ids(candidates(REQ, [busy_on_paper], {})) == ["a"]


def test_unknown_task_type_when_nobody_has_the_handler():
    with pytest.raises(UnknownTaskType) as info:
        candidates(RouteRequest("nope"), [node("a"), node("b", task_types=("x",))], {})
    assert "nope" in str(info.value)
    with pytest.raises(UnknownTaskType):
        candidates(REQ, [], {})


def test_unknown_task_type_when_nobody_has_the_capabilities():
    nodes = [node("a", capabilities={"nlp"})]
    req = RouteRequest("t", required_capabilities=frozenset({"vision", "gpu"}))
    with pytest.raises(UnknownTaskType) as info:
        candidates(req, nodes, {})
    assert "gpu, vision" in str(info.value)


def test_no_capacity_when_all_able_nodes_are_full():
    nodes = [node("a", capacity=1), node("b", capacity=4), node("c", task_types=("other",))]
    with pytest.raises(NoCapacity) as info:
        candidates(REQ, nodes, {"a": 1, "b": 4})
    assert info.value.retriable
    assert "2 node(s)" in str(info.value)
    with pytest.raises(NoCapacity):
        route(REQ, nodes, {"a": 1, "b": 4})


def test_no_capacity_when_all_able_nodes_are_overloaded():
    nodes = [node("a", capacity=100), node("b", capacity=100)]
    with pytest.raises(NoCapacity):
        candidates(REQ, nodes, {"a": 95, "b": 99})


def test_exclude_set_is_honoured():
    nodes = [node("a"), node("b"), node("c")]
    req = RouteRequest("t", exclude=frozenset({"a", "c"}))
    assert ids(candidates(req, nodes, {})) == ["b"]
    for algorithm in ALGORITHMS:
        decision = route(req, nodes, {"b": 5}, algorithm=algorithm, rng=random.Random(1))
        assert decision.node_id == "b"


def test_exclude_of_every_able_node_raises_a_task_error():
    with pytest.raises(TaskError):
        route(RouteRequest("t", exclude=frozenset({"a"})), [node("a")], {})


# --- route: least_loaded ---------------------------------------------------------

def test_least_loaded_picks_lowest_pressure():
    nodes = [node("a", capacity=10), node("b", capacity=100), node("c", capacity=10)]
    # pressures: a 0.5, b 0.3, c 0.2
    decision = route(REQ, nodes, {"a": 5, "b": 30, "c": 2})
    assert isinstance(decision, RouteDecision)
    assert decision.node_id == "c"
    assert decision.node_name == "name-c"


def test_least_loaded_uses_pressure_not_absolute_queue_length():
    nodes = [node("small", capacity=4), node("big", capacity=100)]
    # small: 2/4 = 0.5, big: 20/100 = 0.2 although 20 > 2
    assert route(REQ, nodes, {"small": 2, "big": 20}).node_id == "big"


def test_least_loaded_ties_are_broken_by_node_id():
    nodes = [node("z"), node("m"), node("b")]
    assert route(REQ, nodes, {}).node_id == "b"
    assert route(REQ, list(reversed(nodes)), {}).node_id == "b"


def test_least_loaded_why_mentions_algorithm_and_figures():
    nodes = [node("a", capacity=10), node("b", capacity=10), node("c", capacity=10)]
    decision = route(REQ, nodes, {"a": 5, "b": 1, "c": 3})
    assert decision.node_id == "b"
    assert decision.why == "least_loaded 0.10 vs 0.30, 0.50"


def test_least_loaded_why_for_single_candidate():
    decision = route(REQ, [node("a")], {"a": 2})
    assert decision.why == "least_loaded 0.20 (only candidate)"


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="bogus"):
        route(REQ, [node("a")], {}, algorithm="bogus")


# --- route: preferred node types -------------------------------------------------

def test_first_preferred_type_wins_even_if_more_loaded():
    nodes = [
        node("gen", node_type=NodeType.GENERAL),
        node("lang", node_type=NodeType.LANGUAGE_EXPERT),
        node("plan", node_type=NodeType.PLANNING_ONLY),
    ]
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT, NodeType.PLANNING_ONLY))
    decision = route(req, nodes, {"gen": 0, "lang": 8, "plan": 0})
    assert decision.node_id == "lang"
    assert decision.why.startswith("preferred language_expert; least_loaded 0.80")


def test_falls_back_to_second_preference_when_first_is_not_free():
    nodes = [
        node("gen", node_type=NodeType.GENERAL),
        node("lang", node_type=NodeType.LANGUAGE_EXPERT, capacity=2),
        node("plan", node_type=NodeType.PLANNING_ONLY),
    ]
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT, NodeType.PLANNING_ONLY))
    decision = route(req, nodes, {"lang": 2, "plan": 5})
    assert decision.node_id == "plan"
    assert decision.why.startswith("preferred planning_only (choice 2); ")


def test_falls_back_to_any_node_when_no_preferred_type_is_free():
    nodes = [
        node("gen1", node_type=NodeType.GENERAL),
        node("gen2", node_type=NodeType.GENERAL),
        node("lang", node_type=NodeType.LANGUAGE_EXPERT, capacity=1),
    ]
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT, NodeType.SENSOR_CONNECTED))
    decision = route(req, nodes, {"lang": 1, "gen1": 3, "gen2": 1})
    assert decision.node_id == "gen2"
    assert decision.why.startswith("no preferred type free; least_loaded")


def test_preferred_type_without_handler_is_not_chosen():
    nodes = [node("gen"), node("lang", node_type=NodeType.LANGUAGE_EXPERT, task_types=("other",))]
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT,))
    assert route(req, nodes, {}).node_id == "gen"


def test_preference_tier_applies_to_every_algorithm():
    nodes = [node(f"g{i}") for i in range(4)] + [node("lang", node_type=NodeType.LANGUAGE_EXPERT)]
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT,))
    for algorithm in ALGORITHMS:
        for counter in range(3):
            decision = route(req, nodes, {"lang": 7}, algorithm=algorithm, round_robin_counter=counter,
                             rng=random.Random(counter))
            assert decision.node_id == "lang", algorithm


# --- route: round_robin ----------------------------------------------------------

def test_round_robin_cycles_through_candidates_in_node_id_order():
    nodes = [node("c"), node("a"), node("b")]
    picks = [route(REQ, nodes, {}, algorithm="round_robin", round_robin_counter=i).node_id for i in range(7)]
    assert picks == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_skips_nodes_that_are_not_candidates():
    nodes = [node("a"), node("b", capacity=1), node("c"), node("d", task_types=("x",))]
    picks = [route(REQ, nodes, {"b": 1}, algorithm="round_robin", round_robin_counter=i).node_id
             for i in range(4)]
    assert picks == ["a", "c", "a", "c"]


def test_round_robin_why():
    nodes = [node("a"), node("b"), node("c")]
    decision = route(REQ, nodes, {}, algorithm="round_robin", round_robin_counter=4)
    assert decision.node_id == "b"
    assert decision.why == "round_robin 2/3"


# --- route: random ---------------------------------------------------------------

def test_random_picks_only_among_candidates_and_is_seedable():
    nodes = [node("a"), node("b"), node("c"), node("full", capacity=1), node("x", task_types=("other",))]
    queued = {"full": 1}
    rng = random.Random(1234)
    picks = Counter(route(REQ, nodes, queued, algorithm="random", rng=rng).node_id for _ in range(300))
    assert set(picks) == {"a", "b", "c"}
    assert all(count > 50 for count in picks.values())  # roughly uniform
    again = random.Random(1234)
    replay = Counter(route(REQ, nodes, queued, algorithm="random", rng=again).node_id for _ in range(300))
    assert replay == picks


def test_random_why():
    decision = route(REQ, [node("a"), node("b")], {}, algorithm="random", rng=random.Random(0))
    assert decision.why == "random of 2"


# --- route: capability_based -----------------------------------------------------

def test_capability_based_prefers_the_specialist():
    nodes = [
        node("generalist", capabilities={"nlp", "vision", "planning", "sensors"}),
        node("specialist", capabilities={"nlp"}),
    ]
    req = RouteRequest("t", required_capabilities=frozenset({"nlp"}))
    decision = route(req, nodes, {"generalist": 0, "specialist": 3}, algorithm="capability_based")
    assert decision.node_id == "specialist"
    assert decision.why.startswith("capability_based fit ")
    # fit = 1/1 - 0.1 * (3 + 1) / 10 = 0.96 (the load it would have with this task)
    assert decision.why == "capability_based fit 0.96"


def test_capability_based_without_required_capabilities_prefers_less_loaded():
    nodes = [node("a", capabilities={"x"}), node("b", capabilities={"x", "y"})]
    decision = route(REQ, nodes, {"a": 5, "b": 1}, algorithm="capability_based")
    assert decision.node_id == "b"


# --- affinity --------------------------------------------------------------------

def test_affinity_stats_smoothing():
    stats = AffinityStats()
    assert stats.success == 0.5 and stats.samples == 0
    stats.observe(True, 2.0)
    assert stats.success == pytest.approx(0.6)
    assert stats.latency_s == 2.0
    stats.observe(False, 4.0)
    assert stats.success == pytest.approx(0.48)
    assert stats.latency_s == pytest.approx(2.4)
    assert stats.samples == 2


def test_affinity_book_scores():
    book = AffinityBook()
    assert book.score("a", "t") is None
    book.observe("a", "t", True, 0.1)
    assert book.score("a", "t") == pytest.approx(0.6)
    assert book.score("a", "other") is None
    assert book.score("b", "t") is None


def _book(failures_on: str, successes_on: str, task_type: str = "t", n: int = 5) -> AffinityBook:
    book = AffinityBook()
    for _ in range(n):
        book.observe(failures_on, task_type, False, 1.0)
        book.observe(successes_on, task_type, True, 1.0)
    return book


@pytest.mark.parametrize("algorithm", ["least_loaded", "capability_based"])
def test_affinity_avoids_repeated_failures_at_equal_load(algorithm):
    nodes = [node("a"), node("b")]  # "a" would win the node-id tie break
    book = _book(failures_on="a", successes_on="b")
    decision = route(REQ, nodes, {"a": 2, "b": 2}, algorithm=algorithm, affinity=book)
    assert decision.node_id == "b"
    assert f"affinity {book.score('b', 't'):.2f} on t" in decision.why


def test_affinity_prefers_node_with_successes_over_unknown_node():
    nodes = [node("a"), node("b")]
    book = AffinityBook()
    for _ in range(3):
        book.observe("b", "t", True, 0.5)
    assert route(REQ, nodes, {}, affinity=book).node_id == "b"


def test_failing_node_loses_to_unknown_node_at_equal_load():
    nodes = [node("a"), node("b")]
    book = AffinityBook()
    for _ in range(3):
        book.observe("a", "t", False, 0.5)
    assert route(REQ, nodes, {}, affinity=book).node_id == "b"


def test_affinity_is_per_task_type():
    nodes = [node("a", task_types=("t", "u")), node("b", task_types=("t", "u"))]
    book = _book(failures_on="a", successes_on="b", task_type="u")
    # the history is about "u", so routing "t" is unaffected: the tie goes to "a"
    decision = route(REQ, nodes, {}, affinity=book)
    assert decision.node_id == "a"
    assert "affinity" not in decision.why
    assert route(RouteRequest("u"), nodes, {}, affinity=book).node_id == "b"


def test_affinity_is_a_bonus_not_an_override():
    nodes = [node("a"), node("b")]
    book = _book(failures_on="a", successes_on="b", n=50)
    # the bonus is at most AFFINITY_WEIGHT/2 either way; a much lighter node still wins
    assert AFFINITY_WEIGHT < 0.8
    decision = route(REQ, nodes, {"a": 0, "b": 8}, affinity=book)
    assert decision.node_id == "a"
    assert "least_loaded 0.00 vs 0.80" in decision.why
    assert "affinity" in decision.why


@pytest.mark.parametrize("algorithm", ["least_loaded", "capability_based"])
def test_affinity_does_not_starve_a_node_without_history(algorithm):
    # The bench's shape: huge capacities make every pressure tiny. One node has a perfect record, the other
    # none; tasks placed one after another at equal load still split about evenly (affinity scales the load
    # cost, so it tips the balance by at most its weight, never to all-or-nothing).
    nodes = [node("a", capacity=100_000), node("b", capacity=100_000)]
    book = AffinityBook()
    for _ in range(200):
        book.observe("a", "t", True, 0.001)
    assert book.score("a", "t") > 0.99
    queued = {"a": 0, "b": 0}
    for _ in range(4000):
        queued[route(REQ, nodes, queued, algorithm=algorithm, affinity=book).node_id] += 1
    assert 0.40 <= queued["b"] / 4000 <= 0.5, queued
    # the perfect record is worth about AFFINITY_WEIGHT / 2 more load, relatively, never more
    assert queued["a"] / queued["b"] == pytest.approx(1 / (1 - AFFINITY_WEIGHT / 2), rel=0.01)


def test_affinity_breaks_a_tie_at_idle_with_huge_capacity():
    nodes = [node("a", capacity=100_000), node("b", capacity=100_000)]
    book = _book(failures_on="a", successes_on="b")
    assert route(REQ, nodes, {}, affinity=book).node_id == "b"
    # one task more on b is a real load difference only past the bonus: at 10 vs 11 it still goes to b
    assert route(REQ, nodes, {"a": 10, "b": 11}, affinity=book).node_id == "b"
    assert route(REQ, nodes, {"a": 10, "b": 20}, affinity=book).node_id == "a"


def test_why_combines_tier_algorithm_and_affinity():
    nodes = [node("lang", node_type=NodeType.LANGUAGE_EXPERT), node("gen")]
    book = AffinityBook()
    book.observe("lang", "t", True, 1.0)
    req = RouteRequest("t", preferred_node_types=(NodeType.LANGUAGE_EXPERT,))
    decision = route(req, nodes, {"lang": 1}, affinity=book)
    assert decision.why == "preferred language_expert; least_loaded 0.10 (only candidate); affinity 0.60 on t"


# --- properties ------------------------------------------------------------------

NODE_IDS = [f"n{i}" for i in range(6)]
CAPS = ["nlp", "vision", "gpu"]
TYPES = ["t", "u"]


def _build_cluster(rows, queued_row, task_type, required, preferred, exclude, history):
    nodes = [
        node(node_id,
             task_types={t for i, t in enumerate(TYPES) if types_mask >> i & 1},
             capabilities={c for i, c in enumerate(CAPS) if caps_mask >> i & 1},
             node_type=list(NodeType)[type_index],
             capacity=capacity)
        for node_id, types_mask, caps_mask, type_index, capacity in rows
    ]
    queued = {n.node_id: q for n, q in zip(nodes, queued_row, strict=False) if q >= 0}
    req = RouteRequest(task_type, required_capabilities=frozenset(required),
                       preferred_node_types=tuple(preferred), exclude=frozenset(exclude))
    book = AffinityBook()
    for node_id, t, ok in history:
        book.observe(node_id, t, ok, 0.1)
    return nodes, queued, req, book


clusters = st.builds(
    _build_cluster,
    st.lists(st.tuples(st.sampled_from(NODE_IDS), st.integers(0, 3), st.integers(0, 7),
                       st.integers(0, len(NodeType) - 1), st.integers(0, 12)),
             min_size=1, max_size=6, unique_by=lambda row: row[0]),
    st.lists(st.integers(-1, 14), max_size=6),  # -1: node absent from the queued mapping
    st.sampled_from(TYPES),
    st.sets(st.sampled_from(CAPS), max_size=2),
    st.lists(st.sampled_from(list(NodeType)), max_size=2, unique=True),
    st.sets(st.sampled_from(NODE_IDS), max_size=2),
    st.lists(st.tuples(st.sampled_from(NODE_IDS), st.sampled_from(TYPES), st.booleans()), max_size=6),
)


def _eligible(n: NodeInfo, req: RouteRequest, queued) -> bool:
    q = queued.get(n.node_id, 0)
    return (req.task_type in n.task_types and req.required_capabilities <= n.capabilities
            and n.node_id not in req.exclude and n.capacity > 0 and q < n.capacity
            and q / n.capacity <= OVERLOAD_THRESHOLD)


@given(clusters, st.integers(0, 20), st.integers(0, 2**32))
def test_route_only_ever_picks_an_eligible_node(cluster, counter, seed):
    nodes, queued, req, book = cluster
    eligible = [n for n in nodes if _eligible(n, req, queued)]
    if not eligible:
        with pytest.raises((UnknownTaskType, NoCapacity)):
            candidates(req, nodes, queued)
        for algorithm in ALGORITHMS:
            with pytest.raises((UnknownTaskType, NoCapacity)):
                route(req, nodes, queued, algorithm=algorithm, affinity=book)
        return
    assert ids(candidates(req, nodes, queued)) == ids(eligible)
    # the tier: nodes of the first preferred type that has an eligible node, else all
    tier = eligible
    for node_type in req.preferred_node_types:
        if any(n.node_type == node_type for n in eligible):
            tier = [n for n in eligible if n.node_type == node_type]
            break
    for algorithm in ALGORITHMS:
        for book_or_none in (book, None):
            decision = route(req, nodes, queued, algorithm=algorithm, affinity=book_or_none,
                             round_robin_counter=counter, rng=random.Random(seed))
            chosen = next(n for n in nodes if n.node_id == decision.node_id)
            assert chosen in tier, (algorithm, decision)
            assert decision.node_name == chosen.name
            # "least_loaded ..." etc., possibly after a tier note
            assert re.search(r"(^|; )" + algorithm + " ", decision.why), decision.why

    # least_loaded without affinity: minimal pressure with the task placed, (queued + 1) / capacity, in the
    # tier, ties to the smallest id; the why shows the chosen node's pressure before it
    def pressure_after(n: NodeInfo) -> float:
        return (queued.get(n.node_id, 0) + 1) / n.capacity

    # with affinity: never a node whose load cost exceeds the lightest's by more than the bonus can make up
    bound = (1 + AFFINITY_WEIGHT / 2) / (1 - AFFINITY_WEIGHT / 2)
    chosen_with = next(n for n in tier if n.node_id == route(req, nodes, queued, affinity=book).node_id)
    assert pressure_after(chosen_with) <= min(pressure_after(n) for n in tier) * bound + 1e-9

    decision = route(req, nodes, queued)
    best = min(pressure_after(n) for n in tier)
    assert decision.node_id == min(n.node_id for n in tier if pressure_after(n) == best)
    chosen = next(n for n in tier if n.node_id == decision.node_id)
    assert f"least_loaded {queued.get(chosen.node_id, 0) / chosen.capacity:.2f}" in decision.why
    # round_robin: the counter indexes the tier in node-id order
    decision = route(req, nodes, queued, algorithm="round_robin", round_robin_counter=counter)
    assert decision.node_id == ids(tier)[counter % len(tier)]
