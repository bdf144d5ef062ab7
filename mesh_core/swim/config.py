"""SWIM timings and fan-outs (pure): the detector's settings and the two curves that scale with mesh size."""

from __future__ import annotations

import math
from dataclasses import dataclass


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


def retransmit_limit(mult: int, members: int) -> int:
    """How many times one update is sent: ``mult * ceil(log10(members + 1))``."""
    return mult * max(1, math.ceil(math.log10(members + 1)))


def mesh_scale(members: int) -> float:
    """Suspicion timeouts grow with log10 of the mesh size past ten members."""
    return max(1.0, math.log10(max(1, members)))
