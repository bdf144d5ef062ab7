"""Failure detector and node table (pure state machine, no I/O).

Input: snapshots of node records, each with the time of its last heartbeat as
judged by one clock (the store's clock on hub backends, the receiver's
monotonic clock on gRPC), and ``now`` on that same clock. Output: the status of
every node and the changes since the last snapshot. A higher incarnation
overrides anything said about an older one; a graceful leave sticks until the
node comes back with a higher incarnation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .model import NodeInfo, NodeStatus


@dataclass(frozen=True)
class DetectorConfig:
    suspect_after: float
    dead_after: float

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after <= self.dead_after:
            raise ValueError("need 0 < suspect_after <= dead_after")


def judge(last_seen: float, left: bool, now: float, cfg: DetectorConfig) -> NodeStatus:
    """Status of one node from the age of its last heartbeat."""
    if left:
        return NodeStatus.LEFT
    age = now - last_seen
    if age >= cfg.dead_after:
        return NodeStatus.DEAD
    if age >= cfg.suspect_after:
        return NodeStatus.SUSPECT
    return NodeStatus.ACTIVE


@dataclass(frozen=True)
class Change:
    """``old`` is None when the node (or a new incarnation of it) was first seen."""

    node: NodeInfo
    old: NodeStatus | None
    new: NodeStatus

    @property
    def joined(self) -> bool:
        return self.old is None


@dataclass
class Member:
    info: NodeInfo
    status: NodeStatus


class MembershipTable:
    """Every known node with its judged status."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self._members: dict[str, Member] = {}

    def __len__(self) -> int:
        return len(self._members)

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def members(self) -> list[Member]:
        return list(self._members.values())

    def status_of(self, node_id: str) -> NodeStatus | None:
        member = self._members.get(node_id)
        return member.status if member else None

    def active(self) -> list[NodeInfo]:
        return [m.info for m in self._members.values() if m.status is NodeStatus.ACTIVE]

    def observe(self, records: Iterable[NodeInfo], now: float, *, complete: bool = True) -> list[Change]:
        """Fold in a snapshot; with ``complete`` a node missing from it is forgotten."""
        changes: list[Change] = []
        seen: set[str] = set()
        for record in records:
            seen.add(record.node_id)
            known = self._members.get(record.node_id)
            if known is not None and record.incarnation < known.info.incarnation:
                continue  # stale rumour about an older life of this node
            if known is not None and record.incarnation == known.info.incarnation \
                    and record.last_seen < known.info.last_seen and not record.left:
                record = replace(record, last_seen=known.info.last_seen)
            status = judge(record.last_seen, record.left, now, self.cfg)
            if known is None or record.incarnation > known.info.incarnation:
                self._members[record.node_id] = Member(record, status)
                changes.append(Change(record, None, status))
                continue
            if known.status is NodeStatus.LEFT and not record.left:
                # A heartbeat that raced the leave: the leave sticks until a new incarnation.
                record = replace(record, left=True)
                status = NodeStatus.LEFT
            known.info = record
            if status is not known.status:
                changes.append(Change(record, known.status, status))
                known.status = status
        if complete:
            for node_id in set(self._members) - seen:
                del self._members[node_id]
        return changes

    def tick(self, now: float) -> list[Change]:
        """Re-judge every known node at ``now`` with no new records."""
        changes: list[Change] = []
        for member in self._members.values():
            status = judge(member.info.last_seen, member.info.left, now, self.cfg)
            if status is not member.status:
                changes.append(Change(member.info, member.status, status))
                member.status = status
        return changes
