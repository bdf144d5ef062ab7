"""Failure detector and node table (pure state machine, no I/O).

Liveness is judged by observation, never by comparing another process's
wall-clock stamp with one's own. Every record carries a heartbeat sequence
number that changes with each heartbeat. The table remembers, per node and
incarnation, the time on the *reader's* monotonic clock (``now``) at which that
sequence last changed; a node's age is ``now`` minus that time. A clock that is
wrong in another process therefore cannot make a live node look dead, nor a
dead one look alive.

First sight (a new node, or a new incarnation) counts as a fresh observation,
minus the age of the record on the medium's own clock when the medium has one
(``store_now`` minus ``record.last_seen``; clamped to ``[0, dead_after]``).
That age is what lets a one-shot client, which sees every record once, tell a
dead node from a live one; the backends supply it from a clock that is not any
node's wall clock: Redis ``TIME`` on Redis, the machine's boot clock on SQLite
(see ``mesh_core.backends.sqlite``). After first sight only the sequence
counts: a changed one is a heartbeat seen at ``now``, whatever any stamp says,
so detection lags a death by at most one refresh period.

A hub medium that reads stamps by age (``aged``: Redis, SQLite) gives each
record's age on its own one clock at every read, exact for every age that can
change a verdict; there the age counts at every read, not only at first sight,
since reading a stamp that did not change costs as much as its age.

Output: the status of every node and the changes since the last snapshot. A
higher incarnation overrides anything said about an older one; a graceful
leave sticks until the node comes back with a higher incarnation. The table's
own node (``self_id``) is never judged from its record: the owner says whether
it is cut off from the medium (suspect) or not (active), so a node's own view
never shows itself dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .model import NodeInfo, NodeRole, NodeStatus, NodeType


@dataclass(frozen=True)
class DetectorConfig:
    suspect_after: float
    dead_after: float

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after <= self.dead_after:
            raise ValueError("need 0 < suspect_after <= dead_after")


def judge(last_seen: float, left: bool, now: float, cfg: DetectorConfig) -> NodeStatus:
    """Status of one node from the age of its last heartbeat (``last_seen`` and ``now`` on one clock)."""
    if left:
        return NodeStatus.LEFT
    age = now - last_seen
    if age >= cfg.dead_after:
        return NodeStatus.DEAD
    if age >= cfg.suspect_after:
        return NodeStatus.SUSPECT
    return NodeStatus.ACTIVE


def preferred_hub(active: Iterable[NodeInfo]) -> str | None:
    """The coordination_hub worker with the lowest id among ``active`` nodes: the preferred sweeper and memory
    primary on every backend (and the natural grpc_mesh seed). None when no hub is active."""
    hubs = [n.node_id for n in active if n.node_type is NodeType.COORDINATION_HUB and n.role is NodeRole.WORKER]
    return min(hubs, default=None)


def sweeper(active: Iterable[NodeInfo]) -> str | None:
    """The one node that sweeps (re-routes stranded work, prunes, compacts): the lowest-id active
    coordination_hub worker if any, else the lowest-id active worker. Every node computes it from its own
    view; views agree once membership settles, and a sweep run twice meanwhile is harmless."""
    workers = [n for n in active if n.role is NodeRole.WORKER]
    return preferred_hub(workers) or min((n.node_id for n in workers), default=None)


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
    """A node as this table judges it; ``beat_at`` is on the reader's clock (when its sequence last changed)."""

    info: NodeInfo
    status: NodeStatus
    beat_at: float = 0.0
    verdict: NodeStatus | None = None  # the medium's own judgement, when it judges (gRPC's SWIM)


class MembershipTable:
    """Every known node with its judged status."""

    def __init__(self, cfg: DetectorConfig, self_id: str = "") -> None:
        self.cfg = cfg
        self.self_id = self_id
        self.self_suspect = False
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

    def _status(self, member: Member, now: float) -> NodeStatus:
        if member.info.node_id == self.self_id and not member.info.left:
            return NodeStatus.SUSPECT if self.self_suspect else NodeStatus.ACTIVE
        if member.verdict is not None:
            return NodeStatus.LEFT if member.info.left else member.verdict
        return judge(member.beat_at, member.info.left, now, self.cfg)

    @property
    def _age_cap(self) -> float:
        # Ages are kept no larger than this (a record years old judges as one just dead), and past dead_after
        # with room: ``now - (now - dead_after)`` can round below dead_after and leave a dead node suspect.
        return 2 * self.cfg.dead_after

    def observe(self, records: Iterable[NodeInfo], now: float, *, store_now: float | None = None,
                complete: bool = True, judged: Mapping[str, NodeStatus] | None = None,
                aged: bool = False) -> list[Change]:
        """Fold in a snapshot read at ``now`` (reader's monotonic clock); missing nodes are forgotten if ``complete``.

        ``store_now``: the time on the clock of the records' ``last_seen`` (the medium's); None means ``now``.
        ``judged``: the medium's verdicts by node id, taken instead of judging by age (gRPC's SWIM).
        ``aged``: judge every record by its age on that clock (``MeshSnapshot.aged``), not by its sequence.
        """
        verdicts = judged or {}
        changes: list[Change] = []
        seen: set[str] = set()
        clock = now if store_now is None else store_now
        for record in records:
            seen.add(record.node_id)
            known = self._members.get(record.node_id)
            if known is not None and record.incarnation < known.info.incarnation:
                continue  # stale rumour about an older life of this node
            age = max(0.0, clock - record.last_seen)
            if known is None or record.incarnation > known.info.incarnation:
                member = Member(record, NodeStatus.ACTIVE, now - min(age, self._age_cap),
                                verdicts.get(record.node_id))
                member.status = self._status(member, now)
                self._members[record.node_id] = member
                changes.append(Change(record, None, member.status))
                continue
            if aged:
                known.beat_at = now - min(age, self._age_cap)
            elif record.heartbeat_seq != known.info.heartbeat_seq:
                known.beat_at = now  # seen to change: alive now, whatever any stamp on the record says
            if record.last_seen < known.info.last_seen and not record.left and not aged:
                record = replace(record, last_seen=known.info.last_seen)
            if known.info.left and not record.left:
                # A heartbeat that raced the leave: the leave sticks until a new incarnation.
                record = replace(record, left=True)
            known.info = record
            known.verdict = verdicts.get(record.node_id)
            status = self._status(known, now)
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
            status = self._status(member, now)
            if status is not member.status:
                changes.append(Change(member.info, member.status, status))
                member.status = status
        return changes

    def set_self_suspect(self, suspect: bool, now: float) -> list[Change]:
        """The owner's word on its own node: cut off from the medium (suspect) or not."""
        self.self_suspect = suspect
        return self.tick(now)
