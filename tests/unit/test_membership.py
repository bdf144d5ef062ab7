"""Failure detector and node table (mesh_core/membership.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core.membership import Change, DetectorConfig, MembershipTable, judge, preferred_hub, sweeper
from mesh_core.model import NodeInfo, NodeRole, NodeStatus, NodeType

CFG = DetectorConfig(suspect_after=2.0, dead_after=5.0)


def rec(node_id: str = "a", *, last_seen: float = 0.0, incarnation: int = 1, left: bool = False,
        seq: int | None = None, **extra) -> NodeInfo:
    """A record; by default each distinct ``last_seen`` is a distinct heartbeat (sequence = its milliseconds)."""
    return NodeInfo(node_id=node_id, name=f"name-{node_id}", last_seen=last_seen, incarnation=incarnation,
                    left=left, heartbeat_seq=round(last_seen * 1000) if seq is None else seq, **extra)


def transitions(changes: list[Change]) -> list[tuple[str, NodeStatus | None, NodeStatus]]:
    return [(c.node.node_id, c.old, c.new) for c in changes]


# --- DetectorConfig and judge -----------------------------------------------------

@pytest.mark.parametrize(("suspect", "dead"), [(1.0, 1.0), (0.001, 100.0), (2, 3)])
def test_detector_config_accepts_ordered_positive_thresholds(suspect, dead):
    cfg = DetectorConfig(suspect, dead)
    assert (cfg.suspect_after, cfg.dead_after) == (suspect, dead)


@pytest.mark.parametrize(("suspect", "dead"), [(0, 5), (-1, 5), (6, 5), (0, 0), (-2, -1)])
def test_detector_config_rejects_bad_thresholds(suspect, dead):
    with pytest.raises(ValueError, match="suspect_after"):
        DetectorConfig(suspect, dead)


def test_detector_config_is_frozen():
    with pytest.raises(AttributeError):
        CFG.suspect_after = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("age", "expected"), [
    (0.0, NodeStatus.ACTIVE),
    (1.999, NodeStatus.ACTIVE),
    (2.0, NodeStatus.SUSPECT),  # thresholds are inclusive
    (4.999, NodeStatus.SUSPECT),
    (5.0, NodeStatus.DEAD),
    (1e9, NodeStatus.DEAD),
    (-3.0, NodeStatus.ACTIVE),  # a heartbeat "from the future" is fresh, not an error
])
def test_judge_thresholds(age, expected):
    assert judge(last_seen=100.0, left=False, now=100.0 + age, cfg=CFG) is expected


@pytest.mark.parametrize("age", [0.0, 3.0, 100.0])
def test_judge_left_wins_over_age(age):
    assert judge(last_seen=10.0, left=True, now=10.0 + age, cfg=CFG) is NodeStatus.LEFT


def test_judge_with_equal_thresholds_skips_suspect():
    cfg = DetectorConfig(3.0, 3.0)
    assert judge(0.0, False, 2.9, cfg) is NodeStatus.ACTIVE
    assert judge(0.0, False, 3.0, cfg) is NodeStatus.DEAD


@given(st.floats(0.01, 100), st.floats(0, 100), st.floats(-1e6, 1e6), st.floats(0, 1e3))
def test_judge_matches_the_thresholds(suspect, extra, last_seen, age):
    cfg = DetectorConfig(suspect, suspect + extra)
    status = judge(last_seen, False, last_seen + age, cfg)
    real_age = (last_seen + age) - last_seen  # what judge sees after float rounding
    if real_age >= cfg.dead_after:
        assert status is NodeStatus.DEAD
    elif real_age >= cfg.suspect_after:
        assert status is NodeStatus.SUSPECT
    else:
        assert status is NodeStatus.ACTIVE


# --- MembershipTable.observe ------------------------------------------------------

def test_first_sighting_is_a_joined_change():
    table = MembershipTable(CFG)
    changes = table.observe([rec("a", last_seen=10.0), rec("b", last_seen=10.0)], now=10.5)
    assert transitions(changes) == [("a", None, NodeStatus.ACTIVE), ("b", None, NodeStatus.ACTIVE)]
    assert all(c.joined for c in changes)
    assert len(table) == 2
    assert table.status_of("a") is NodeStatus.ACTIVE
    assert table.status_of("zzz") is None
    assert table.get("zzz") is None
    assert table.get("a").info.name == "name-a"
    assert {n.node_id for n in table.active()} == {"a", "b"}
    assert {m.info.node_id for m in table.members()} == {"a", "b"}


def test_first_sighting_of_an_old_record_joins_with_its_judged_status():
    table = MembershipTable(CFG)
    changes = table.observe([rec("a", last_seen=0.0), rec("b", last_seen=0.0, left=True)], now=3.0)
    assert transitions(changes) == [("a", None, NodeStatus.SUSPECT), ("b", None, NodeStatus.LEFT)]
    assert table.active() == []


def test_no_change_reported_when_nothing_changes():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    assert table.observe([rec("a", last_seen=1.0)], now=1.0) == []
    assert table.tick(1.5) == []


def test_active_suspect_dead_via_tick():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    assert table.tick(1.9) == []
    changes = table.tick(2.0)
    assert transitions(changes) == [("a", NodeStatus.ACTIVE, NodeStatus.SUSPECT)]
    assert not changes[0].joined
    assert table.tick(4.0) == []
    assert transitions(table.tick(5.0)) == [("a", NodeStatus.SUSPECT, NodeStatus.DEAD)]
    assert table.tick(50.0) == []
    assert table.status_of("a") is NodeStatus.DEAD
    assert table.active() == []


def test_active_straight_to_dead_when_time_jumps():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    assert transitions(table.tick(9.0)) == [("a", NodeStatus.ACTIVE, NodeStatus.DEAD)]


def test_active_suspect_dead_via_observe_with_unchanged_records():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    assert transitions(table.observe([rec("a", last_seen=0.0)], now=2.5)) == [
        ("a", NodeStatus.ACTIVE, NodeStatus.SUSPECT)]
    assert transitions(table.observe([rec("a", last_seen=0.0)], now=6.0)) == [
        ("a", NodeStatus.SUSPECT, NodeStatus.DEAD)]


def test_fresh_heartbeat_brings_a_suspect_back():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    table.tick(3.0)
    assert table.status_of("a") is NodeStatus.SUSPECT
    changes = table.observe([rec("a", last_seen=3.0)], now=3.1)
    assert transitions(changes) == [("a", NodeStatus.SUSPECT, NodeStatus.ACTIVE)]


def test_older_heartbeat_of_the_same_incarnation_does_not_age_the_node():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=10.0)], now=10.0)
    # a lagging snapshot still carries an older heartbeat
    assert table.observe([rec("a", last_seen=1.0, queued=7)], now=10.5) == []
    member = table.get("a")
    assert member.status is NodeStatus.ACTIVE
    assert member.info.last_seen == 10.0
    assert member.info.queued == 7  # the rest of the record is still taken


def test_record_updates_are_kept():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    table.observe([rec("a", last_seen=1.0, queued=3, capacity=9)], now=1.0)
    info = table.get("a").info
    assert (info.queued, info.capacity, info.last_seen) == (3, 9, 1.0)


def test_graceful_leave():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    changes = table.observe([rec("a", last_seen=1.0, left=True)], now=1.0)
    assert transitions(changes) == [("a", NodeStatus.ACTIVE, NodeStatus.LEFT)]
    assert table.active() == []
    # left stays left as time passes: it never turns suspect or dead
    assert table.tick(100.0) == []
    assert table.status_of("a") is NodeStatus.LEFT


def test_leave_sticks_against_a_late_heartbeat_of_the_same_incarnation():
    """Module contract: "a graceful leave sticks until the node comes back with a higher incarnation"."""
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    table.observe([rec("a", last_seen=1.0, left=True)], now=1.0)
    # a heartbeat written just before the leave, delivered after it
    late = table.observe([rec("a", last_seen=0.9)], now=1.2)
    assert late == []
    assert table.status_of("a") is NodeStatus.LEFT
    # nor does a record of the same life that simply lacks the left flag
    again = table.observe([rec("a", last_seen=1.5)], now=1.6)
    assert again == []
    assert table.status_of("a") is NodeStatus.LEFT


def test_rejoin_with_higher_incarnation_after_dead():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0, incarnation=1)], now=0.0)
    table.tick(10.0)
    assert table.status_of("a") is NodeStatus.DEAD
    changes = table.observe([rec("a", last_seen=10.0, incarnation=2)], now=10.1)
    assert transitions(changes) == [("a", None, NodeStatus.ACTIVE)]
    assert changes[0].joined
    assert table.get("a").info.incarnation == 2
    assert table.status_of("a") is NodeStatus.ACTIVE


def test_rejoin_with_higher_incarnation_after_leave():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    table.observe([rec("a", last_seen=1.0, left=True)], now=1.0)
    changes = table.observe([rec("a", last_seen=3.0, incarnation=2)], now=3.0)
    assert transitions(changes) == [("a", None, NodeStatus.ACTIVE)]


def test_higher_incarnation_replaces_record_even_with_older_last_seen():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=10.0, incarnation=1)], now=10.0)
    changes = table.observe([rec("a", last_seen=9.5, incarnation=2)], now=10.0)
    assert transitions(changes) == [("a", None, NodeStatus.ACTIVE)]
    assert table.get("a").info.last_seen == 9.5


def test_lower_incarnation_is_a_stale_rumour():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=10.0, incarnation=3)], now=10.0)
    # an old "dead"/"left" view of a previous life must not override the new one
    assert table.observe([rec("a", last_seen=0.0, incarnation=2, left=True)], now=10.0) == []
    assert table.observe([rec("a", last_seen=99.0, incarnation=1)], now=10.0) == []
    member = table.get("a")
    assert member.status is NodeStatus.ACTIVE
    assert member.info.incarnation == 3
    assert member.info.last_seen == 10.0


def test_stale_rumour_does_not_make_the_node_forgotten():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=10.0, incarnation=3)], now=10.0)
    table.observe([rec("a", last_seen=0.0, incarnation=1)], now=11.0, complete=True)
    assert table.get("a") is not None


def test_complete_snapshot_forgets_missing_nodes():
    table = MembershipTable(CFG)
    table.observe([rec("a"), rec("b"), rec("c")], now=0.0)
    changes = table.observe([rec("b")], now=0.5)
    assert changes == []
    assert [m.info.node_id for m in table.members()] == ["b"]
    assert table.get("a") is None and table.status_of("c") is None
    # forgotten nodes come back as newly joined
    assert transitions(table.observe([rec("a", last_seen=1.0)], now=1.0, complete=False)) == [
        ("a", None, NodeStatus.ACTIVE)]


def test_partial_snapshot_keeps_missing_nodes():
    table = MembershipTable(CFG)
    table.observe([rec("a"), rec("b")], now=0.0)
    table.observe([rec("b", last_seen=1.0)], now=1.0, complete=False)
    assert {m.info.node_id for m in table.members()} == {"a", "b"}


def test_empty_complete_snapshot_forgets_everyone():
    table = MembershipTable(CFG)
    table.observe([rec("a"), rec("b")], now=0.0)
    assert table.observe([], now=1.0) == []
    assert len(table) == 0


def test_observe_accepts_any_iterable():
    table = MembershipTable(CFG)
    changes = table.observe((rec(i) for i in "xyz"), now=0.0)
    assert [c.node.node_id for c in changes] == ["x", "y", "z"]


# --- liveness by observation --------------------------------------------------------

def test_a_stamp_from_the_future_is_fresh_at_first_sight_and_then_ages_on_the_readers_clock():
    """Defect 10: a node whose clock runs 300 s ahead, once killed, was never declared dead."""
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=300.0, seq=7)], now=0.0)
    assert table.status_of("a") is NodeStatus.ACTIVE
    table.observe([rec("a", last_seen=300.0, seq=7)], now=2.0)
    assert table.status_of("a") is NodeStatus.SUSPECT
    assert transitions(table.observe([rec("a", last_seen=300.0, seq=7)], now=5.0)) == [
        ("a", NodeStatus.SUSPECT, NodeStatus.DEAD)]


def test_a_changing_sequence_keeps_a_node_alive_whatever_its_stamps_say():
    """Defect 10: stamps 300 s in the past from a live node must not make it dead."""
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=-300.0, seq=0)], now=0.0)
    assert table.status_of("a") is NodeStatus.DEAD  # at first sight the stamp is all there is
    for beat in range(1, 20):
        table.observe([rec("a", last_seen=-300.0, seq=beat)], now=float(beat))
        assert table.status_of("a") is NodeStatus.ACTIVE
    table.observe([rec("a", last_seen=-300.0, seq=19)], now=21.0)
    assert table.status_of("a") is NodeStatus.SUSPECT


def test_first_sight_takes_the_age_on_the_mediums_clock():
    """A one-shot reader sees each record once: the medium's clock tells it which are dead."""
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=99.5, seq=1), rec("b", last_seen=97.0, seq=1),
                   rec("c", last_seen=10.0, seq=1), rec("d", last_seen=400.0, seq=1)], now=5.0, store_now=100.0)
    assert [table.status_of(n) for n in "abcd"] == [NodeStatus.ACTIVE, NodeStatus.SUSPECT, NodeStatus.DEAD,
                                                    NodeStatus.ACTIVE]
    assert table.get("c").beat_at == 5.0 - 2 * CFG.dead_after  # clamped past dead_after


def test_an_unchanged_sequence_with_a_newer_stamp_is_not_a_heartbeat():
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0, seq=1)], now=0.0)
    table.observe([rec("a", last_seen=4.0, seq=1)], now=4.0, store_now=4.0)
    assert table.status_of("a") is NodeStatus.SUSPECT


def test_an_aged_snapshot_judges_every_read_by_the_age_on_the_mediums_clock():
    """Hub media read only the stamps older than their window (younger ones read as the medium's now): the age
    on the medium's one clock counts at every read, whatever the sequence does."""
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=100.0, seq=1)], now=0.0, store_now=100.0, aged=True)
    table.observe([rec("a", last_seen=101.0, seq=1)], now=1.0, store_now=101.0, aged=True)  # fresh: not read
    assert table.status_of("a") is NodeStatus.ACTIVE
    # its stamp read exactly once older than the window: 101.0 → suspect at 103, dead at 106 (the medium's clock)
    table.observe([rec("a", last_seen=101.0, seq=9)], now=2.5, store_now=102.5, aged=True)
    assert table.status_of("a") is NodeStatus.ACTIVE
    table.observe([rec("a", last_seen=101.0, seq=10)], now=3.0, store_now=103.0, aged=True)
    assert table.status_of("a") is NodeStatus.SUSPECT  # a changed sequence is no heartbeat here
    assert table.get("a").info.last_seen == 101.0  # the exact stamp is kept, not the fresh read's now
    assert transitions(table.observe([rec("a", last_seen=101.0, seq=10)], now=6.0, store_now=106.0, aged=True)) == [
        ("a", NodeStatus.SUSPECT, NodeStatus.DEAD)]
    table.observe([rec("a", last_seen=106.5, seq=11)], now=6.5, store_now=106.5, aged=True)
    assert table.status_of("a") is NodeStatus.ACTIVE


def test_own_node_is_never_judged_from_its_record():
    """Defect 7: a node cut off from the medium kept a view in which it was itself dead."""
    table = MembershipTable(CFG, self_id="me")
    table.observe([rec("me", last_seen=0.0, seq=1), rec("b", last_seen=0.0, seq=1)], now=0.0)
    table.observe([rec("me", last_seen=0.0, seq=1), rec("b", last_seen=0.0, seq=1)], now=60.0)
    assert table.status_of("me") is NodeStatus.ACTIVE
    assert table.status_of("b") is NodeStatus.DEAD
    assert transitions(table.set_self_suspect(True, 61.0)) == [("me", NodeStatus.ACTIVE, NodeStatus.SUSPECT)]
    assert table.tick(1000.0) == []
    assert transitions(table.set_self_suspect(False, 1001.0)) == [("me", NodeStatus.SUSPECT, NodeStatus.ACTIVE)]
    table.observe([rec("me", last_seen=0.0, seq=2, left=True)], now=1002.0)
    assert table.status_of("me") is NodeStatus.LEFT


@given(st.lists(st.tuples(st.floats(0, 3), st.booleans(), st.floats(-1e6, 1e6)), min_size=1, max_size=30))
def test_status_depends_only_on_when_the_sequence_changed(steps):
    """Whatever the stamps say, a node is active iff its sequence changed within suspect_after of now."""
    table = MembershipTable(CFG)
    now, seq = 0.0, 0
    table.observe([rec("a", last_seen=0.0, seq=seq)], now=now)
    changed_at = now
    for step, beats, stamp in steps:
        now += step
        if beats:
            seq += 1
            changed_at = now
        table.observe([rec("a", last_seen=stamp, seq=seq)], now=now, store_now=now)
        assert table.status_of("a") is judge(changed_at, False, now, CFG)


# --- properties ------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.floats(0, 4)),
        st.tuples(st.just("heartbeat"), st.sampled_from("abc"), st.floats(-3, 1), st.integers(1, 3),
                  st.booleans()),
    ),
    max_size=30,
)


@given(events)
def test_table_stays_consistent_with_judge(run):
    """After any sequence of heartbeats and ticks, every status is what judge() says of the record."""
    table = MembershipTable(CFG)
    now = 0.0
    for event in run:
        if event[0] == "tick":
            now += event[1]
            changes = table.tick(now)
        else:
            _, node_id, offset, incarnation, left = event
            before = table.get(node_id)
            old_status = before.status if before else None
            old_incarnation = before.info.incarnation if before else None
            changes = table.observe([rec(node_id, last_seen=now + offset, incarnation=incarnation, left=left)],
                                    now=now, complete=False)
            after = table.get(node_id)
            if old_incarnation is not None and incarnation < old_incarnation:
                assert changes == []  # stale rumour ignored
                assert after.info.incarnation == old_incarnation
            elif old_incarnation is None or incarnation > old_incarnation:
                assert len(changes) == 1 and changes[0].joined
            else:
                assert all(c.old is old_status for c in changes)
        for change in changes:
            assert change.old is not change.new
            assert table.status_of(change.node.node_id) is change.new
        for member in table.members():
            assert member.beat_at <= now
            assert member.status is judge(member.beat_at, member.info.left, now, CFG)
        # incarnations never go down
        for member in table.members():
            assert member.info.incarnation >= 1


@given(st.lists(st.floats(0, 3), min_size=1, max_size=20))
def test_without_heartbeats_status_only_gets_worse(steps):
    order = [NodeStatus.ACTIVE, NodeStatus.SUSPECT, NodeStatus.DEAD]
    table = MembershipTable(CFG)
    table.observe([rec("a", last_seen=0.0)], now=0.0)
    now = 0.0
    previous = NodeStatus.ACTIVE
    for step in steps:
        now += step
        for change in table.tick(now):
            assert order.index(change.new) > order.index(change.old)
        current = table.status_of("a")
        assert order.index(current) >= order.index(previous)
        previous = current


# -- who sweeps, who is the preferred memory primary ---------------------------------------------

def _node(node_id: str, node_type: NodeType = NodeType.GENERAL, role: NodeRole = NodeRole.WORKER) -> NodeInfo:
    return NodeInfo(node_id=node_id, name=node_id, node_type=node_type, role=role)


def test_sweeper_is_the_lowest_id_worker_without_a_hub():
    assert sweeper([_node("b"), _node("a"), _node("c")]) == "a"


def test_sweeper_is_the_lowest_id_hub_when_one_is_active():
    hub = NodeType.COORDINATION_HUB
    assert sweeper([_node("a"), _node("z", hub), _node("m")]) == "z"
    assert sweeper([_node("a"), _node("z", hub), _node("y", hub)]) == "y"


def test_clients_never_sweep_and_are_never_preferred():
    hub = NodeType.COORDINATION_HUB
    assert sweeper([_node("0", role=NodeRole.CLIENT), _node("a")]) == "a"
    assert sweeper([_node("0", hub, NodeRole.CLIENT), _node("a")]) == "a"
    assert preferred_hub([_node("0", hub, NodeRole.CLIENT), _node("a")]) is None
    assert sweeper([_node("0", role=NodeRole.CLIENT)]) is None
    assert sweeper([]) is None


def test_preferred_hub_is_none_without_a_hub():
    assert preferred_hub([_node("a"), _node("b", NodeType.LANGUAGE_EXPERT)]) is None
    assert preferred_hub([_node("b", NodeType.COORDINATION_HUB), _node("a")]) == "b"


@given(st.lists(st.tuples(st.text("0123456789abcdef", min_size=1, max_size=4),
                          st.sampled_from(list(NodeType)), st.sampled_from(list(NodeRole))),
                max_size=8, unique_by=lambda row: row[0]))
def test_sweeper_is_a_worker_and_a_hub_whenever_one_is_active(rows):
    nodes = [_node(i, t, r) for i, t, r in rows]
    chosen = sweeper(nodes)
    workers = [n for n in nodes if n.role is NodeRole.WORKER]
    if not workers:
        assert chosen is None
        return
    pick = next(n for n in workers if n.node_id == chosen)
    hubs = [n for n in workers if n.node_type is NodeType.COORDINATION_HUB]
    assert pick.node_type is (NodeType.COORDINATION_HUB if hubs else pick.node_type)
    assert chosen == min(n.node_id for n in (hubs or workers))
    assert sweeper(list(reversed(nodes))) == chosen  # order of the view does not matter


@given(dead_after=st.floats(0.05, 60.0), now=st.floats(1.0, 1e7), past=st.floats(0.001, 1e5))
def test_an_aged_record_past_dead_after_is_dead_whatever_the_clocks(dead_after: float, now: float,
                                                                      past: float) -> None:
    # A hub medium's reader clamps ages; a clamp at exactly dead_after could round below it (stuck suspect).
    cfg = DetectorConfig(suspect_after=dead_after / 2, dead_after=dead_after)
    table = MembershipTable(cfg)
    store_now = 1_700_000_000.0
    table.observe([rec("a", last_seen=store_now)], now=now, store_now=store_now, aged=True)
    later = store_now + dead_after + past
    table.observe([rec("a", last_seen=store_now)], now=now + dead_after + past, store_now=later, aged=True)
    assert table.status_of("a") is NodeStatus.DEAD


def test_a_node_getting_busy_is_news_and_its_load_wandering_within_a_band_is_not() -> None:
    from mesh_core.backends.shared import news_of

    idle = NodeInfo(node_id="a", name="a", capacity=100)
    busy = replace(idle, running=30, queued=2)
    assert news_of(busy) != news_of(idle)  # idle → busy: every reader hears it at its next read
    assert news_of(replace(busy, running=31)) == news_of(busy)  # same tenth of capacity: a gauge
    assert news_of(replace(busy, running=45)) != news_of(busy)  # another tenth: news
    assert news_of(replace(busy, running=0, queued=0)) == news_of(idle)  # back to idle
