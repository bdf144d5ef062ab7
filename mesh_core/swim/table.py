"""The SWIM member table and its rules (pure): each member's address, record, incarnation and status.

Rumours about other nodes are applied here: a higher incarnation overrides
anything said about a lower one; ``left`` sticks until a higher incarnation;
only an alive with a higher incarnation brings a dead or left node back. A
suspicion runs from ``suspicion_max`` down towards ``suspicion_min`` (both
scaled by log n and by this node's Lifeguard multiplier) as independent
members confirm it. Joins and status changes are kept as ``Change`` records
for the driver to publish. Rumours about this node itself are the node's to
answer (``SwimNode``), not the table's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..membership import Change
from ..model import LIVE, NodeInfo, NodeStatus
from .config import SwimConfig, mesh_scale
from .messages import Kind, Update

_STATUS = {Kind.ALIVE: NodeStatus.ACTIVE, Kind.SUSPECT: NodeStatus.SUSPECT,
           Kind.DEAD: NodeStatus.DEAD, Kind.LEFT: NodeStatus.LEFT}
_KIND = {status: kind for kind, status in _STATUS.items()}


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
class Suspicion:
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


class MemberTable:
    """This node's members (itself included), their running suspicions and the changes not yet taken."""

    def __init__(self, me: SwimMember, cfg: SwimConfig) -> None:
        self.cfg = cfg
        self.node_id = me.node_id
        self.members: dict[str, SwimMember] = {me.node_id: me}
        self.suspicions: dict[str, Suspicion] = {}
        self._changes: list[Change] = []

    @property
    def me(self) -> SwimMember:
        return self.members[self.node_id]

    def live(self, *excluding: str) -> list[SwimMember]:
        """Members other than this node that are active or suspect, less ``excluding``."""
        return [m for m in self.members.values()
                if m.status in LIVE and m.node_id not in excluding and m.node_id != self.node_id]

    def size(self) -> int:
        """The mesh's size as this node sees it: itself and its live members."""
        return 1 + len(self.live())

    def take_changes(self) -> list[Change]:
        """Joins and status changes since the last call, in order."""
        changes, self._changes = self._changes, []
        return changes

    def state(self, origin: str) -> tuple[Update, ...]:
        """The whole table as rumours said by ``origin`` (the body of a full-state exchange)."""
        return tuple(Update(_KIND[m.status], m.node_id, m.incarnation, origin, m.addr, m.info)
                     for m in self.members.values())

    def expired(self, now: float) -> list[Update]:
        """A dead rumour for each member whose suspicion has run out by ``now``."""
        return [Update(Kind.DEAD, node_id, self.members[node_id].incarnation, self.node_id)
                for node_id, suspicion in self.suspicions.items() if now >= suspicion.deadline]

    def apply(self, update: Update, now: float, *, joined: bool, stretch: int) -> bool:
        """Apply a rumour about another node, heard at ``now``; True when it is news to gossip on.

        ``joined``: a full-state exchange has answered this node; ``stretch``: its Lifeguard multiplier."""
        member = self.members.get(update.node)
        if member is None:
            # First sight needs the node's address and record (an alive, or a suspect in a full-state exchange).
            # A node first heard of as dead or left is worth a place only in a joiner's table, from the exchange
            # that joins it (so it shows the dead and departed, as a hub's table does); later, a member that
            # its peers forget at different times would come back from each one's exchanges and never go.
            live = update.kind in (Kind.ALIVE, Kind.SUSPECT)
            if update.info is not None and update.addr and (live or not joined):
                status = _STATUS[update.kind]
                self.members[update.node] = SwimMember(update.node, update.addr, update.info, update.incarnation,
                                                       status, now)
                self._changes.append(Change(update.info, None, status))
                if status is NodeStatus.SUSPECT:
                    self._start_suspicion(update.node, update.origin, now, stretch)
                return live
            return False
        if update.incarnation < member.incarnation:
            return False
        if update.kind is Kind.ALIVE:
            if update.incarnation == member.incarnation:
                return False
            if update.info is not None:
                restarted = update.info.incarnation > member.info.incarnation
                member.info = update.info
                if update.addr:
                    member.addr = update.addr
                if restarted:  # a new life of the node: a join, as on the hub backends
                    self.suspicions.pop(member.node_id, None)
                    member.incarnation, member.status, member.changed_at = update.incarnation, NodeStatus.ACTIVE, now
                    self._changes.append(Change(member.info, None, NodeStatus.ACTIVE))
                    return True
            self.set(member, NodeStatus.ACTIVE, update.incarnation, now)
            return True
        if update.kind is Kind.SUSPECT:
            suspicion = self.suspicions.get(member.node_id)
            if suspicion is not None and update.incarnation == member.incarnation:
                return suspicion.confirm(update.origin)
            if member.status is not NodeStatus.ACTIVE and update.incarnation == member.incarnation:
                return False
            if member.status in (NodeStatus.DEAD, NodeStatus.LEFT):
                return False  # only an alive with a higher incarnation brings a dead or left node back
            self.set(member, NodeStatus.SUSPECT, update.incarnation, now)
            self._start_suspicion(member.node_id, update.origin, now, stretch)
            return True
        status = _STATUS[update.kind]
        if update.incarnation == member.incarnation and (member.status is NodeStatus.LEFT or member.status is status):
            return False  # left sticks; a repeated rumour changes nothing
        self.set(member, status, update.incarnation, now)
        return True

    def set(self, member: SwimMember, status: NodeStatus, incarnation: int, now: float) -> None:
        """``member`` is ``status`` at ``incarnation`` from ``now``: a change is recorded if its status moved."""
        member.incarnation = incarnation
        if status is not NodeStatus.SUSPECT:
            self.suspicions.pop(member.node_id, None)
        if status is not member.status:
            self._changes.append(Change(member.info, member.status, status))
            member.status = status
            member.changed_at = now

    def forget(self, now: float) -> list[str]:
        """Drop the members dead or left for ``forget_after`` by ``now``; returns their ids."""
        gone = [m.node_id for m in self.members.values()
                if m.status in (NodeStatus.DEAD, NodeStatus.LEFT) and now - m.changed_at >= self.cfg.forget_after
                and m.node_id != self.node_id]
        for node_id in gone:
            del self.members[node_id]
        return gone

    def _start_suspicion(self, node_id: str, origin: str, now: float, stretch: int) -> None:
        size = self.size()
        wanted = self.cfg.confirmations if size - 2 >= self.cfg.confirmations else 0
        scale = mesh_scale(size) * stretch
        self.suspicions[node_id] = Suspicion(now, wanted, self.cfg.suspicion_min * scale,
                                             self.cfg.suspicion_max * scale, {origin})
