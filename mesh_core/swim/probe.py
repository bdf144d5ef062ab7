"""SWIM probing and Lifeguard awareness (pure): whom to probe next, what a probe waits for, local health.

Probes go round-robin over a ring shuffled once (newcomers inserted at random
places), every other probe to a member held suspect while there is one. A
node's health score rises with missed acks, nacks not received and
refutations of its own suspicion, and falls with successful probes; its
timeouts are multiplied by ``score + 1``, so a node that is itself slow does
not declare healthy ones dead.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from ..model import LIVE
from .table import Suspicion, SwimMember


@dataclass
class Health:
    """Lifeguard's local health score: 0 is healthy; the timeouts are multiplied by ``score + 1``."""

    limit: int
    score: int = 0

    def add(self, delta: int) -> None:
        self.score = min(self.limit - 1, max(0, self.score + delta))

    @property
    def multiplier(self) -> int:
        return self.score + 1


@dataclass
class Probe:
    """This node's probe in flight: indirect probes at ``timeout_at``, a verdict at ``end_at``."""

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
class Relay:
    """An indirect probe run for ``asker``: forward the target's ack, or nack at ``nack_at``."""

    asker_addr: str
    asker_seq: int
    nack_at: float


class ProbeRing:
    """The probe order: each live member once a round, in an order shuffled once."""

    def __init__(self) -> None:
        self._ring: list[str] = []
        self._at = 0
        self._suspect_turn = False

    def add(self, node_id: str, rng: random.Random) -> None:
        """A new member takes a random place in the ring."""
        self._ring.insert(rng.randint(0, len(self._ring)), node_id)

    def remove(self, node_id: str) -> None:
        self._ring.remove(node_id)

    def next_target(self, members: Mapping[str, SwimMember],
                    suspicions: Mapping[str, Suspicion]) -> SwimMember | None:
        """The next live member of a round-robin over a shuffled ring; every other probe goes to a member
        held suspect while there is one, so that its refutation comes back early.

        The ring is not reshuffled each round (as memberlist does): with a fixed order each member is probed
        by each prober exactly once a round, so the gap after a death is at most one round, never two."""
        self._suspect_turn = not self._suspect_turn and bool(suspicions)
        if self._suspect_turn:
            return members[min(suspicions, key=lambda node: suspicions[node].deadline)]
        for _ in range(len(self._ring)):
            self._at %= len(self._ring)
            member = members.get(self._ring[self._at])
            self._at += 1
            if member is not None and member.status in LIVE:
                return member
        return None
