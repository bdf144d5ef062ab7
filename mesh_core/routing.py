"""Choosing the node for a task (pure functions, no I/O).

Candidates are active worker nodes that have a handler for the task type and
every required capability, and that are neither full nor overloaded. They are
tiered by the task's preferred node types (first preference first), then
ordered by the configured algorithm, with an affinity bonus from each node's
smoothed past success on that task type. Every decision carries a one-line
*why* that is stored on the task.

Affinity scales a node's load cost, it is never added to it: the cost of a node
is the pressure it would have with the task, ``(queued + 1) / capacity``, times
``1 - bonus`` (the bonus at most ``AFFINITY_WEIGHT / 2`` either way). So it
breaks ties among similarly loaded nodes, never overrides a real load difference
(one more than the bonus, relatively), and a node with no history still gets
work once the others are a little busier, however large the capacities are.
"""

from __future__ import annotations

import random as _random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import NoCapacity, UnknownTaskType
from .model import NodeInfo, NodeType

ALGORITHMS = ("least_loaded", "round_robin", "capability_based", "random")
OVERLOAD_THRESHOLD = 0.9
AFFINITY_WEIGHT = 0.3


@dataclass(frozen=True)
class RouteRequest:
    task_type: str
    required_capabilities: frozenset[str] = frozenset()
    preferred_node_types: tuple[NodeType, ...] = ()
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RouteDecision:
    node_id: str
    node_name: str
    why: str
    capacity: int = 0  # the chosen node's max_capacity (the backend checks it atomically on enqueue)


@dataclass
class AffinityStats:
    """Exponentially smoothed success rate and latency of one node on one task type."""

    success: float = 0.5
    latency_s: float = 0.0
    samples: int = 0

    def observe(self, ok: bool, latency_s: float, alpha: float = 0.2) -> None:
        self.success += alpha * ((1.0 if ok else 0.0) - self.success)
        self.latency_s = latency_s if self.samples == 0 else self.latency_s + alpha * (latency_s - self.latency_s)
        self.samples += 1


@dataclass
class AffinityBook:
    """Per (node id, task type) stats; fed from finished tasks, read by the router."""

    stats: dict[tuple[str, str], AffinityStats] = field(default_factory=dict)

    def observe(self, node_id: str, task_type: str, ok: bool, latency_s: float) -> None:
        self.stats.setdefault((node_id, task_type), AffinityStats()).observe(ok, latency_s)

    def score(self, node_id: str, task_type: str) -> float | None:
        entry = self.stats.get((node_id, task_type))
        return entry.success if entry and entry.samples else None


def _pressure(node: NodeInfo, queued: int) -> float:
    return queued / node.capacity if node.capacity > 0 else 1.0


def _load_cost(node: NodeInfo, queued: int, bonus: float) -> float:
    """The pressure ``node`` would have with one more task, scaled down by its affinity bonus (up by a malus)."""
    return _pressure(node, queued + 1) * (1.0 - bonus)


def candidates(req: RouteRequest, nodes: Sequence[NodeInfo], queued: Mapping[str, int],
               overload_threshold: float = OVERLOAD_THRESHOLD) -> list[NodeInfo]:
    """Nodes able and free to take the task; raises naming why there are none."""
    able = [n for n in nodes if req.task_type in n.task_types and n.node_id not in req.exclude]
    if not able:
        raise UnknownTaskType(f"no active node has a handler for task type {req.task_type!r}",
                              hint="start a node that serves it or check the spelling")
    able = [n for n in able if req.required_capabilities <= n.capabilities]
    if not able:
        needed = ", ".join(sorted(req.required_capabilities))
        raise UnknownTaskType(f"no active node serving {req.task_type!r} has every capability in {{{needed}}}")
    free = []
    for n in able:
        q = queued.get(n.node_id, 0)
        if q + 1 <= n.capacity and _pressure(n, q) <= overload_threshold:
            free.append(n)
    if not free:
        raise NoCapacity(f"every node that can run {req.task_type!r} is full ({len(able)} node(s))",
                         hint="retry later, add nodes, or raise max_capacity")
    return free


def _tier(req: RouteRequest, nodes: list[NodeInfo]) -> tuple[list[NodeInfo], str]:
    for rank, node_type in enumerate(req.preferred_node_types):
        tier = [n for n in nodes if n.node_type == node_type]
        if tier:
            return tier, f"preferred {node_type.value}" + (f" (choice {rank + 1})" if rank else "")
    if req.preferred_node_types:
        return nodes, "no preferred type free"
    return nodes, ""


def route(req: RouteRequest, nodes: Sequence[NodeInfo], queued: Mapping[str, int], *,
          algorithm: str = "least_loaded", affinity: AffinityBook | None = None,
          round_robin_counter: int = 0, rng: _random.Random | None = None,
          overload_threshold: float = OVERLOAD_THRESHOLD) -> RouteDecision:
    """Pick one node for ``req``. ``queued`` maps node id → tasks assigned or running there."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown load-balancing algorithm {algorithm!r}")
    pool, tier_why = _tier(req, candidates(req, nodes, queued, overload_threshold))
    pool = sorted(pool, key=lambda n: n.node_id)

    def bonus(n: NodeInfo) -> float:
        if affinity is None:
            return 0.0
        s = affinity.score(n.node_id, req.task_type)
        return 0.0 if s is None else AFFINITY_WEIGHT * (s - 0.5)

    def fmt(n: NodeInfo) -> str:
        return f"{_pressure(n, queued.get(n.node_id, 0)):.2f}"

    if algorithm == "round_robin":
        chosen = pool[round_robin_counter % len(pool)]
        why = f"round_robin {round_robin_counter % len(pool) + 1}/{len(pool)}"
    elif algorithm == "random":
        chosen = (rng or _random).choice(pool)
        why = f"random of {len(pool)}"
    elif algorithm == "capability_based":
        def fit(n: NodeInfo) -> float:
            # A node whose abilities are mostly what the task needs is a specialist for it; among equal
            # specialists the load cost (affinity scaling it) decides.
            spec = len(req.required_capabilities) / len(n.capabilities) if n.capabilities else 0.0
            return spec - 0.1 * _load_cost(n, queued.get(n.node_id, 0), bonus(n))
        chosen = max(pool, key=fit)
        why = f"capability_based fit {fit(chosen):.2f}"
    else:
        def cost(n: NodeInfo) -> float:
            return _load_cost(n, queued.get(n.node_id, 0), bonus(n))
        chosen = min(pool, key=cost)
        others = sorted(fmt(n) for n in pool if n is not chosen)[:3]
        why = f"least_loaded {fmt(chosen)}" + (f" vs {', '.join(others)}" if others else " (only candidate)")
    if affinity is not None:
        s = affinity.score(chosen.node_id, req.task_type)
        if s is not None:
            why += f"; affinity {s:.2f} on {req.task_type}"
    if tier_why:
        why = f"{tier_why}; {why}"
    return RouteDecision(chosen.node_id, chosen.name, why, chosen.capacity)
