"""The SWIM failure detector in a deterministic simulated network (in-memory delivery, seeded loss and delay)."""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh_core.membership import Change
from mesh_core.model import NodeInfo, NodeStatus
from mesh_core.swim import (
    Ack,
    Gossip,
    Kind,
    Message,
    Ping,
    PingReq,
    SwimConfig,
    SwimNode,
    Sync,
    Update,
    retransmit_limit,
)

CFG = SwimConfig.from_timeouts(suspect_after=2.0, node_timeout=3.0)  # the mesh's defaults
STEP = 0.01


def addr_of(i: int) -> str:
    return f"10.0.0.{i}:7070"


def info_of(i: int, life: int = 1) -> NodeInfo:
    return NodeInfo(node_id=f"n{i}", name=f"node-{i}", incarnation=life)


@dataclass
class Sim:
    """Nodes exchanging messages through an in-memory network on one simulated clock."""

    seed: int
    loss: float = 0.0
    delay: tuple[float, float] = (0.001, 0.01)
    cfg: SwimConfig = CFG
    now: float = 0.0
    nodes: dict[str, SwimNode] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # killed or paused: no ticks, messages to them lost
    slow: dict[str, float] = field(default_factory=dict)  # extra delay on all a node sends and receives
    log: list[tuple[float, str, Change]] = field(default_factory=list)
    killed_at: dict[str, float] = field(default_factory=dict)
    cut: set[frozenset[str]] = field(default_factory=set)  # address pairs that cannot reach each other

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._wire: list[tuple[float, int, Message]] = []
        self._count = itertools.count()

    def add(self, i: int, seeds: tuple[int, ...] = (0,), life: int = 1) -> SwimNode:
        node = SwimNode(info_of(i, life), addr_of(i), self.cfg, random.Random(self.rng.random()),
                        seeds=[addr_of(s) for s in seeds if s != i], now=self.now)
        self.nodes[addr_of(i)] = node
        self.down.discard(addr_of(i))
        return node

    def node(self, i: int) -> SwimNode:
        return self.nodes[addr_of(i)]

    def send(self, sender: str, messages: list[Message]) -> None:
        for message in messages:
            if self.rng.random() < self.loss or frozenset((sender, message.to)) in self.cut:
                continue
            delay = self.rng.uniform(*self.delay) + self.slow.get(sender, 0.0) + self.slow.get(message.to, 0.0)
            heapq.heappush(self._wire, (self.now + delay, next(self._count), message))

    def _collect(self, addr: str) -> None:
        for change in self.nodes[addr].take_changes():
            self.log.append((self.now, addr, change))

    def step(self) -> None:
        self.now = round(self.now + STEP, 6)
        while self._wire and self._wire[0][0] <= self.now:
            _, _, message = heapq.heappop(self._wire)
            if message.to in self.down or message.to not in self.nodes:
                continue
            self.send(message.to, self.nodes[message.to].receive(message, self.now))
            self._collect(message.to)
        for addr, node in self.nodes.items():
            if addr not in self.down:
                self.send(addr, node.tick(self.now))
                self._collect(addr)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step()

    def run_until(self, holds: object, deadline: float) -> float:
        """Step until ``holds()`` is true; returns the simulated seconds it took (fails past ``deadline``)."""
        assert callable(holds)
        start = self.now
        while not holds():
            assert self.now - start < deadline, f"not within {deadline} simulated seconds"
            self.step()
        return self.now - start

    def live(self) -> list[SwimNode]:
        return [node for addr, node in self.nodes.items() if addr not in self.down]

    def kill(self, i: int) -> None:
        self.down.add(addr_of(i))
        self.killed_at[f"n{i}"] = self.now

    def partition(self, side: set[int]) -> None:
        self.cut = {frozenset((addr_of(a), addr)) for a in side for addr in self.nodes if addr_of(a) != addr
                    and int(addr.split(".")[3].split(":")[0]) not in side}

    def everyone_sees(self, node_id: str, status: NodeStatus) -> bool:
        return all(n.status_of(node_id) is status for n in self.live() if n.node_id != node_id)

    def false_deaths(self) -> list[tuple[float, str, str]]:
        """(time, observer, node) for every DEAD said of a node that was not killed before that time."""
        return [(t, observer, c.node.node_id) for t, observer, c in self.log
                if c.new is NodeStatus.DEAD and not (c.node.node_id in self.killed_at
                                                     and self.killed_at[c.node.node_id] <= t)]


def mesh(size: int, seed: int, **options: object) -> Sim:
    """A mesh of ``size`` nodes joined through node 0, all seeing each other active."""
    sim = Sim(seed, **options)  # type: ignore[arg-type]
    for i in range(size):
        sim.add(i)
    everyone = {f"n{i}" for i in range(size)}
    alive = (NodeStatus.ACTIVE, NodeStatus.SUSPECT)  # under heavy loss some suspicion is always on somewhere
    sim.run_until(lambda: all({m.node_id for m in n.members() if m.status in alive} == everyone
                              for n in sim.live()), deadline=30.0)
    return sim


def detection_time(size: int, seed: int) -> float:
    sim = mesh(size, seed)
    sim.run(sim.rng.uniform(2.0, 4.0))
    sim.kill(size - 1)
    took = sim.run_until(lambda: sim.everyone_sees(f"n{size - 1}", NodeStatus.DEAD), deadline=20.0)
    assert not sim.false_deaths()
    return took


# -- the pieces --------------------------------------------------------------------------------------

def test_defaults_follow_the_mesh_timeouts() -> None:
    assert (CFG.probe_interval, CFG.probe_timeout) == (0.5, 0.2)
    assert (CFG.suspicion_min, CFG.suspicion_max) == (1.0, 2.0)
    with pytest.raises(ValueError):
        SwimConfig(probe_interval=0.2, probe_timeout=0.5)
    assert retransmit_limit(4, 5) == 4 and retransmit_limit(4, 10) == 8


def test_a_higher_incarnation_overrides_and_left_sticks() -> None:
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    node.receive(Gossip(addr_of(0), "n1", addr_of(1), 0, (Update(Kind.ALIVE, "n1", 3, "n1", addr_of(1), info_of(1)),)),
                 0.0)
    say = [lambda kind, inc: node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(kind, "n1", inc, "n2"),)),
                                          0.1)]
    say[0](Kind.SUSPECT, 2)  # an older incarnation: ignored
    assert node.status_of("n1") is NodeStatus.ACTIVE
    say[0](Kind.LEFT, 3)
    say[0](Kind.DEAD, 3)  # a death rumour does not undo a leave
    node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(Kind.ALIVE, "n1", 3, "n1", addr_of(1), info_of(1)),)),
                 0.2)
    assert node.status_of("n1") is NodeStatus.LEFT
    node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(Kind.ALIVE, "n1", 4, "n1", addr_of(1), info_of(1)),)),
                 0.3)
    assert node.status_of("n1") is NodeStatus.ACTIVE
    assert [(c.old, c.new) for c in node.take_changes()] == [
        (None, NodeStatus.ACTIVE), (NodeStatus.ACTIVE, NodeStatus.LEFT), (NodeStatus.LEFT, NodeStatus.ACTIVE)]


def test_a_node_told_it_is_suspect_refutes_with_a_higher_incarnation() -> None:
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(Kind.SUSPECT, "n0", 0, "n2"),)), 0.0)
    assert node.incarnation == 1 and node.health.score == 1
    assert node.status_of("n0") is NodeStatus.ACTIVE  # never judges itself


def test_newer_updates_about_a_node_replace_older_ones_in_the_queue() -> None:
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    node.receive(Gossip(addr_of(0), "n1", addr_of(1), 0, (Update(Kind.ALIVE, "n1", 1, "n1", addr_of(1), info_of(1)),)),
                 0.0)
    node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(Kind.SUSPECT, "n1", 1, "n2"),)), 0.0)
    queued = [u for m in node.tick(0.0) for u in m.updates if u.node == "n1"]
    assert queued and {u.kind for u in queued} == {Kind.SUSPECT}


# -- the simulated mesh ---------------------------------------------------------------------------------

def test_a_node_joining_through_one_seed_learns_everyone() -> None:
    sim = mesh(6, seed=1)
    assert all(len(n.members()) == 6 for n in sim.live())


def test_a_node_joins_through_any_live_member_when_its_seed_has_died() -> None:
    sim = mesh(5, seed=2)
    sim.kill(0)  # the seed everyone joined through
    sim.run_until(lambda: sim.everyone_sees("n0", NodeStatus.DEAD), deadline=10.0)
    late = sim.add(5, seeds=(0, 3))
    sim.run_until(lambda: all(n.status_of("n5") is NodeStatus.ACTIVE for n in sim.live())
                  and all(late.status_of(f"n{i}") is NodeStatus.ACTIVE for i in range(1, 5)), deadline=10.0)
    # A node that joined through the dead seed long ago learns the newcomer by gossip.
    assert sim.node(1).status_of("n5") is NodeStatus.ACTIVE
    assert not sim.false_deaths()


@pytest.mark.parametrize(("size", "target"), [(5, 3.0), (8, 4.0)])
def test_a_killed_node_is_dead_everywhere_within_the_target(size: int, target: float) -> None:
    """The issue's target: a killed node dead everywhere within 3 s on 5 nodes (a round is longer on 8)."""
    times = [detection_time(size, seed) for seed in range(20)]
    print(f"\n{size} nodes: detection mean {statistics.mean(times):.2f} s, max {max(times):.2f} s")
    assert max(times) <= target


def test_a_pause_shorter_than_the_timeout_is_never_a_death() -> None:
    for seed in range(8):
        sim = mesh(5, seed)
        sim.run(sim.rng.uniform(1.0, 3.0))
        sim.down.add(addr_of(2))  # SIGSTOP: no ticks, nothing received
        sim.run(CFG.suspicion_min)
        sim.down.discard(addr_of(2))
        sim.run(10.0)
        assert not sim.false_deaths(), seed
        assert sim.everyone_sees("n2", NodeStatus.ACTIVE)


def test_a_falsely_suspected_node_refutes_it() -> None:
    sim = mesh(5, seed=3)
    rumour = Update(Kind.SUSPECT, "n1", sim.node(1).incarnation, "n3")
    sim.send(addr_of(3), [Gossip(addr_of(0), "n3", addr_of(3), 0, (rumour,))])
    sim.run_until(lambda: sim.node(0).status_of("n1") is NodeStatus.SUSPECT, deadline=1.0)
    sim.run_until(lambda: sim.everyone_sees("n1", NodeStatus.ACTIVE) and sim.node(1).incarnation > rumour.incarnation,
                  deadline=CFG.suspicion_min)
    sim.run(10.0)
    assert not sim.false_deaths()


def test_a_graceful_leave_spreads_and_sticks() -> None:
    sim = mesh(6, seed=4)
    leaver = sim.node(4)
    sim.send(addr_of(4), leaver.leave(sim.now))
    sim.run_until(lambda: leaver.pending_updates() == 0, deadline=5.0)
    sim.kill(4)
    sim.run_until(lambda: sim.everyone_sees("n4", NodeStatus.LEFT), deadline=3.0)
    sim.run(20.0)
    assert sim.everyone_sees("n4", NodeStatus.LEFT)  # not turned dead by missing probes
    assert not [c for _, _, c in sim.log if c.node.node_id == "n4" and c.new is NodeStatus.DEAD]
    # It comes back as a new life: the leave gives way to the higher incarnation.
    sim.add(4, seeds=(0,), life=2)
    sim.run_until(lambda: sim.everyone_sees("n4", NodeStatus.ACTIVE), deadline=5.0)


@pytest.mark.parametrize("seed", range(3))
def test_thirty_percent_loss_gives_no_false_death(seed: int) -> None:
    sim = mesh(8, seed, loss=0.3)
    sim.run(300.0)
    assert not sim.false_deaths()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), loss=st.floats(0.0, 0.2), size=st.integers(5, 8))
def test_random_loss_never_kills_a_live_node(seed: int, loss: float, size: int) -> None:
    sim = mesh(size, seed, loss=loss)
    sim.run(60.0)
    assert not sim.false_deaths()


def test_a_slow_node_does_not_declare_healthy_nodes_dead() -> None:
    """Lifeguard: a node whose own processing is slow raises its health score, which stretches its timeouts."""
    for seed in range(4):
        sim = mesh(6, seed)
        sim.slow[addr_of(5)] = 0.4  # everything it receives and sends waits: slow, but not dead to anyone
        sim.run(60.0)
        assert not sim.false_deaths(), seed
        assert sim.node(5).health.score > 0  # it noticed that the fault is its own

    def healthy_deaths(cfg: SwimConfig) -> int:
        deaths = 0
        for seed in range(4):
            sim = mesh(6, seed, cfg=cfg)
            sim.slow[addr_of(5)] = 1.5  # three seconds for a round trip
            sim.run(60.0)
            deaths += len([d for d in sim.false_deaths() if d[2] != "n5"])
        return deaths

    assert healthy_deaths(CFG) == 0


def test_a_healed_partition_merges_again() -> None:
    sim = mesh(6, seed=5)
    sim.partition({4, 5})
    sim.run_until(lambda: all(sim.node(i).status_of("n4") is NodeStatus.DEAD for i in range(4)), deadline=10.0)
    sim.run(20.0)  # the cut-off pair damps itself (its probes fail with no nacks) and judges the others slowly
    sim.cut.clear()
    took = sim.run_until(lambda: all(n.status_of(f"n{i}") is NodeStatus.ACTIVE for n in sim.live() for i in range(6)),
                         deadline=3 * CFG.sync_interval)
    print(f"\npartition healed in {took:.1f} s")


def test_bad_messages_are_refused_and_counted() -> None:
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    bad: list[object] = [
        "ping",
        Gossip(addr_of(0), "", "", 0, ()),
        Gossip(addr_of(0), "n0", addr_of(0), 0, ()),
        PingReq(addr_of(0), "n1", addr_of(1), 1, ()),
        Gossip(addr_of(0), "n1", addr_of(1), 0, (Update(Kind.SUSPECT, "n0", -1, "n1"),)),
        Gossip(addr_of(0), "n1", addr_of(1), 0, (Update(Kind.ALIVE, "n2", 1, "n1", addr_of(2), info_of(3)),)),
        Gossip(addr_of(0), "n1", addr_of(1), 0, (Update("zombie", "n2", 1, "n1"),)),  # type: ignore[arg-type]
    ]
    for message in bad:
        assert node.receive(message, 1.0) == []  # type: ignore[arg-type]
    assert node.counters["swim_refused"] == len(bad)
    assert node.incarnation == 0 and [m.node_id for m in node.members()] == ["n0"]
    assert "alive about n2" in node.last_refusal or "unknown kind" in node.last_refusal


def test_long_dead_members_are_forgotten() -> None:
    cfg = SwimConfig.from_timeouts(2.0, 3.0, forget_after=20.0, sync_interval=5.0)
    sim = mesh(5, seed=6, cfg=cfg)
    sim.kill(4)
    sim.run_until(lambda: sim.everyone_sees("n4", NodeStatus.DEAD), deadline=5.0)
    sim.run(30.0)
    assert all(n.member("n4") is None for n in sim.live())
    assert not sim.false_deaths()


def test_an_ack_from_a_suspect_counts_as_an_answer() -> None:
    """Regression: a message from a member held suspect used to skip the normal handling, so its ack was lost."""
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    for i in (1, 2, 3):
        node.receive(Gossip(addr_of(0), f"n{i}", addr_of(i), 0,
                            (Update(Kind.ALIVE, f"n{i}", 0, f"n{i}", addr_of(i), info_of(i)),)), 0.0)
    node.receive(Gossip(addr_of(0), "n2", addr_of(2), 0, (Update(Kind.SUSPECT, "n1", 0, "n2"),)), 0.0)
    ping = next(m for m in node.tick(0.01) if isinstance(m, Ping))
    assert ping.to == addr_of(1)  # a suspect is probed first, and told so
    assert Update(Kind.SUSPECT, "n1", 0, "n0") in ping.updates
    node.receive(Ack(addr_of(0), "n1", addr_of(1), ping.seq, ()), 0.02)
    later = node.tick(0.01 + CFG.probe_timeout + 0.001)
    assert not [m for m in later if isinstance(m, PingReq)]  # answered: no indirect probes


def test_a_joiner_learns_the_dead_from_the_exchange_that_joins_it_and_only_from_that() -> None:
    joiner = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1), seeds=[addr_of(1)])
    state = (Update(Kind.ALIVE, "n1", 3, "n1", addr_of(1), info_of(1)),
             Update(Kind.DEAD, "n2", 2, "n1", addr_of(2), info_of(2)),
             Update(Kind.LEFT, "n3", 1, "n1", addr_of(3), info_of(3)))
    joiner.receive(Sync(addr_of(0), "n1", addr_of(1), 0, state, reply=True), 0.0)
    assert joiner.joined
    assert {m.node_id: m.status for m in joiner.members()} == {
        "n0": NodeStatus.ACTIVE, "n1": NodeStatus.ACTIVE, "n2": NodeStatus.DEAD, "n3": NodeStatus.LEFT}
    # once joined, a dead stranger in a later exchange stays out (peers forget the dead at different times)
    later = (Update(Kind.DEAD, "n4", 1, "n1", addr_of(4), info_of(4)),)
    joiner.receive(Sync(addr_of(0), "n1", addr_of(1), 0, later, reply=True), 1.0)
    assert joiner.member("n4") is None


def test_a_member_whose_join_news_was_lost_is_learned_from_its_first_message() -> None:
    """A sender this node has no record of (every rumour of its join lost here) is asked for a full exchange at
    once, at most once a second: its answer holds its alive, so it is known after one exchange, not at the next
    random sync (regression: under 18 % loss a member stayed unknown to one node for 36 s)."""
    node = SwimNode(info_of(0), addr_of(0), CFG, random.Random(1))
    stranger = SwimNode(info_of(5), addr_of(5), CFG, random.Random(2))
    asked = node.receive(Ping(addr_of(0), "n5", addr_of(5), 7, ()), 0.0)
    ack, sync = asked
    assert isinstance(ack, Ack) and ack.seq == 7
    assert isinstance(sync, Sync) and sync.to == addr_of(5) and not sync.reply
    assert not [m for m in node.receive(Ping(addr_of(0), "n5", addr_of(5), 8, ()), 0.5) if isinstance(m, Sync)]
    answer = stranger.receive(sync, 0.01)
    assert [type(m) for m in answer] == [Sync] and answer[0].reply
    node.receive(answer[0], 0.02)
    assert node.status_of("n5") is NodeStatus.ACTIVE and node.member("n5").addr == addr_of(5)
    assert node.counters["swim_stranger_syncs"] == 1
    # known now: its messages ask for nothing more
    assert not [m for m in node.receive(Ping(addr_of(0), "n5", addr_of(5), 9, ()), 2.0) if isinstance(m, Sync)]


def test_a_lossy_mesh_of_eight_knows_every_member_soon() -> None:
    """The case hypothesis found (8 nodes, 17.6 % loss): every node sees every other within 5 s of starting."""
    sim = Sim(6462, loss=0.17578125)
    for i in range(8):
        sim.add(i)
    everyone = {f"n{i}" for i in range(8)}
    sim.run_until(lambda: all({m.node_id for m in n.members() if m.status in (NodeStatus.ACTIVE, NodeStatus.SUSPECT)}
                              == everyone for n in sim.live()), deadline=5.0)
