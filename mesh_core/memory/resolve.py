"""Conflict resolution for one key (pure functions, no I/O).

A key's state in a replica is a list of *siblings*: versions none of which
dominates another. ``apply_remote`` folds one incoming version into that
state. Automatic strategies are deterministic: any replica that has seen the
same versions, in any order, ends with the same value and the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..clock import VersionVector
from ..model import MemoryItem

AUTOMATIC = ("latest_wins",)
IMPLEMENTED = AUTOMATIC


@dataclass(frozen=True)
class Resolution:
    siblings: tuple[MemoryItem, ...]
    outcome: str  # applied | ignored | resolved
    losers: tuple[MemoryItem, ...] = ()
    strategy: str = ""


def lww_key(item: MemoryItem) -> tuple[int, str]:
    """Latest wins: higher HLC, ties broken by the higher origin node id."""
    return (item.hlc, item.origin)


def merged_vector(items: Sequence[MemoryItem]) -> dict[str, int]:
    vv = VersionVector()
    for item in items:
        vv = vv.merge(item.vv)
    return vv.to_dict()


def latest_wins(items: Sequence[MemoryItem]) -> tuple[MemoryItem, tuple[MemoryItem, ...]]:
    """One winner carrying the merged vector (so it dominates every input), and the losers."""
    winner = max(items, key=lww_key)
    losers = tuple(i for i in items if i is not winner)
    return replace(winner, vv=merged_vector(items)), losers


def apply_remote(local: Sequence[MemoryItem], incoming: MemoryItem, strategy: str = "latest_wins") -> Resolution:
    incoming_vv = VersionVector(incoming.vv)
    for sibling in local:
        if VersionVector(sibling.vv).dominates(incoming_vv):
            return Resolution(tuple(local), "ignored", strategy=strategy)
    concurrent = [s for s in local if not incoming_vv.dominates(s.vv)]
    superseded = tuple(s for s in local if incoming_vv.dominates(s.vv))
    if not concurrent:
        return Resolution((incoming,), "applied", superseded, strategy)
    winner, losers = latest_wins([*concurrent, incoming])
    return Resolution((winner,), "resolved", superseded + losers, strategy)


def local_write(local: Sequence[MemoryItem], item: MemoryItem, node_id: str) -> MemoryItem:
    """A write that has seen every local sibling: its vector dominates them all."""
    vv = VersionVector(merged_vector(local)).increment(node_id)
    return replace(item, vv=vv.to_dict(), origin=node_id)
