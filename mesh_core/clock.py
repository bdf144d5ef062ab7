"""Hybrid logical clock and version vectors (pure; no I/O).

An HLC stamp is one int: ``physical_ms << 16 | logical``. It never goes
backwards even when the wall clock does, and it moves past any stamp it has
seen, so it orders causally related events across nodes while staying close
to real time.

A remote stamp may pull the clock ahead of the local wall clock by at most
``max_offset_ms`` (as production HLC systems bound it): a stamp further ahead
comes from a node whose clock is wrong, and following it would make every
later local write look that far in the future. Such a stamp is clamped to the
bound, and ``merge`` reports how far ahead it was so the caller can count it
and flag its node.

A node also measures its own wall clock against the medium's reference clock
(``own_clock_offset``): when it is off by more than ``max_offset`` plus the
reference reading's error, its own stamps would be wrong for everyone, so it
refuses to stamp writes until the clock is back within bounds (self-fencing).
With no medium to ask (peer to peer), the reference is the mesh's majority,
measured from probe round trips (``peer_clock_sample``, ``mesh_clock_reference``).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def hlc_physical_ms(stamp: int) -> int:
    return stamp >> LOGICAL_BITS


def hlc_logical(stamp: int) -> int:
    return stamp & LOGICAL_MASK


def hlc_to_seconds(stamp: int) -> float:
    return hlc_physical_ms(stamp) / 1000.0


def clamp_remote(remote: int, wall_ms: int, max_offset_ms: int | None) -> int:
    """``remote``, or the latest stamp a clock reading ``wall_ms`` accepts when ``remote`` is further ahead."""
    if max_offset_ms is None or hlc_physical_ms(remote) <= wall_ms + max_offset_ms:
        return remote
    return (wall_ms + max_offset_ms) << LOGICAL_BITS


def own_clock_offset(local_wall: float, reference_wall: float, reference_error: float,
                     max_offset: float) -> float | None:
    """How far this node's wall clock (``local_wall``, read when the reference was) is off the medium's
    (``reference_wall``, known to within ± ``reference_error`` s), in seconds (+: ahead), when that is past
    ``max_offset`` whatever the reading's error; None while the clock is within bounds."""
    offset = local_wall - reference_wall
    return offset if abs(offset) > max_offset + max(0.0, reference_error) else None


def peer_clock_sample(sent_wall: float, round_trip: float, peer_wall: float) -> tuple[float, float]:
    """A peer's wall clock against this node's, from one exchange: this node sent at ``sent_wall`` (its wall
    clock), the answer, stamped ``peer_wall`` by the peer, came ``round_trip`` s later (measured on the
    monotonic clock). Returns (offset, error): the peer's clock is ``offset`` s ahead of this one (-: behind),
    within ± ``error`` (the stamp was made somewhere within the round trip)."""
    round_trip = max(0.0, round_trip)
    return peer_wall - (sent_wall + round_trip / 2), round_trip / 2


def mesh_clock_reference(samples: Iterable[tuple[float, float]], *, voting: bool) -> tuple[float, float] | None:
    """The mesh's wall clock against this node's, with no clock to ask: the median of the peers' ``samples``
    ((offset, error) as ``peer_clock_sample`` gives them), with this node's own vote (0, 0) when it is a
    ``voting`` member (a worker). Returns (offset, error): the mesh's clock is ``offset`` s ahead of this one,
    within ± ``error``; None with no peer to compare with.

    An even vote takes the lower median: the earlier clock. Two nodes 300 s apart cannot tell which is right,
    but a clock ahead is the harmful one (its writes win ``latest_wins`` and drag every HLC forward), while a
    clock behind only loses its own writes; so the node ahead is the one fenced."""
    votes = sorted(samples)
    if not votes:
        return None
    if voting:
        votes = sorted([*votes, (0.0, 0.0)])
    return votes[(len(votes) - 1) // 2]


def clock_refusal(offset: float, max_offset: float) -> str:
    """The one line a write refused by a skewed clock says."""
    return (f"this node's clock is {offset:+.1f} s off the mesh's (max_clock_offset_seconds {max_offset:g}): "
            f"fix the clock; writes refused")


class HybridLogicalClock:
    """Thread-safe HLC. ``now()`` stamps a local event, ``update()``/``merge()`` merge a remote stamp.

    ``max_offset_ms``: how far ahead of the wall clock a remote stamp may pull it (None: no bound).
    """

    def __init__(self, wall_ms: Callable[[], int] | None = None, last: int = 0,
                 max_offset_ms: int | None = None) -> None:
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._last = last
        self._lock = threading.Lock()
        self.max_offset_ms = max_offset_ms
        self.clamped = 0  # remote stamps refused as too far ahead

    @property
    def last(self) -> int:
        return self._last

    def _advance(self, floor: int, wall_ms: int | None = None) -> int:
        physical = (self._wall_ms() if wall_ms is None else wall_ms) << LOGICAL_BITS
        candidate = max(physical, floor + 1)
        if hlc_logical(candidate) == LOGICAL_MASK and candidate != physical:
            # Logical counter exhausted within one millisecond: borrow the next millisecond.
            candidate = (hlc_physical_ms(candidate) + 1) << LOGICAL_BITS
        self._last = candidate
        return candidate

    def now(self) -> int:
        with self._lock:
            return self._advance(self._last)

    def update(self, remote: int) -> int:
        """Merge a stamp received from another node; the result exceeds both (``remote`` clamped, see ``merge``)."""
        return self.merge(remote)[0]

    def merge(self, remote: int) -> tuple[int, float]:
        """Merge a remote stamp: the new stamp, and how many seconds ``remote`` was ahead of this wall clock
        when that is past ``max_offset_ms`` (then it was clamped to the bound), else 0.0."""
        with self._lock:
            wall = self._wall_ms()
            bounded = clamp_remote(remote, wall, self.max_offset_ms)
            ahead = 0.0
            if bounded != remote:
                self.clamped += 1
                ahead = (hlc_physical_ms(remote) - wall) / 1000.0
            return self._advance(max(self._last, bounded), wall), ahead


class Ordering(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"  # self happened before other (other dominates)
    AFTER = "after"  # self dominates other
    CONCURRENT = "concurrent"


def compare_vectors(mine: Mapping[str, int], other: Mapping[str, int]) -> Ordering:
    """How vector ``mine`` stands to ``other``; a missing entry counts as 0. Plain maps, no copies: a replica
    compares one pair per applied write, thousands a second."""
    less = greater = False
    for node, a in mine.items():
        b = other.get(node, 0)
        if a < b:
            less = True
        elif a > b:
            greater = True
    for node, b in other.items():
        if node not in mine:
            if b > 0:
                less = True
            elif b < 0:
                greater = True
    if less:
        return Ordering.CONCURRENT if greater else Ordering.BEFORE
    return Ordering.AFTER if greater else Ordering.EQUAL


class VersionVector(Mapping[str, int]):
    """Immutable map node id → counter. Missing entries count as 0."""

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._entries: dict[str, int] = {}
        for node, counter in items:
            if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
                raise ValueError(f"version vector counter for {node!r} must be a non-negative int")
            if counter:
                self._entries[str(node)] = counter
        self._hash: int | None = None

    def __getitem__(self, node: str) -> int:
        return self._entries.get(node, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._entries == other._entries
        if isinstance(other, Mapping):
            return self._entries == {k: v for k, v in other.items() if v}
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        inner = ", ".join(f"{k[:8]}:{v}" for k, v in sorted(self._entries.items()))
        return f"VV({inner})"

    def to_dict(self) -> dict[str, int]:
        return dict(self._entries)

    def increment(self, node: str) -> VersionVector:
        entries = dict(self._entries)
        entries[node] = entries.get(node, 0) + 1
        return VersionVector(entries)

    def merge(self, other: Mapping[str, int]) -> VersionVector:
        """Pointwise maximum: the smallest vector that dominates both."""
        entries = dict(self._entries)
        for node, counter in other.items():
            if counter > entries.get(node, 0):
                entries[node] = counter
        return VersionVector(entries)

    def compare(self, other: Mapping[str, int]) -> Ordering:
        return compare_vectors(self._entries, other)

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True when self has seen everything other has (self ≥ other)."""
        return self.compare(other) in (Ordering.AFTER, Ordering.EQUAL)

    def descends_strictly(self, other: Mapping[str, int]) -> bool:
        return self.compare(other) is Ordering.AFTER
