"""One node's SWIM state machine (pure, no I/O): the driver feeds it time and messages and sends what it returns.

- ``tick(now)`` → messages to send (probes, indirect probes, gossip, nacks);
- ``receive(message, now)`` → messages to send (acks, relayed probes, replies);
- ``take_changes()`` → ``mesh_core.membership.Change`` records (joins and
  status changes) to publish as ``NodeJoined`` / ``NodeStatusChanged``.

``now`` is always the caller's monotonic clock; no stamp from another node is
ever compared with it. Every message is addressed to a member's address. The
node ties together the member table (``table``), the probe ring and local
health (``probe``) and the dissemination queue (``gossip``), and answers what
is said about itself: it refutes a suspicion with a higher incarnation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from ..membership import Change
from ..model import LIVE, NodeInfo, NodeStatus
from .config import SwimConfig, retransmit_limit
from .gossip import BroadcastQueue
from .messages import Ack, Gossip, Kind, Message, Nack, Ping, PingReq, Sync, Update, invalid
from .probe import Health, Probe, ProbeRing, Relay
from .table import MemberTable, SwimMember

STRANGER_SECONDS = 1.0  # a sender not in the table is asked for a full exchange at most this often
STRANGERS_KEPT = 256  # strangers asked lately, remembered at once (past it, until some of them age out)


class SwimNode:
    """One node's SWIM state machine; see ``mesh_core.swim`` for the protocol."""

    def __init__(self, info: NodeInfo, addr: str, cfg: SwimConfig, rng: random.Random, *,
                 seeds: Iterable[str] = (), incarnation: int = 0, now: float = 0.0) -> None:
        self.cfg = cfg
        self.rng = rng
        self.node_id = info.node_id
        self.addr = addr
        self.health = Health(cfg.max_health)
        self._table = MemberTable(SwimMember(info.node_id, addr, info, incarnation, NodeStatus.ACTIVE, now), cfg)
        self._seeds = [seed for seed in dict.fromkeys(seeds) if seed != addr]
        self._joined = not self._seeds
        self._join_next = now
        self._queue = BroadcastQueue(cfg)
        self._ring = ProbeRing()
        self._probe: Probe | None = None
        self._next_probe = now
        self._next_gossip = now
        self._next_sync = now + cfg.sync_interval * rng.uniform(0.5, 1.0)
        self._relays: dict[int, Relay] = {}
        self._strangers: dict[str, float] = {}  # address of a sender not in the table → when it may be asked again
        self.counters: Counter[str] = Counter()  # swim_refused: messages that failed validation
        self.last_refusal = ""  # why the last refused message was refused (for the driver's log)
        self._seq = 0
        self._queue.push(self._alive_update())

    # -- reading ----------------------------------------------------------------------------------
    @property
    def me(self) -> SwimMember:
        return self._table.me

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    @property
    def joined(self) -> bool:
        """Whether a full-state exchange has answered (always True without seeds)."""
        return self._joined

    def members(self) -> list[SwimMember]:
        return list(self._table.members.values())

    def member(self, node_id: str) -> SwimMember | None:
        return self._table.members.get(node_id)

    def status_of(self, node_id: str) -> NodeStatus | None:
        member = self._table.members.get(node_id)
        return member.status if member else None

    def take_changes(self) -> list[Change]:
        """Joins and status changes since the last call, in order."""
        return self._table.take_changes()

    def pending_updates(self) -> int:
        """Updates still to be disseminated (a leaving node may wait for zero before it stops)."""
        return len(self._queue)

    # -- driving ------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Message]:
        """Advance to ``now``: run out suspicions and probes, start the next probe, gossip, join, sync."""
        out: list[Message] = []
        for update in self._table.expired(now):
            self._apply(update, now)
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
            live = self._table.live()
            if live:
                out.append(self._sync_message(self.rng.choice(live).addr, reply=False))
            # A dead member may be alive across a healed partition: one exchange lets either side refute.
            dead = [m for m in self._table.members.values() if m.status is NodeStatus.DEAD]
            if dead:
                out.append(self._sync_message(self.rng.choice(dead).addr, reply=False))
            self._forget(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.cfg.gossip_interval
            for node_id in self._table.suspicions:
                # Challenge each suspect every gossip round: if it is up, its refutation comes straight back.
                member = self._table.members[node_id]
                rumour = Update(Kind.SUSPECT, node_id, member.incarnation, self.node_id)
                out.append(Gossip(member.addr, self.node_id, self.addr, 0, (rumour,)))
            if self._queue:
                peers = self._table.live()
                for peer in self.rng.sample(peers, min(self.cfg.gossip_fanout, len(peers))):
                    updates = self._piggyback(peer.node_id)
                    if not updates:
                        break
                    out.append(Gossip(peer.addr, self.node_id, self.addr, 0, updates))
        return out

    def _join_addresses(self) -> list[str]:
        """Seeds, then every member address known (so a dead seed does not strand the node)."""
        known = [m.addr for m in self._table.live()]
        return list(dict.fromkeys(self._seeds + known))

    def _tick_probe(self, now: float) -> list[Message]:
        out: list[Message] = []
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect_sent and now >= probe.timeout_at:
            probe.indirect_sent = True
            probed = self._table.members[probe.target]
            # A second direct try rides along with the indirect ones (one lost packet is not a failure).
            out.append(Ping(probed.addr, self.node_id, self.addr, probe.seq, self._piggyback(probed.node_id)))
            helpers = self._table.live(probe.target)
            for helper in self.rng.sample(helpers, min(self.cfg.indirect_checks, len(helpers))):
                probe.nacks_wanted += 1
                out.append(PingReq(helper.addr, self.node_id, self.addr, probe.seq, self._piggyback(helper.node_id),
                                   target=probed.node_id, target_addr=probed.addr))
        if probe is not None and now >= probe.end_at:
            self._probe = None
            if probe.acked:
                self.health.add(1 if probe.late else -1)  # an ack that needed the second try was missed once
            else:
                member = self._table.members.get(probe.target)
                if member is not None and member.status in LIVE:
                    self._apply(Update(Kind.SUSPECT, member.node_id, member.incarnation, self.node_id), now)
                # Nacks that did not come back say the fault may be this node's own: count them against it (after
                # the suspicion this probe starts is timed, or the one missed ack would stretch its own verdict).
                self.health.add(probe.nacks_wanted - probe.nacks if probe.nacks_wanted else 1)
        if self._probe is None and now >= self._next_probe and self.me.status is NodeStatus.ACTIVE:
            target = self._ring.next_target(self._table.members, self._table.suspicions)
            interval = self.cfg.probe_interval * self.health.multiplier
            self._next_probe = now + interval
            if target is not None:
                self._seq += 1
                timeout = self.cfg.probe_timeout * self.health.multiplier
                self._probe = Probe(target.node_id, self._seq, now + timeout, now + interval)
                out.append(Ping(target.addr, self.node_id, self.addr, self._seq, self._piggyback(target.node_id)))
        return out

    def receive(self, message: Message, now: float) -> list[Message]:
        """Handle one message received at ``now``; returns the messages to send in answer."""
        why = invalid(message, self.node_id)
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
            self._relays[self._seq] = Relay(message.sender_addr, message.seq, now + timeout)
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
        sender = self._table.members.get(message.sender)
        if sender is None and not isinstance(message, Sync):
            out.extend(self._ask_stranger(message.sender_addr, now))
        if sender is not None and sender.node_id in self._table.suspicions:
            self._table.suspicions[sender.node_id].heard(now)
        if sender is not None and sender.status is NodeStatus.SUSPECT and not isinstance(message, Ping):
            # A suspect that speaks is up: tell it that it is suspect, so that its refutation comes straight back.
            rumour = Update(Kind.SUSPECT, sender.node_id, sender.incarnation, self.node_id)
            out.append(Gossip(message.sender_addr, self.node_id, self.addr, 0, (rumour,)))
        return out

    def _ask_stranger(self, addr: str, now: float) -> list[Message]:
        """A full exchange with a sender this node has no record of: a member whose join (or return after it was
        forgotten) reached it in no rumour, which every rumour's loss can bring about. Its answer holds its own
        alive, so the member is known after one exchange instead of at the next random sync; at most once per
        ``STRANGER_SECONDS`` per address (a stranger pings this node every few probe rounds)."""
        if now < self._strangers.get(addr, 0.0) or self.me.status is not NodeStatus.ACTIVE:
            return []
        if len(self._strangers) >= STRANGERS_KEPT:
            self._strangers = {a: until for a, until in self._strangers.items() if until > now}
            if len(self._strangers) >= STRANGERS_KEPT:
                return []
        self._strangers[addr] = now + STRANGER_SECONDS
        self.counters["swim_stranger_syncs"] += 1
        return [self._sync_message(addr, reply=False)]

    def _forget(self, now: float) -> None:
        for node_id in self._table.forget(now):
            self._queue.drop(node_id)
            self._ring.remove(node_id)

    def sync_with(self, addr: str) -> Message:
        """A full-state exchange with the node at ``addr`` (it answers with its own state)."""
        return self._sync_message(addr, reply=False)

    def _sync_message(self, addr: str, *, reply: bool) -> Sync:
        return Sync(addr, self.node_id, self.addr, 0, self._table.state(self.node_id), reply=reply)

    def leave(self, now: float) -> list[Message]:
        """Graceful stop: announce ``left`` to a few members at once; it then spreads by gossip (keep ticking
        until ``pending_updates()`` is zero, or a grace period, before stopping)."""
        me = self.me
        self._table.set(me, NodeStatus.LEFT, me.incarnation, now)
        self._queue.push(Update(Kind.LEFT, self.node_id, me.incarnation, self.node_id, self.addr))
        peers = self._table.live()
        fanout = retransmit_limit(1, self._table.size()) + self.cfg.gossip_fanout
        return [Gossip(peer.addr, self.node_id, self.addr, 0, self._piggyback(peer.node_id))
                for peer in self.rng.sample(peers, min(fanout, len(peers)))]

    def update_info(self, info: NodeInfo) -> None:
        """New facts about this node (load, capabilities): gossiped as an alive with a higher incarnation."""
        me = self.me
        me.info = info
        me.incarnation += 1
        self._queue.push(self._alive_update())

    # -- rumours ------------------------------------------------------------------------------------
    def _alive_update(self) -> Update:
        me = self.me
        return Update(Kind.ALIVE, self.node_id, me.incarnation, self.node_id, self.addr, me.info)

    def _refute(self, incarnation: int) -> None:
        """Someone holds this node suspect or dead at ``incarnation``: come back above it."""
        me = self.me
        me.incarnation = max(me.incarnation, incarnation) + 1
        self.health.add(1)  # being suspected hints that this node is the slow one
        self._queue.push(self._alive_update())

    def _apply(self, update: Update, now: float) -> None:
        if update.node == self.node_id:
            self._about_self(update)
            return
        known = update.node in self._table.members
        news = self._table.apply(update, now, joined=self._joined, stretch=self.health.multiplier)
        if not known and update.node in self._table.members:
            self._ring.add(update.node, self.rng)
        if news:
            self._queue.push(update)

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
            self._queue.push(self._alive_update())

    def _piggyback(self, to: str = "") -> tuple[Update, ...]:
        """Up to ``max_piggyback`` queued updates, least sent first; each dropped after its retransmit limit.

        A message to a member held suspect always tells it so first, so that it can refute at once."""
        updates: list[Update] = []
        member = self._table.members.get(to)
        if member is not None and member.status is NodeStatus.SUSPECT:
            updates.append(Update(Kind.SUSPECT, to, member.incarnation, self.node_id))
        if self._queue:
            chosen = self._queue.take(self._table.size())
            updates.extend(u for u in chosen if not (updates and u.node == to))
        return tuple(updates)
