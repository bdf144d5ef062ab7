"""Hybrid logical clock and version vectors (mesh_core/clock.py)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core.clock import (
    LOGICAL_BITS,
    LOGICAL_MASK,
    HybridLogicalClock,
    Ordering,
    VersionVector,
    clamp_remote,
    clock_refusal,
    compare_vectors,
    hlc_logical,
    hlc_physical_ms,
    hlc_to_seconds,
    mesh_clock_reference,
    own_clock_offset,
    peer_clock_sample,
)


def stamp(physical_ms: int, logical: int = 0) -> int:
    return (physical_ms << LOGICAL_BITS) | logical


class FakeWall:
    """A settable wall clock in milliseconds, injected into the HLC."""

    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


# --- stamp helpers ---------------------------------------------------------------

def test_stamp_helpers_split_and_convert():
    s = stamp(1_700_000_000_123, 42)
    assert hlc_physical_ms(s) == 1_700_000_000_123
    assert hlc_logical(s) == 42
    assert hlc_to_seconds(s) == pytest.approx(1_700_000_000.123)
    assert LOGICAL_MASK == (1 << LOGICAL_BITS) - 1


@given(st.integers(0, 2**47), st.integers(0, LOGICAL_MASK))
def test_stamp_helpers_round_trip(physical, logical):
    s = stamp(physical, logical)
    assert hlc_physical_ms(s) == physical
    assert hlc_logical(s) == logical


# --- HybridLogicalClock: examples -------------------------------------------------

def test_default_wall_clock_is_real_time():
    import time

    before = time.time_ns() // 1_000_000
    s = HybridLogicalClock().now()
    after = time.time_ns() // 1_000_000
    assert before <= hlc_physical_ms(s) <= after + 1


def test_now_tracks_the_wall_clock_when_it_moves_forward():
    wall = FakeWall(5_000)
    clock = HybridLogicalClock(wall)
    for ms in (5_000, 5_001, 5_010, 6_000, 10_000):
        wall.ms = ms
        s = clock.now()
        assert hlc_physical_ms(s) == ms
        assert hlc_logical(s) == 0
        assert clock.last == s


def test_standing_wall_clock_bumps_the_logical_counter():
    wall = FakeWall(7_000)
    clock = HybridLogicalClock(wall)
    stamps = [clock.now() for _ in range(50)]
    assert stamps == sorted(set(stamps))
    assert all(hlc_physical_ms(s) == 7_000 for s in stamps)
    assert [hlc_logical(s) for s in stamps] == list(range(50))


def test_backwards_wall_clock_never_moves_stamps_back():
    wall = FakeWall(10_000)
    clock = HybridLogicalClock(wall)
    first = clock.now()
    wall.ms = 4_000  # NTP step of six seconds into the past
    after = [clock.now() for _ in range(10)]
    assert all(s > first for s in after)
    assert after == sorted(set(after))
    assert all(hlc_physical_ms(s) == 10_000 for s in after)
    wall.ms = 10_001  # the wall clock catches up: stamps follow it again
    assert clock.now() == stamp(10_001)


def test_initial_last_is_respected():
    wall = FakeWall(1_000)
    clock = HybridLogicalClock(wall, last=stamp(2_000, 5))
    assert clock.last == stamp(2_000, 5)
    assert clock.now() == stamp(2_000, 6)


def test_logical_overflow_moves_to_next_millisecond():
    wall = FakeWall(3_000)
    clock = HybridLogicalClock(wall, last=stamp(3_000, LOGICAL_MASK - 1))
    s = clock.now()
    assert s == stamp(3_001, 0)
    assert clock.now() == stamp(3_001, 1)


def test_logical_overflow_after_a_full_millisecond_of_events():
    wall = FakeWall(3_000)
    clock = HybridLogicalClock(wall)
    stamps = [clock.now() for _ in range(LOGICAL_MASK + 2)]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert all(hlc_logical(s) < LOGICAL_MASK for s in stamps)
    in_first_ms = [s for s in stamps if hlc_physical_ms(s) == 3_000]
    assert len(in_first_ms) == LOGICAL_MASK  # logicals 0 .. MASK-1
    assert stamps[LOGICAL_MASK] == stamp(3_001, 0)
    assert stamps[LOGICAL_MASK + 1] == stamp(3_001, 1)
    # once the wall clock passes the borrowed millisecond, stamps are plain wall time again
    wall.ms = 3_002
    assert clock.now() == stamp(3_002)


def test_update_exceeds_remote_and_local():
    wall = FakeWall(1_000)
    clock = HybridLogicalClock(wall)
    local = clock.now()
    remote = stamp(9_000, 17)  # a node whose clock runs ahead
    merged = clock.update(remote)
    assert merged > remote
    assert merged > local
    assert merged == stamp(9_000, 18)
    assert clock.now() > merged


def test_update_with_older_remote_still_advances_local():
    wall = FakeWall(5_000)
    clock = HybridLogicalClock(wall)
    local = clock.now()
    merged = clock.update(stamp(100, 3))
    assert merged > local
    assert merged > stamp(100, 3)


def test_update_with_remote_at_logical_limit_borrows_next_ms():
    wall = FakeWall(1_000)
    clock = HybridLogicalClock(wall)
    remote = stamp(2_000, LOGICAL_MASK - 1)
    merged = clock.update(remote)
    assert merged > remote
    assert merged == stamp(2_001, 0)
    # a remote stamp already holding the maximal logical value is also passed
    merged2 = clock.update(stamp(3_000, LOGICAL_MASK))
    assert merged2 == stamp(3_001, 0)


def test_a_remote_stamp_far_ahead_is_clamped_counted_and_reported():
    """Defect 10: one node 300 s ahead pulled everyone's clock 300 s into the future."""
    wall = FakeWall(1_000_000)
    clock = HybridLogicalClock(wall, max_offset_ms=500)
    merged, ahead = clock.merge(stamp(1_300_000, 9))
    assert merged == stamp(1_000_500, 1)
    assert ahead == pytest.approx(300.0)
    assert clock.clamped == 1
    wall.ms += 10
    assert hlc_physical_ms(clock.now()) <= wall.ms + 500  # local writes stay within the bound


def test_a_remote_stamp_within_the_bound_is_followed():
    wall = FakeWall(1_000_000)
    clock = HybridLogicalClock(wall, max_offset_ms=500)
    assert clock.merge(stamp(1_000_500, 3)) == (stamp(1_000_500, 4), 0.0)
    assert clock.clamped == 0


def test_without_a_bound_the_clock_follows_any_remote_stamp():
    clock = HybridLogicalClock(FakeWall(1_000_000))
    assert clock.update(stamp(1_300_000)) == stamp(1_300_000, 1)
    assert clock.clamped == 0


@given(st.integers(0, 2**40), st.integers(0, 2**47), st.integers(0, 5000), st.integers(0, 2**47))
def test_merge_never_goes_further_ahead_than_the_bound_nor_backwards(wall_ms, last, bound, remote):
    clock = HybridLogicalClock(FakeWall(wall_ms), last=last, max_offset_ms=bound)
    merged, ahead = clock.merge(remote)
    assert merged > last
    assert merged > min(remote, clamp_remote(remote, wall_ms, bound))
    # never pulled past the bound by this stamp: only an earlier state (last) may already be ahead
    assert hlc_physical_ms(merged) <= max(wall_ms + bound, hlc_physical_ms(last)) + 1
    assert (ahead > bound / 1000) == (hlc_physical_ms(remote) > wall_ms + bound)
    assert clock.clamped == (1 if ahead else 0)


def test_now_is_unique_across_threads():
    wall = FakeWall(1_000)  # standing wall clock: every stamp comes from the counter
    clock = HybridLogicalClock(wall)
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(2_000):
            out.append(clock.now())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [s for out in per_thread for s in out]
    assert len(set(every)) == len(every)
    for out in per_thread:
        assert out == sorted(out)


# --- HybridLogicalClock: properties ----------------------------------------------

# One step of a run: ("now", new wall ms) or ("update", new wall ms, remote stamp).
wall_ms = st.integers(0, 2**40)
stamps = st.builds(stamp, st.integers(0, 2**40), st.integers(0, LOGICAL_MASK))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("now"), wall_ms),
        st.tuples(st.just("update"), wall_ms, stamps),
    ),
    min_size=1,
    max_size=40,
)


@given(wall_ms, st.one_of(st.just(0), stamps), steps)
def test_hlc_is_strictly_monotonic_whatever_the_wall_does(start, initial, run):
    """Wall clock jumping back and forth or standing still; remote stamps ahead or behind."""
    wall = FakeWall(start)
    clock = HybridLogicalClock(wall, last=initial)
    previous = clock.last
    max_seen_ms = max(start, hlc_physical_ms(initial))
    for step in run:
        wall.ms = step[1]
        max_seen_ms = max(max_seen_ms, wall.ms)
        if step[0] == "now":
            s = clock.now()
        else:
            remote = step[2]
            s = clock.update(remote)
            assert s > remote, "update() must pass the remote stamp"
            max_seen_ms = max(max_seen_ms, hlc_physical_ms(remote))
        assert s > previous, "stamps must strictly increase"
        assert clock.last == s
        # never behind the current wall clock ...
        assert hlc_physical_ms(s) >= wall.ms
        # ... and never further ahead of anything seen than one borrowed millisecond
        # (that needs 65535 events in one millisecond; runs here are far shorter)
        assert hlc_physical_ms(s) <= max_seen_ms + 1
        assert hlc_logical(s) < LOGICAL_MASK
        previous = s


@given(wall_ms, st.lists(st.integers(0, 5), min_size=1, max_size=60))
def test_hlc_equals_wall_time_when_wall_only_moves_forward(start, increments):
    wall = FakeWall(start)
    clock = HybridLogicalClock(wall)
    previous = clock.last
    for inc in increments:
        wall.ms += inc
        s = clock.now()
        assert s > previous
        assert hlc_physical_ms(s) == wall.ms  # close to (here: exactly) wall time
        if inc:
            assert hlc_logical(s) == 0
        previous = s


# --- VersionVector: examples -----------------------------------------------------

def test_missing_entries_count_as_zero():
    vv = VersionVector({"a": 2})
    assert vv["a"] == 2
    assert vv["zzz"] == 0
    assert "a" in vv
    assert "zzz" not in vv
    assert len(vv) == 1
    assert list(vv) == ["a"]
    assert vv.to_dict() == {"a": 2}


def test_constructed_from_pairs():
    assert VersionVector([("a", 1), ("b", 2)]) == VersionVector({"a": 1, "b": 2})


def test_zero_entries_are_ignored_for_equality_and_hash():
    with_zero = VersionVector({"a": 1, "b": 0})
    without = VersionVector({"a": 1})
    assert with_zero == without
    assert hash(with_zero) == hash(without)
    assert len(with_zero) == 1
    assert "b" not in with_zero
    assert with_zero.compare(without) is Ordering.EQUAL
    assert VersionVector() == VersionVector({"x": 0, "y": 0})
    # also against plain mappings carrying zeros
    assert without == {"a": 1, "b": 0}
    assert without != {"a": 2}
    assert without.compare({"a": 1, "c": 0}) is Ordering.EQUAL


def test_equality_with_unrelated_type_is_not_implemented():
    assert VersionVector({"a": 1}) != [("a", 1)]
    assert VersionVector() != 0


@pytest.mark.parametrize("bad", [-1, -100, 1.0, 0.5, "1", None, True, False, [1]])
def test_bad_counters_are_rejected(bad):
    with pytest.raises(ValueError):
        VersionVector({"a": bad})
    with pytest.raises(ValueError):
        VersionVector([("a", bad)])


def test_increment_new_and_existing_entry():
    vv = VersionVector()
    one = vv.increment("a")
    assert one == {"a": 1}
    two = one.increment("a").increment("b")
    assert two == {"a": 2, "b": 1}
    assert vv == VersionVector()  # immutable: the original is untouched
    assert one == {"a": 1}


def test_compare_examples():
    a = VersionVector({"n1": 2, "n2": 1})
    assert a.compare({"n1": 2, "n2": 1}) is Ordering.EQUAL
    assert a.compare({"n1": 3, "n2": 1}) is Ordering.BEFORE
    assert a.compare({"n1": 1}) is Ordering.AFTER
    assert a.compare({"n1": 1, "n3": 1}) is Ordering.CONCURRENT
    assert a.dominates({"n1": 1})
    assert a.dominates(a)
    assert not a.descends_strictly(a)
    assert a.descends_strictly({"n2": 1})
    assert not a.dominates({"n3": 1})


def test_merge_example_is_pointwise_max():
    a = VersionVector({"x": 3, "y": 1})
    b = VersionVector({"y": 4, "z": 2})
    assert a.merge(b) == {"x": 3, "y": 4, "z": 2}
    assert a.merge({"x": 0}) == a


def test_repr_is_short_and_sorted():
    vv = VersionVector({"bbbbbbbbbbbb": 2, "aaaaaaaaaaaa": 1})
    assert repr(vv) == "VV(aaaaaaaa:1, bbbbbbbb:2)"


def test_version_vectors_are_usable_as_dict_keys():
    seen = {VersionVector({"a": 1}): "x"}
    assert seen[VersionVector({"a": 1, "b": 0})] == "x"


# --- VersionVector: properties ---------------------------------------------------

NODES = ("n1", "n2", "n3", "n4")
# small counters over few nodes, so equal, ordered and concurrent pairs are all common;
# a zero counter leaves the node out
vvs = st.lists(st.integers(0, 3), min_size=len(NODES), max_size=len(NODES)).map(
    lambda counts: VersionVector(dict(zip(NODES, counts, strict=True))))


def pointwise(a, b):
    """Reference ordering computed from the definition."""
    keys = set(a) | set(b)
    le = all(a.get(k, 0) <= b.get(k, 0) for k in keys)
    ge = all(a.get(k, 0) >= b.get(k, 0) for k in keys)
    if le and ge:
        return Ordering.EQUAL
    if le:
        return Ordering.BEFORE
    if ge:
        return Ordering.AFTER
    return Ordering.CONCURRENT


SWAPPED = {
    Ordering.EQUAL: Ordering.EQUAL,
    Ordering.BEFORE: Ordering.AFTER,
    Ordering.AFTER: Ordering.BEFORE,
    Ordering.CONCURRENT: Ordering.CONCURRENT,
}


@given(vvs, vvs)
def test_compare_is_a_partial_order(a, b):
    # reflexive
    assert a.compare(a) is Ordering.EQUAL
    assert a.compare(VersionVector(a.to_dict())) is Ordering.EQUAL
    assert a.dominates(a) and not a.descends_strictly(a)
    # agrees with the pointwise definition, whether ``other`` is a vector or a plain dict
    ab = a.compare(b)
    assert ab is pointwise(a.to_dict(), b.to_dict())
    assert a.compare(b.to_dict()) is ab
    # consistent when swapped: BEFORE <-> AFTER, EQUAL and CONCURRENT symmetric
    assert b.compare(a) is SWAPPED[ab]
    # EQUAL exactly when the vectors are equal (and then they hash alike)
    assert (ab is Ordering.EQUAL) == (a == b)
    if a == b:
        assert hash(a) == hash(b)
    # antisymmetric
    if a.dominates(b) and b.dominates(a):
        assert a == b
    # dominates / descends_strictly are the AFTER-or-EQUAL / AFTER views of compare
    assert a.dominates(b) == (ab in (Ordering.AFTER, Ordering.EQUAL))
    assert a.descends_strictly(b) == (ab is Ordering.AFTER)


# plain maps as items carry them: a zero counter may be there or not
plain = st.dictionaries(st.sampled_from(NODES), st.integers(0, 3), max_size=len(NODES))


@given(plain, plain)
def test_compare_vectors_on_plain_maps_agrees_with_the_definition(a, b):
    assert compare_vectors(a, b) is pointwise(a, b)
    assert compare_vectors(a, b) is VersionVector(a).compare(b)
    assert compare_vectors(b, a) is SWAPPED[compare_vectors(a, b)]


@given(vvs, vvs, vvs)
def test_dominates_is_transitive(a, b, c):
    # on arbitrary triples, whenever the premise happens to hold
    if a.dominates(b) and b.dominates(c):
        assert a.dominates(c)
    if a.descends_strictly(b) and b.descends_strictly(c):
        assert a.descends_strictly(c)
    # on chains built so that the premise always holds: low <= mid <= high
    low = c
    mid = low.merge(b)
    high = mid.merge(a)
    assert mid.dominates(low) and high.dominates(mid)
    assert high.dominates(low)
    if high != mid and mid != low:
        assert high.descends_strictly(low)


@given(vvs, vvs, vvs)
def test_merge_is_a_join(a, b, c):
    m = a.merge(b)
    # commutative, associative, idempotent
    assert m == b.merge(a)
    assert m.merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(VersionVector()) == a
    assert a.merge(b.to_dict()) == m
    # the pointwise maximum, which dominates both inputs ...
    assert set(m) == set(a) | set(b)
    for node in NODES:
        assert m[node] == max(a[node], b[node])
    assert m.dominates(a) and m.dominates(b)
    if a.compare(b) is Ordering.CONCURRENT:
        assert m.descends_strictly(a) and m.descends_strictly(b)
    # ... and is the least such vector
    if c.dominates(a) and c.dominates(b):
        assert c.dominates(m)
    if a.dominates(b):
        assert m == a
    # inputs are not modified
    assert a == VersionVector(a.to_dict())


@given(vvs, vvs, st.sampled_from([*NODES, "fresh-node"]), st.sampled_from(NODES))
def test_increment_strictly_dominates(a, b, node, other):
    bumped = a.increment(node)
    assert bumped.compare(a) is Ordering.AFTER
    assert a.compare(bumped) is Ordering.BEFORE
    assert bumped.descends_strictly(a)
    assert not a.dominates(bumped)
    assert bumped[node] == a[node] + 1
    assert all(bumped[n] == a[n] for n in NODES if n != node)
    # two writers bumping their own entries on a common base are concurrent
    base = a.merge(b)
    if node != other:
        left, right = base.increment(node), base.increment(other)
        assert left.compare(right) is Ordering.CONCURRENT
        assert left.merge(right).descends_strictly(left)


@given(vvs, st.sets(st.sampled_from(["z1", "z2"])))
def test_zero_entries_never_matter(a, zero_nodes):
    padded = {**a.to_dict(), **dict.fromkeys(zero_nodes, 0)}
    b = VersionVector(padded)
    assert a == b
    assert hash(a) == hash(b)
    assert a == padded
    assert a.compare(b) is Ordering.EQUAL
    assert a.compare(padded) is Ordering.EQUAL
    assert len(b) == len(a)
    assert all(v > 0 for v in b.to_dict().values())
    assert not any(n in b for n in zero_nodes)


bad_counters = st.one_of(
    st.integers(max_value=-1),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@given(st.sampled_from(NODES), bad_counters)
def test_negative_or_non_int_counters_are_rejected(node, value):
    with pytest.raises(ValueError):
        VersionVector({node: value})
    with pytest.raises(ValueError):
        VersionVector([("ok", 1), (node, value)])


# -- a node measuring its own clock against the medium's (self-fencing) ------------------------------------------
def test_own_clock_within_the_bound_plus_the_readings_error_is_not_fenced() -> None:
    assert own_clock_offset(1000.4, 1000.0, 0.0, 0.5) is None
    assert own_clock_offset(999.6, 1000.0, 0.0, 0.5) is None
    assert own_clock_offset(1001.0, 1000.0, 0.51, 0.5) is None  # 1.0 s off, but the reference is known to ±0.51 s


def test_own_clock_past_the_bound_is_reported_with_its_sign() -> None:
    assert own_clock_offset(1300.0, 1000.0, 0.01, 0.5) == pytest.approx(300.0)
    assert own_clock_offset(700.0, 1000.0, 0.01, 0.5) == pytest.approx(-300.0)
    assert own_clock_offset(1000.6, 1000.0, 0.0, 0.5) == pytest.approx(0.6)
    assert own_clock_offset(1000.6, 1000.0, -5.0, 0.5) == pytest.approx(0.6)  # a negative error counts as none


def test_the_refusal_is_one_line_naming_the_offset_and_the_setting() -> None:
    line = clock_refusal(300.04, 0.5)
    assert line == ("this node's clock is +300.0 s off the mesh's (max_clock_offset_seconds 0.5): fix the clock; "
                    "writes refused")
    assert "-12.5 s" in clock_refusal(-12.5, 0.5) and "\n" not in line


@given(st.floats(-1e6, 1e6), st.floats(0, 10), st.floats(0.01, 5))
def test_own_clock_offset_is_fenced_exactly_outside_the_window(offset: float, error: float, bound: float) -> None:
    got = own_clock_offset(5000.0 + offset, 5000.0, error, bound)
    if abs(offset) > bound + error + 1e-6:
        assert got is not None and got == pytest.approx(offset, abs=1e-6)
    elif abs(offset) < bound + error - 1e-6:
        assert got is None


def test_a_peer_clock_sample_is_the_answer_stamp_against_the_middle_of_the_round_trip() -> None:
    assert peer_clock_sample(1000.0, 0.2, 1300.1) == pytest.approx((300.0, 0.1))
    assert peer_clock_sample(1000.0, -0.1, 999.0) == (-1.0, 0.0)  # a round trip is never negative


def test_the_mesh_reference_is_the_median_vote_and_an_even_vote_goes_to_the_earlier_clock() -> None:
    assert mesh_clock_reference([], voting=True) is None  # alone: nothing to compare with
    # two workers 300 s apart: the one ahead sees the mesh 300 s behind it (fenced), the other sees itself right
    assert mesh_clock_reference([(-300.0, 0.01)], voting=True) == (-300.0, 0.01)
    assert mesh_clock_reference([(300.0, 0.01)], voting=True) == (0.0, 0.0)
    # three workers, one skewed: the majority wins for everyone
    assert mesh_clock_reference([(-300.0, 0.01), (-300.2, 0.02)], voting=True) == (-300.0, 0.01)
    assert mesh_clock_reference([(0.1, 0.01), (300.0, 0.02)], voting=True) == (0.1, 0.01)
    # a client does not vote: it measures itself against the workers (lower median of two: the earlier clock)
    assert mesh_clock_reference([(-300.0, 0.01), (0.0, 0.01)], voting=False) == (-300.0, 0.01)
    assert mesh_clock_reference([(0.0, 0.01), (300.0, 0.01)], voting=False) == (0.0, 0.01)
