"""SWIM-family failure detector for the peer-to-peer medium (pure state machine, no I/O).

One ``SwimNode`` is one node's view of the mesh. The driver (the gRPC
membership medium) feeds it time and messages and sends what it returns:

- ``tick(now)`` → messages to send (probes, indirect probes, gossip, nacks);
- ``receive(message, now)`` → messages to send (acks, relayed probes, replies);
- ``take_changes()`` → ``mesh_core.membership.Change`` records (joins and
  status changes) to publish as ``NodeJoined`` / ``NodeStatusChanged``.

``now`` is always the caller's monotonic clock; no stamp from another node is
ever compared with it. Every message is addressed to a member's address.

The protocol, in the words of SWIM and Lifeguard:

- **Probes.** Once per probe interval the node pings the next member of a
  round-robin over a shuffled list. No ack within the probe timeout → it asks
  ``indirect_checks`` other members to ping the target for it (they answer
  with the target's ack, or a nack when the target did not answer them). No
  ack by the end of the interval → the target is *suspect*.
- **Suspicion** lasts between ``suspicion_min`` and ``suspicion_max`` (both
  scaled by log n for big meshes); every independent confirmation (another
  member suspecting the same incarnation) shrinks it towards the minimum on a
  log curve. When it runs out the member is *dead*.
- **Incarnations.** A node that hears itself suspected or declared dead
  refutes it with a higher incarnation; a higher incarnation overrides
  anything said about a lower one. ``left`` (graceful stop) sticks until a
  higher incarnation.
- **Refutation under loss.** Every message to a member held suspect tells it
  so (and each suspect is challenged every gossip round); a node told it is
  doubted answers the sender directly with its alive; a suspect heard from
  directly gets at least ``suspicion_min`` more, on the receiver's clock, for
  its refutation to arrive; every other probe goes to a suspect.
- **Dissemination.** Updates wait in a bounded queue, one per node (a newer
  update about a node replaces an older one), and ride on every outgoing
  message, each about ``retransmit_mult * log10(n + 1)`` times; while the
  queue holds something, a small gossip message also goes to a few members
  every gossip interval.
- **Local health** (Lifeguard): missed acks, nacks not received and
  refutations of its own suspicion raise the node's health score; successful
  probes lower it. The multiplier ``score + 1`` stretches this node's probe
  interval, probe timeout and suspicion timeouts, so a node that is itself
  slow does not declare healthy ones dead.
- **Join.** A node starts from seed addresses, sends each a full-state
  exchange (``Sync``) until one answers, and learns the rest by gossip; the
  driver may ask for a full-state exchange at any time (``sync_with``), and one
  runs with a random member every ``sync_interval``.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .membership import Change
from .model import NodeInfo, NodeStatus


class Kind(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_STATUS = {Kind.ALIVE: NodeStatus.ACTIVE, Kind.SUSPECT: NodeStatus.SUSPECT,
           Kind.DEAD: NodeStatus.DEAD, Kind.LEFT: NodeStatus.LEFT}


@dataclass(frozen=True)
class Update:
    """One rumour about one node: ``node`` is in state ``kind`` at ``incarnation``, said by ``origin``.

    ``addr`` and ``info`` travel with ``alive`` (how to reach the node, what it is); the others name it only."""

    kind: Kind
    node: str
    incarnation: int
    origin: str
    addr: str = ""
    info: NodeInfo | None = None


@dataclass(frozen=True)
class Message:
    """Base of every message: ``to`` is the receiver's address; ``sender``/``sender_addr`` who sent it."""

    to: str
    sender: str
    sender_addr: str
    seq: int = 0
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Ping(Message):
    """Are you alive? Answered by an ``Ack`` with the same ``seq``."""


@dataclass(frozen=True)
class PingReq(Message):
    """Ping ``target`` for me; answer with its ``Ack`` (my ``seq``) or a ``Nack`` when it does not answer you."""

    target: str = ""
    target_addr: str = ""


@dataclass(frozen=True)
class Ack(Message):
    """The answer to the ``Ping`` (or ``PingReq``) with this ``seq``."""


@dataclass(frozen=True)
class Nack(Message):
    """Sent by an indirect prober whose own ping of the target got no ack: the asker's network works."""


@dataclass(frozen=True)
class Gossip(Message):
    """Updates only, no answer expected."""


@dataclass(frozen=True)
class Sync(Message):
    """Full-state exchange: ``updates`` holds the sender's whole table; answered by a ``Sync`` with ``reply``."""

    reply: bool = False


@dataclass(frozen=True)
class SwimConfig:
    """Timings (seconds on the driver's monotonic clock) and fan-outs; see ``from_timeouts`` for the defaults."""

    probe_interval: float = 0.5
    probe_timeout: float = 0.2
    indirect_checks: int = 3
    suspicion_min: float = 1.0
    suspicion_max: float = 2.0
    confirmations: int = 2  # independent suspicions that bring the timeout down to suspicion_min
    retransmit_mult: int = 4
    max_piggyback: int = 8  # updates per message
    queue_limit: int = 256  # updates waiting (one per node); the most retransmitted go first when full
    gossip_interval: float = 0.25
    gossip_fanout: int = 3
    max_health: int = 8  # the multiplier never exceeds this
    sync_interval: float = 10.0
    forget_after: float = 300.0  # a member dead or left this long is dropped from the table

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if not 0 < self.suspicion_min <= self.suspicion_max:
            raise ValueError("need 0 < suspicion_min <= suspicion_max")
        if min(self.indirect_checks, self.confirmations, self.gossip_fanout) < 0:
            raise ValueError("indirect_checks, confirmations and gossip_fanout cannot be negative")
        if min(self.retransmit_mult, self.max_piggyback, self.queue_limit, self.max_health) < 1:
            raise ValueError("retransmit_mult, max_piggyback, queue_limit and max_health must be at least 1")
        if min(self.gossip_interval, self.sync_interval, self.forget_after) <= 0:
            raise ValueError("gossip_interval, sync_interval and forget_after must be positive")

    @classmethod
    def from_timeouts(cls, suspect_after: float, node_timeout: float, **overrides: float) -> SwimConfig:
        """Defaults from the mesh's ``suspect_after_seconds`` and ``node_timeout_seconds``.

        On the hub backends a node silent for ``suspect_after`` is suspect and for ``node_timeout`` is dead.
        Here the probe interval is a quarter of ``suspect_after`` (a dead node is found by some prober, probed
        directly and indirectly within about two intervals), and a suspicion lasts from ``node_timeout -
        suspect_after`` (confirmed) to ``node_timeout`` minus two intervals (unconfirmed), so a killed node is
        dead everywhere within about ``node_timeout`` (3 s with the defaults, on a small mesh)."""
        interval = suspect_after / 4
        smin = max(node_timeout - suspect_after, 2 * interval)
        values: dict[str, float] = dict(
            probe_interval=interval, probe_timeout=interval * 0.4, gossip_interval=interval / 2,
            suspicion_min=smin, suspicion_max=max(smin, node_timeout - 2 * interval))
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class SwimMember:
    """One node as this view holds it; ``changed_at`` is on the driver's clock."""

    node_id: str
    addr: str
    info: NodeInfo
    incarnation: int
    status: NodeStatus
    changed_at: float


@dataclass
class _Suspicion:
    """A running suspicion: its deadline shrinks from ``start + longest`` towards ``start + shortest``."""

    start: float
    wanted: int
    shortest: float
    longest: float
    confirmed_by: set[str]
    deadline: float = 0.0
    floor: float = 0.0  # no sooner than this: the suspect was heard from directly (see ``heard``)

    def __post_init__(self) -> None:
        self.deadline = self.start + (self.longest if self.wanted > 0 else self.shortest)

    def heard(self, now: float) -> None:
        """The suspect itself spoke at ``now``: it is up, so give its refutation the shortest timeout to arrive."""
        self.floor = now + self.shortest
        self.deadline = max(self.deadline, self.floor)

    def confirm(self, origin: str) -> bool:
        """Count an independent suspicion; True when it was new (and so worth gossiping on)."""
        confirmations = len(self.confirmed_by) - 1
        if confirmations >= self.wanted or origin in self.confirmed_by:
            return False
        self.confirmed_by.add(origin)
        confirmations += 1
        fraction = math.log(confirmations + 1) / math.log(self.wanted + 1)
        timeout = max(self.shortest, self.longest - fraction * (self.longest - self.shortest))
        self.deadline = max(self.start + timeout, self.floor)
        return True


@dataclass
class _Probe:
    target: str
    seq: int
    timeout_at: float
    end_at: float
    acked: bool = False
    late: bool = False  # acked only after the probe timeout
    indirect_sent: bool = False
    nacks_wanted: int = 0
    nacks: int = 0


@dataclass
class _Relay:
    """An indirect probe run for ``asker``: forward the target's ack, or nack at ``nack_at``."""

    asker_addr: str
    asker_seq: int
    nack_at: float


@dataclass
class _Broadcast:
    update: Update
    sent: int = 0


def retransmit_limit(mult: int, members: int) -> int:
    """How many times one update is sent: ``mult * ceil(log10(members + 1))``."""
    return mult * max(1, math.ceil(math.log10(members + 1)))


def mesh_scale(members: int) -> float:
    """Suspicion timeouts grow with log10 of the mesh size past ten members."""
    return max(1.0, math.log10(max(1, members)))


@dataclass
class _Health:
    """Lifeguard's local health score: 0 is healthy; the timeouts are multiplied by ``score + 1``."""

    limit: int
    score: int = 0

    def add(self, delta: int) -> None:
        self.score = min(self.limit - 1, max(0, self.score + delta))

    @property
    def multiplier(self) -> int:
        return self.score + 1


class SwimNode:
    """One node's SWIM state machine; see the module docstring for the protocol."""

    def __init__(self, info: NodeInfo, addr: str, cfg: SwimConfig, rng: random.Random, *,
                 seeds: Iterable[str] = (), incarnation: int = 0, now: float = 0.0) -> None:
        self.cfg = cfg
        self.rng = rng
        self.node_id = info.node_id
        self.addr = addr
        self.health = _Health(cfg.max_health)
        self._members: dict[str, SwimMember] = {
            info.node_id: SwimMember(info.node_id, addr, info, incarnation, NodeStatus.ACTIVE, now)}
        self._seeds = [seed for seed in dict.fromkeys(seeds) if seed != addr]
        self._joined = not self._seeds
        self._join_next = now
        self._suspicions: dict[str, _Suspicion] = {}
        self._queue: dict[str, _Broadcast] = {}
        self._changes: list[Change] = []
        self._ring: list[str] = []  # probe order: shuffled once, newcomers inserted at random places
        self._ring_at = 0
        self._probe: _Probe | None = None
        self._next_probe = now
        self._next_gossip = now
        self._next_sync = now + cfg.sync_interval * rng.uniform(0.5, 1.0)
        self._relays: dict[int, _Relay] = {}
        self.counters: Counter[str] = Counter()  # swim_refused: messages that failed validation
        self.last_refusal = ""  # why the last refused message was refused (for the driver's log)
        self._seq = 0
        self._probe_suspect = False
        self._broadcast(self._alive_update())

    # -- reading ----------------------------------------------------------------------------------
    @property
    def me(self) -> SwimMember:
        return self._members[self.node_id]

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    @property
    def joined(self) -> bool:
        """Whether a full-state exchange has answered (always True without seeds)."""
        return self._joined

    def members(self) -> list[SwimMember]:
        return list(self._members.values())

    def member(self, node_id: str) -> SwimMember | None:
        return self._members.get(node_id)

    def status_of(self, node_id: str) -> NodeStatus | None:
        member = self._members.get(node_id)
        return member.status if member else None

    def take_changes(self) -> list[Change]:
        """Joins and status changes since the last call, in order."""
        changes, self._changes = self._changes, []
        return changes

    def pending_updates(self) -> int:
        """Updates still to be disseminated (a leaving node may wait for zero before it stops)."""
        return len(self._queue)

    def _live(self, *excluding: str) -> list[SwimMember]:
        return [m for m in self._members.values()
                if m.status in (NodeStatus.ACTIVE, NodeStatus.SUSPECT) and m.node_id not in excluding
                and m.node_id != self.node_id]

    def _size(self) -> int:
        return 1 + len(self._live())

    # -- driving ------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Message]:
        """Advance to ``now``: run out suspicions and probes, start the next probe, gossip, join, sync."""
        out: list[Message] = []
        for node_id, suspicion in list(self._suspicions.items()):
            member = self._members[node_id]
            if now >= suspicion.deadline:
                self._apply(Update(Kind.DEAD, node_id, member.incarnation, self.node_id), now)
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                out.append(Nack(relay.asker_addr, self.node_id, self.addr, relay.asker_seq))
        out.extend(self._tick_probe(now))
        if self.me.status is NodeStatus.LEFT:
            self._probe = None  # a leaving node only spreads its leave
        if not self._joined and now >= self._join_next:
            self._join_next = now + 2 * self.cfg.probe_interval * self.health.multiplier
            out.extend(self._sync_message(addr, reply=False) for addr in self._join_addresses())
        if now >= self._next_sync:
            self._next_sync = now + self.cfg.sync_interval * self.rng.uniform(0.75, 1.25)  # nodes out of step
            live = self._live()
            if live:
                out.append(self._sync_message(self.rng.choice(live).addr, reply=False))
            # A dead member may be alive across a healed partition: one exchange lets either side refute.
            dead = [m for m in self._members.values() if m.status is NodeStatus.DEAD]
            if dead:
                out.append(self._sync_message(self.rng.choice(dead).addr, reply=False))
            self._forget(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.cfg.gossip_interval
            for node_id in self._suspicions:
                # Challenge each suspect every gossip round: if it is up, its refutation comes straight back.
                member = self._members[node_id]
                rumour = Update(Kind.SUSPECT, node_id, member.incarnation, self.node_id)
                out.append(Gossip(member.addr, self.node_id, self.addr, 0, (rumour,)))
            if self._queue:
                peers = self._live()
                for peer in self.rng.sample(peers, min(self.cfg.gossip_fanout, len(peers))):
                    updates = self._piggyback(peer.node_id)
                    if not updates:
                        break
                    out.append(Gossip(peer.addr, self.node_id, self.addr, 0, updates))
        return out

    def _join_addresses(self) -> list[str]:
        """Seeds, then every member address known (so a dead seed does not strand the node)."""
        known = [m.addr for m in self._live()]
        return list(dict.fromkeys(self._seeds + known))

    def _tick_probe(self, now: float) -> list[Message]:
        out: list[Message] = []
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect_sent and now >= probe.timeout_at:
            probe.indirect_sent = True
            probed = self._members[probe.target]
            # A second direct try rides along with the indirect ones (one lost packet is not a failure).
            out.append(Ping(probed.addr, self.node_id, self.addr, probe.seq, self._piggyback(probed.node_id)))
            helpers = self._live(probe.target)
            for helper in self.rng.sample(helpers, min(self.cfg.indirect_checks, len(helpers))):
                probe.nacks_wanted += 1
                out.append(PingReq(helper.addr, self.node_id, self.addr, probe.seq, self._piggyback(helper.node_id),
                                   target=probed.node_id, target_addr=probed.addr))
        if probe is not None and now >= probe.end_at:
            self._probe = None
            if probe.acked:
                self.health.add(1 if probe.late else -1)  # an ack that needed the second try was missed once
            else:
                member = self._members.get(probe.target)
                if member is not None and member.status in (NodeStatus.ACTIVE, NodeStatus.SUSPECT):
                    self._apply(Update(Kind.SUSPECT, member.node_id, member.incarnation, self.node_id), now)
                # Nacks that did not come back say the fault may be this node's own: count them against it (after
                # the suspicion this probe starts is timed, or the one missed ack would stretch its own verdict).
                self.health.add(probe.nacks_wanted - probe.nacks if probe.nacks_wanted else 1)
        if self._probe is None and now >= self._next_probe and self.me.status is NodeStatus.ACTIVE:
            target = self._next_target()
            interval = self.cfg.probe_interval * self.health.multiplier
            self._next_probe = now + interval
            if target is not None:
                self._seq += 1
                timeout = self.cfg.probe_timeout * self.health.multiplier
                self._probe = _Probe(target.node_id, self._seq, now + timeout, now + interval)
                out.append(Ping(target.addr, self.node_id, self.addr, self._seq, self._piggyback(target.node_id)))
        return out

    def _next_target(self) -> SwimMember | None:
        """The next live member of a round-robin over a shuffled ring; every other probe goes to a member
        held suspect while there is one, so that its refutation comes back early.

        The ring is not reshuffled each round (as memberlist does): with a fixed order each member is probed
        by each prober exactly once a round, so the gap after a death is at most one round, never two."""
        self._probe_suspect = not self._probe_suspect and bool(self._suspicions)
        if self._probe_suspect:
            return self._members[min(self._suspicions, key=lambda node: self._suspicions[node].deadline)]
        for _ in range(len(self._ring)):
            self._ring_at %= len(self._ring)
            member = self._members.get(self._ring[self._ring_at])
            self._ring_at += 1
            if member is not None and member.status in (NodeStatus.ACTIVE, NodeStatus.SUSPECT):
                return member
        return None

    def receive(self, message: Message, now: float) -> list[Message]:
        """Handle one message received at ``now``; returns the messages to send in answer."""
        why = _invalid(message, self.node_id)
        if why:
            self.counters["swim_refused"] += 1
            self.last_refusal = why
            return []
        for update in message.updates:
            self._apply(update, now)
        out: list[Message] = []
        # A sender that doubts this node is answered with its alive directly, not only by way of gossip.
        doubted = self.me.status is NodeStatus.ACTIVE and any(
            u.node == self.node_id and u.kind in (Kind.SUSPECT, Kind.DEAD) for u in message.updates)
        refutation = (self._alive_update(),) if doubted else ()
        if isinstance(message, Ping):
            updates = refutation + tuple(u for u in self._piggyback(message.sender) if not (
                doubted and u.node == self.node_id))
            out.append(Ack(message.sender_addr, self.node_id, self.addr, message.seq, updates))
        elif isinstance(message, PingReq):
            self._seq += 1
            timeout = self.cfg.probe_timeout * self.health.multiplier
            self._relays[self._seq] = _Relay(message.sender_addr, message.seq, now + timeout)
            out.append(Ping(message.target_addr, self.node_id, self.addr, self._seq, self._piggyback(message.target)))
        elif isinstance(message, Ack):
            relay = self._relays.pop(message.seq, None)
            if relay is not None:
                out.append(Ack(relay.asker_addr, self.node_id, self.addr, relay.asker_seq, self._piggyback()))
            elif self._probe is not None and message.seq == self._probe.seq:
                self._probe.acked = True
                self._probe.late = self._probe.late or now > self._probe.timeout_at
        elif isinstance(message, Nack):
            if self._probe is not None and message.seq == self._probe.seq:
                self._probe.nacks += 1
        elif isinstance(message, Sync):
            self._joined = True
            if not message.reply:
                out.append(self._sync_message(message.sender_addr, reply=True))  # holds the refutation too
                doubted = False
        if doubted and not isinstance(message, Ping):
            out.append(Gossip(message.sender_addr, self.node_id, self.addr, 0, refutation))
        sender = self._members.get(message.sender)
        if sender is not None and sender.node_id in self._suspicions:
            self._suspicions[sender.node_id].heard(now)
        if sender is not None and sender.status is NodeStatus.SUSPECT and not isinstance(message, Ping):
            # A suspect that speaks is up: tell it that it is suspect, so that its refutation comes straight back.
            rumour = Update(Kind.SUSPECT, sender.node_id, sender.incarnation, self.node_id)
            out.append(Gossip(message.sender_addr, self.node_id, self.addr, 0, (rumour,)))
        return out

    def _forget(self, now: float) -> None:
        for member in list(self._members.values()):
            gone = member.status in (NodeStatus.DEAD, NodeStatus.LEFT)
            if gone and now - member.changed_at >= self.cfg.forget_after and member.node_id != self.node_id:
                del self._members[member.node_id]
                self._queue.pop(member.node_id, None)
                self._ring.remove(member.node_id)

    def sync_with(self, addr: str) -> Message:
        """A full-state exchange with the node at ``addr`` (it answers with its own state)."""
        return self._sync_message(addr, reply=False)

    def _sync_message(self, addr: str, *, reply: bool) -> Sync:
        return Sync(addr, self.node_id, self.addr, 0, tuple(self._state_of(m) for m in self._members.values()),
                    reply=reply)

    def _state_of(self, member: SwimMember) -> Update:
        kind = {NodeStatus.ACTIVE: Kind.ALIVE, NodeStatus.SUSPECT: Kind.SUSPECT,
                NodeStatus.DEAD: Kind.DEAD, NodeStatus.LEFT: Kind.LEFT}[member.status]
        return Update(kind, member.node_id, member.incarnation, self.node_id, member.addr, member.info)

    def leave(self, now: float) -> list[Message]:
        """Graceful stop: announce ``left`` to a few members at once; it then spreads by gossip (keep ticking
        until ``pending_updates()`` is zero, or a grace period, before stopping)."""
        me = self.me
        self._set(me, NodeStatus.LEFT, me.incarnation, now)
        self._broadcast(Update(Kind.LEFT, self.node_id, me.incarnation, self.node_id, self.addr))
        peers = self._live()
        fanout = retransmit_limit(1, self._size()) + self.cfg.gossip_fanout
        return [Gossip(peer.addr, self.node_id, self.addr, 0, self._piggyback(peer.node_id))
                for peer in self.rng.sample(peers, min(fanout, len(peers)))]

    def update_info(self, info: NodeInfo) -> None:
        """New facts about this node (load, capabilities): gossiped as an alive with a higher incarnation."""
        me = self.me
        me.info = info
        me.incarnation += 1
        self._broadcast(self._alive_update())

    # -- rumours ------------------------------------------------------------------------------------
    def _alive_update(self) -> Update:
        me = self.me
        return Update(Kind.ALIVE, self.node_id, me.incarnation, self.node_id, self.addr, me.info)

    def _refute(self, incarnation: int) -> None:
        """Someone holds this node suspect or dead at ``incarnation``: come back above it."""
        me = self.me
        me.incarnation = max(me.incarnation, incarnation) + 1
        self.health.add(1)  # being suspected hints that this node is the slow one
        self._broadcast(self._alive_update())

    def _apply(self, update: Update, now: float) -> None:
        if update.node == self.node_id:
            self._about_self(update)
            return
        member = self._members.get(update.node)
        if member is None:
            # First sight needs the node's address and record (an alive, or a suspect in a full-state exchange).
            # A node first heard of as dead or left is worth a place only in a joiner's table, from the exchange
            # that joins it (so it shows the dead and departed, as a hub's table does); later, a member that
            # its peers forget at different times would come back from each one's exchanges and never go.
            live = update.kind in (Kind.ALIVE, Kind.SUSPECT)
            if update.info is not None and update.addr and (live or not self._joined):
                status = _STATUS[update.kind]
                member = SwimMember(update.node, update.addr, update.info, update.incarnation, status, now)
                self._members[update.node] = member
                self._ring.insert(self.rng.randint(0, len(self._ring)), update.node)
                self._changes.append(Change(update.info, None, status))
                if status is NodeStatus.SUSPECT:
                    self._start_suspicion(update.node, update.origin, now)
                if live:
                    self._broadcast(update)
            return
        if update.incarnation < member.incarnation:
            return
        if update.kind is Kind.ALIVE:
            if update.incarnation == member.incarnation:
                return
            if update.info is not None:
                restarted = update.info.incarnation > member.info.incarnation
                member.info = update.info
                if update.addr:
                    member.addr = update.addr
                if restarted:  # a new life of the node: a join, as on the hub backends
                    self._suspicions.pop(member.node_id, None)
                    member.incarnation, member.status, member.changed_at = update.incarnation, NodeStatus.ACTIVE, now
                    self._changes.append(Change(member.info, None, NodeStatus.ACTIVE))
                    self._broadcast(update)
                    return
            self._set(member, NodeStatus.ACTIVE, update.incarnation, now)
            self._broadcast(update)
        elif update.kind is Kind.SUSPECT:
            suspicion = self._suspicions.get(member.node_id)
            if suspicion is not None and update.incarnation == member.incarnation:
                if suspicion.confirm(update.origin):
                    self._broadcast(update)
                return
            if member.status is not NodeStatus.ACTIVE and update.incarnation == member.incarnation:
                return
            if member.status in (NodeStatus.DEAD, NodeStatus.LEFT):
                return  # only an alive with a higher incarnation brings a dead or left node back
            self._set(member, NodeStatus.SUSPECT, update.incarnation, now)
            self._start_suspicion(member.node_id, update.origin, now)
            self._broadcast(update)
        else:
            status = _STATUS[update.kind]
            if update.incarnation == member.incarnation and (
                    member.status is NodeStatus.LEFT or member.status is status):
                return  # left sticks; a repeated rumour changes nothing
            self._set(member, status, update.incarnation, now)
            self._broadcast(update)

    def _about_self(self, update: Update) -> None:
        me = self.me
        if me.status is NodeStatus.LEFT:
            return  # leaving: nothing said about this node is worth refuting any more
        if update.kind is Kind.ALIVE:
            if update.incarnation > me.incarnation:
                self._refute(update.incarnation)  # an older life of this node still gossiped about
            return
        if update.incarnation >= me.incarnation:
            self._refute(update.incarnation)
        elif update.node not in self._queue:
            # Its sender missed the refutation already made: say it again (it rides on the answer).
            self._broadcast(self._alive_update())

    def _start_suspicion(self, node_id: str, origin: str, now: float) -> None:
        size = self._size()
        wanted = self.cfg.confirmations if size - 2 >= self.cfg.confirmations else 0
        scale = mesh_scale(size) * self.health.multiplier
        self._suspicions[node_id] = _Suspicion(now, wanted, self.cfg.suspicion_min * scale,
                                               self.cfg.suspicion_max * scale, {origin})

    def _set(self, member: SwimMember, status: NodeStatus, incarnation: int, now: float) -> None:
        member.incarnation = incarnation
        if status is not NodeStatus.SUSPECT:
            self._suspicions.pop(member.node_id, None)
        if status is not member.status:
            self._changes.append(Change(member.info, member.status, status))
            member.status = status
            member.changed_at = now

    # -- dissemination ---------------------------------------------------------------------------------
    def _broadcast(self, update: Update) -> None:
        """Queue ``update`` for dissemination; it replaces any older update about the same node."""
        self._queue.pop(update.node, None)
        if len(self._queue) >= self.cfg.queue_limit:
            most_sent = max(self._queue, key=lambda node: self._queue[node].sent)
            del self._queue[most_sent]
        self._queue[update.node] = _Broadcast(update)

    def _piggyback(self, to: str = "") -> tuple[Update, ...]:
        """Up to ``max_piggyback`` queued updates, least sent first; each dropped after its retransmit limit.

        A message to a member held suspect always tells it so first, so that it can refute at once."""
        updates: list[Update] = []
        member = self._members.get(to)
        if member is not None and member.status is NodeStatus.SUSPECT:
            updates.append(Update(Kind.SUSPECT, to, member.incarnation, self.node_id))
        if self._queue:
            limit = retransmit_limit(self.cfg.retransmit_mult, self._size())
            chosen = sorted(self._queue.values(), key=lambda b: b.sent)[:self.cfg.max_piggyback]
            for broadcast in chosen:
                broadcast.sent += 1
                if broadcast.sent >= limit:
                    del self._queue[broadcast.update.node]
            updates.extend(b.update for b in chosen if not (updates and b.update.node == to))
        return tuple(updates)


def _invalid(message: object, own_id: str) -> str:
    """Why ``message`` cannot be handled ('' when it can): checked once, at the edge."""
    if not isinstance(message, Message):
        return f"not a SWIM message: {type(message).__name__}"
    if not (isinstance(message.sender, str) and message.sender and isinstance(message.sender_addr, str)
            and message.sender_addr):
        return "no sender or sender address"
    if message.sender == own_id:
        return "claims to come from this node"
    if not isinstance(message.seq, int) or isinstance(message.seq, bool):
        return "sequence number is not an integer"
    if isinstance(message, PingReq) and not (message.target and message.target_addr):
        return "indirect probe without a target"
    if not isinstance(message.updates, tuple):
        return "updates are not a tuple"
    for update in message.updates:
        if not isinstance(update, Update) or not isinstance(update.kind, Kind):
            return "an update of an unknown kind"
        if not (isinstance(update.node, str) and update.node and isinstance(update.origin, str)):
            return "an update without a node or origin"
        if not isinstance(update.incarnation, int) or isinstance(update.incarnation, bool) or update.incarnation < 0:
            return f"update about {update.node[:12]}: incarnation {update.incarnation!r} is not a count"
        if update.kind is Kind.ALIVE and not (update.addr and update.info is not None):
            return f"alive about {update.node[:12]} without its address or its own record"
        if update.info is not None and not (isinstance(update.info, NodeInfo) and update.info.node_id == update.node
                                            and isinstance(update.addr, str)):
            return f"update about {update.node[:12]} carries another node's record"
    return ""


__all__ = ["Ack", "Gossip", "Kind", "Message", "Nack", "Ping", "PingReq", "SwimConfig", "SwimMember",
           "SwimNode", "Sync", "Update", "mesh_scale", "retransmit_limit"]
