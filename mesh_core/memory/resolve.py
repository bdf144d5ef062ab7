"""Conflict resolution for one key (pure functions, no I/O).

State of a key
--------------
Every write is an *original*: a ``MemoryItem`` stamped by ``local_write`` (or
``resolve_manually``) whose vector is the merge of everything its writer had
seen, plus one on the writer's own entry. The causal state of a key in a
replica is its **frontier**: the originals it has received that no other
received original dominates. ``add_to_frontier`` folds one incoming original in:

- some member dominates it, or equals it → ignored (nothing changes);
- otherwise the members it dominates are dropped (superseded) and it joins.

The frontier is the set of *maximal* elements of all originals received, so it
depends only on that set — not on the order, not on duplicates. (Version
vectors order writes exactly as causality does: a writer's entry counts its
own writes, and each write's vector covers everything it saw.) It is an
antichain, and two writes by one node are always causally ordered, so its
members have distinct origins: the sibling count never exceeds the number of
concurrent writers. Should two *different* items ever carry an equal vector (a
misbehaving node), the larger by ``(hlc, origin, value encoding)`` is kept, which
is again an order-free choice.

What readers see
----------------
``resolve(frontier, strategy)`` turns a frontier into the *visible* siblings, as
a pure function of the frontier (kept sorted by ``(hlc, origin, vector)``, a
total order on an antichain), so every replica with the same frontier shows the
same siblings, values and vectors:

- ``latest_wins``: the frontier member with the highest ``(hlc, origin)``, carrying
  the merged (pointwise max) vector of the whole frontier so it dominates all.
- ``source_priority``: highest ``(rank(origin), hlc, origin)``; the ``Ranking`` maps
  node ids to ranks (higher wins; equal rank → latest wins). Merged vector.
- ``merge_compatible``: ``merge_values`` of all frontier values at once (rules below).
  Success → one item: the merged value, the vector merged over the frontier,
  origin and hlc of the member with the highest ``(hlc, origin)``, the highest
  priority. Any disagreement → ``manual`` fallback naming the paths.
- ``manual``: every frontier member is kept; ``conflict`` is set with a reason. A
  person settles it with ``resolve_manually``, which writes a new original whose
  vector dominates every sibling, so it supersedes them everywhere.
- ``version_vector``: every frontier member kept and returned to readers (Riak
  style) until a write that has seen them all; ``warning`` is set from 25 siblings.

Why folding is order-independent (the property tests check it)
---------------------------------------------------------------
``resolve`` is only ever applied to a frontier, never to a previous result, so
the outcome is ``resolve(maximal(set of originals seen))`` whatever the order.
This matters: folding a *derived* merged item with a new write is not the same
as merging the originals. With ``A ∥ B`` merged into ``M`` and a later ``C`` that
has seen ``A`` but not ``B``, the truth is ``merge(B, C)`` (C replaced A's fields),
but ``merge(M, C)`` still contains A's fields; likewise ``source_priority`` would
keep a high-ranked A that C had already overwritten. So a replica must keep the
frontier of originals (``Resolution.sources``) besides the visible siblings, pass
it back as ``apply_remote(..., sources=...)``, and only originals may travel
between replicas (a derived item is never re-shipped).

Two strategies are exact even when only the visible siblings are kept (no
``sources``): ``manual`` and ``version_vector`` (visible == frontier), and
``latest_wins``, because a writer's HLC exceeds every stamp it has seen
(``local_write`` enforces it), so the frontier's ``(hlc, origin)`` maximum is the
maximum over *all* originals seen and the merged vector is the join of all
seen: ``(max, join)`` is a semilattice, so folding derived items is exact.

``merge_values`` rules (n-ary; values compared by a canonical encoding, so
``1``, ``1.0`` and ``True`` differ):

- equal values merge to themselves;
- mappings merge key by key (union of keys; a key only some sides have is taken
  from them — absence is not a disagreement; recursion on shared keys);
- lists whose elements are all scalars are sets: the merge is the union without
  duplicates, sorted by the canonical encoding (a deterministic order that
  does not depend on arrival); lists containing a mapping or list are records
  merged position by position (``items[2].name``); an empty list is neutral;
  a scalar-only list against a list of records disagrees;
- anything else (different scalars, different types, a deletion against a
  change) disagrees at its path: ``profile.age``, ``tags[2]``, ``[3]``; ``$`` is
  the root.

On values without disagreement it is commutative, associative and idempotent
(per key/position it is an n-ary function of the *set* of values; unions and
sorts are too), so merging originals all at once or in any grouping agrees.
A two-way merge has no common ancestor: a field deleted on one side while kept
on the other comes back; use ``manual`` for data where that matters.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ..clock import Ordering, VersionVector, compare_vectors
from ..model import MemoryItem

STRATEGIES = ("latest_wins", "merge_compatible", "source_priority", "manual", "version_vector")
AUTOMATIC = ("latest_wins", "merge_compatible", "source_priority")  # settle to one value (merge may fall back)
IMPLEMENTED = STRATEGIES
SIBLING_WARNING = 25

# Resolution.outcome values
APPLIED = "applied"  # the incoming write superseded everything (or was the first)
IGNORED = "ignored"  # already seen, or older than what is here
RESOLVED = "resolved"  # concurrent writes settled by latest_wins / source_priority
MERGED = "merged"  # concurrent writes merged by merge_compatible
CONFLICT = "conflict"  # concurrent writes kept for a person (manual, or merge fallback)
SIBLINGS = "siblings"  # concurrent writes kept for readers (version_vector)

ROOT_PATH = "$"


class Resolution(NamedTuple):
    """The key's new state after a fold, and what to tell people about it (a named tuple, not a frozen
    dataclass: a replica makes one per applied write, and a frozen dataclass takes several times as long to build).

    ``siblings`` is what readers see (one item when settled); ``sources`` is the
    frontier of originals to keep and pass back as ``apply_remote(sources=...)``;
    ``losers`` are values that were visible (or arrived) and are no longer, for
    the history. ``strategy`` is the strategy that decided (``manual`` when
    ``merge_compatible`` fell back). For ``ignored`` only ``siblings`` and ``sources``
    are meaningful (unchanged).
    """

    siblings: tuple[MemoryItem, ...]
    outcome: str  # applied | ignored | resolved | merged | conflict | siblings
    losers: tuple[MemoryItem, ...] = ()
    strategy: str = ""
    conflict: bool = False
    reason: str = ""
    disagreements: tuple[str, ...] = ()
    warning: str | None = None
    sources: tuple[MemoryItem, ...] = ()


@dataclass(frozen=True)
class MergeResult:
    ok: bool
    value: Any
    disagreements: tuple[str, ...] = ()


class Ranking:
    """Node id → rank for ``source_priority``: a higher rank wins; unknown nodes get ``default``.

    Every replica must rank a node the same way, so build it from shared
    configuration (see ``from_order``), not from local observations.
    """

    __slots__ = ("_ranks", "default")

    def __init__(self, ranks: Mapping[str, int] | None = None, default: int = 0) -> None:
        self._ranks = dict(ranks or {})
        self.default = default

    def rank(self, origin: str) -> int:
        return self._ranks.get(origin, self.default)

    def to_dict(self) -> dict[str, int]:
        return dict(self._ranks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ranking):
            return NotImplemented
        return self._ranks == other._ranks and self.default == other.default

    def __hash__(self) -> int:
        return hash((frozenset(self._ranks.items()), self.default))

    def __repr__(self) -> str:
        return f"Ranking({self._ranks!r}, default={self.default})"

    @classmethod
    def from_order(cls, order: Sequence[str], nodes: Iterable[tuple[str, str, str]] = ()) -> Ranking:
        """Rank nodes by a preference list, best first; each entry is a node id, name or type.

        ``nodes`` gives ``(node_id, name, node_type)`` of the nodes to rank. A node
        takes the rank of the first entry matching its id, name or type:
        ``len(order) - index`` (so ≥ 1); nodes matching nothing rank 0. Node ids in
        ``order`` are ranked even when absent from ``nodes``.
        """
        position: dict[str, int] = {}
        for index, entry in enumerate(order):
            position.setdefault(str(entry), index)
        top = len(order)
        ranks: dict[str, int] = {}
        for entry, index in position.items():
            ranks.setdefault(entry, top - index)  # as a node id
        for node_id, name, node_type in nodes:
            matches = [position[x] for x in (node_id, name, str(node_type)) if x in position]
            if matches:
                ranks[node_id] = top - min(matches)
        return cls(ranks, default=0)


# -- canonical encoding ------------------------------------------------------------------

def canonical(value: Any) -> str:
    """A stable text encoding: equal iff the values are equal *with their types*; sorts deterministically."""
    if value is None:
        return "n"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return "d" + ("nan" if math.isnan(value) else repr(value))
    if isinstance(value, str):
        return "s" + _quote(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "b" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = sorted((canonical(k), canonical(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    return "?" + _quote(f"{type(value).__qualname__}:{value!r}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- items and vectors -------------------------------------------------------------------

def lww_key(item: MemoryItem) -> tuple[int, str]:
    """Latest wins: higher HLC, ties broken by the higher origin node id."""
    return (item.hlc, item.origin)


def order_key(item: MemoryItem) -> tuple[int, str, tuple[tuple[str, int], ...]]:
    """``(hlc, origin, vector)``: a total order on items with distinct vectors, such as a frontier's."""
    return (item.hlc, item.origin, tuple(sorted((k, v) for k, v in item.vv.items() if v)))


def item_sort_key(item: MemoryItem) -> tuple[int, str, tuple[tuple[str, int], ...], str]:
    """A total order on all items (content last), for the rare equal-vector tie."""
    return (*order_key(item), _content(item))


def _content(item: MemoryItem) -> str:
    return f"{int(item.tombstone)}{item.priority}|{canonical(item.value)}"


def _identity(item: MemoryItem) -> tuple[str, int, str]:
    """A version's identity for history purposes: who, when and what, not the vector."""
    return (item.origin, item.hlc, _content(item))


def merged_vector(items: Iterable[MemoryItem]) -> dict[str, int]:
    vv = VersionVector()
    for item in items:
        vv = vv.merge(item.vv)
    return vv.to_dict()


def latest_wins(items: Sequence[MemoryItem]) -> tuple[MemoryItem, tuple[MemoryItem, ...]]:
    """One winner carrying the merged vector (so it dominates every input), and the losers."""
    winner = max(items, key=item_sort_key)
    losers = tuple(i for i in items if i is not winner)
    return replace(winner, vv=merged_vector(items)), losers


# -- the frontier ------------------------------------------------------------------------

def add_to_frontier(frontier: Sequence[MemoryItem], incoming: MemoryItem
                    ) -> tuple[tuple[MemoryItem, ...], tuple[MemoryItem, ...], bool]:
    """Fold one original into a frontier: ``(new frontier, superseded members, ignored)``."""
    incoming_vv = VersionVector(incoming.vv)
    kept: list[MemoryItem] = []
    superseded: list[MemoryItem] = []
    for member in frontier:
        order = incoming_vv.compare(member.vv)
        if order is Ordering.BEFORE:
            return tuple(frontier), (), True
        if order is Ordering.EQUAL:
            if member == incoming or item_sort_key(member) >= item_sort_key(incoming):  # a duplicate: no encoding
                return tuple(frontier), (), True
            superseded.append(member)  # same vector, different content: keep the larger, deterministically
        elif order is Ordering.AFTER:
            superseded.append(member)
        else:
            kept.append(member)
    kept.append(incoming)
    return tuple(sorted(kept, key=order_key)), tuple(superseded), False


def frontier(items: Iterable[MemoryItem]) -> tuple[MemoryItem, ...]:
    """The maximal items (duplicates and dominated ones dropped), in a deterministic order."""
    out: tuple[MemoryItem, ...] = ()
    for item in items:
        out, _, _ = add_to_frontier(out, item)
    return out


# -- merging values ----------------------------------------------------------------------

def merge_values(values: Iterable[Any]) -> MergeResult:
    """Merge values that do not disagree (rules in the module docstring); name every disagreeing path."""
    disagreements: list[str] = []
    value = _merge(list(values), "", disagreements)
    if disagreements:
        return MergeResult(False, None, tuple(disagreements))
    return MergeResult(True, value)


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple)


def _field(path: str, key: Any) -> str:
    if isinstance(key, str):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _merge(values: list[Any], path: str, disagreements: list[str]) -> Any:
    distinct: dict[str, Any] = {}
    for v in values:
        distinct.setdefault(canonical(v), v)
    if len(distinct) <= 1:
        return next(iter(distinct.values()), None)
    ordered = [distinct[k] for k in sorted(distinct)]
    if all(isinstance(v, Mapping) for v in ordered):
        keys: dict[str, Any] = {}
        for v in ordered:
            for k in v:
                keys.setdefault(canonical(k), k)
        return {keys[ck]: _merge([v[keys[ck]] for v in ordered if keys[ck] in v], _field(path, keys[ck]),
                                 disagreements)
                for ck in sorted(keys)}
    if all(isinstance(v, list | tuple) for v in ordered):
        lists = [v for v in ordered if len(v)]
        if len(lists) == 1:
            return list(lists[0])
        record_lists = [any(_is_container(e) for e in v) for v in lists]
        if not any(record_lists):
            union: dict[str, Any] = {}
            for v in lists:
                for e in v:
                    union.setdefault(canonical(e), e)
            return [union[k] for k in sorted(union)]
        if all(record_lists):
            length = max(len(v) for v in lists)
            return [_merge([v[i] for v in lists if len(v) > i], f"{path}[{i}]", disagreements)
                    for i in range(length)]
    disagreements.append(path or ROOT_PATH)
    return ordered[0]


def merge_items(items: Sequence[MemoryItem]) -> MergeResult:
    """Merge concurrent items into one value; a deletion against a change disagrees at the root."""
    live = [i for i in items if not i.tombstone]
    if not live:
        return MergeResult(True, max(items, key=lww_key).value)
    if len(live) < len(items):
        return MergeResult(False, None, (ROOT_PATH,))
    return merge_values(i.value for i in live)


# -- strategies over a frontier ----------------------------------------------------------

def _short(node: str) -> str:
    return node[:8]


def resolve(items: Iterable[MemoryItem], strategy: str = "latest_wins", *, ranking: Ranking | None = None,
            sibling_warning: int = SIBLING_WARNING) -> Resolution:
    """What readers see for a set of originals (reduced to its frontier first), under ``strategy``.

    ``losers`` here are the frontier members not shown (latest_wins / source_priority).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown conflict strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    front = frontier(items)
    if not front:
        return Resolution((), IGNORED, strategy=strategy)
    if len(front) == 1:
        return Resolution(front, APPLIED, strategy=strategy, sources=front)
    vv = merged_vector(front)
    writers = ", ".join(_short(i.origin) for i in front)
    if strategy == "latest_wins":
        winner = max(front, key=order_key)
        return Resolution((replace(winner, vv=vv),), RESOLVED, tuple(i for i in front if i is not winner), strategy,
                          reason=f"latest of {writers}: {_short(winner.origin)}", sources=front)
    if strategy == "source_priority":
        rank = (ranking or Ranking()).rank
        winner = max(front, key=lambda i: (rank(i.origin), order_key(i)))
        tied = sum(1 for i in front if rank(i.origin) == rank(winner.origin)) > 1
        how = "equal rank, latest wins" if tied else f"rank {rank(winner.origin)}"
        return Resolution((replace(winner, vv=vv),), RESOLVED, tuple(i for i in front if i is not winner), strategy,
                          reason=f"{_short(winner.origin)} of {writers} by {how}", sources=front)
    if strategy == "merge_compatible":
        merged = merge_items(front)
        if merged.ok:
            top = max(front, key=order_key)
            item = replace(top, value=merged.value, vv=vv, priority=max(i.priority for i in front))
            return Resolution((item,), MERGED, (), strategy, reason=f"merged {writers}", sources=front)
        paths = ", ".join(merged.disagreements)
        return Resolution(front, CONFLICT, (), "manual", conflict=True,
                          reason=f"merge_compatible: writes from {writers} disagree at {paths}",
                          disagreements=merged.disagreements, warning=_warning(front, sibling_warning),
                          sources=front)
    if strategy == "manual":
        return Resolution(front, CONFLICT, (), strategy, conflict=True,
                          reason=f"concurrent writes from {writers} await a manual resolution",
                          warning=_warning(front, sibling_warning), sources=front)
    return Resolution(front, SIBLINGS, (), strategy, reason=f"{len(front)} concurrent siblings from {writers}",
                      warning=_warning(front, sibling_warning), sources=front)


def _warning(front: Sequence[MemoryItem], threshold: int) -> str | None:
    if threshold > 0 and len(front) >= threshold:
        item = front[0]
        return (f"{item.memory_type}/{item.key} has {len(front)} concurrent siblings (warning at {threshold}); "
                "write a value that has seen them all to collapse them")
    return None


# -- the calls the manager makes ---------------------------------------------------------

def apply_remote(local: Sequence[MemoryItem], incoming: MemoryItem, strategy: str = "latest_wins", *,
                 ranking: Ranking | None = None, sources: Sequence[MemoryItem] | None = None,
                 sibling_warning: int = SIBLING_WARNING) -> Resolution:
    """Fold an incoming original into a key's state.

    ``local`` is what readers saw (the stored visible siblings); ``sources`` is the
    stored frontier of originals (``Resolution.sources`` from the last fold or
    ``(item,)`` after a local write). Without ``sources`` (None or empty, e.g. a key
    stored before sources were kept) the frontier is taken to be ``local``, which
    is exact for latest_wins, manual and version_vector only.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown conflict strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not local and not sources:  # a key new here: what the general fold gives, without comparing contents
        return Resolution((incoming,), APPLIED, strategy=strategy, sources=(incoming,))
    stored = sources if sources else local
    standing = _standing(stored, incoming)
    if standing is Ordering.AFTER:  # the usual rewrite: what the general fold gives, without resolving
        return Resolution((incoming,), APPLIED, tuple(s for s in local if not _same_version(s, incoming)), strategy,
                          sources=(incoming,))
    base = frontier(stored)
    new, _superseded, ignored = (base, (), True) if standing is Ordering.BEFORE else add_to_frontier(base, incoming)
    if ignored:
        return Resolution(tuple(local), IGNORED, strategy=strategy, sources=base)
    after = resolve(new, strategy, ranking=ranking, sibling_warning=sibling_warning)
    visible = {_identity(s) for s in after.siblings}
    losers = [s for s in local if _identity(s) not in visible]
    if _identity(incoming) not in visible and after.outcome != MERGED:
        losers.append(incoming)
    outcome = APPLIED if len(new) == 1 else after.outcome
    return after._replace(outcome=outcome, losers=tuple(losers))


def _standing(stored: Sequence[MemoryItem], incoming: MemoryItem) -> Ordering | None:
    """Where an incoming original stands against a key's stored items, when that alone decides the fold:
    ``AFTER`` when it dominates every one (it supersedes the key's whole frontier), ``BEFORE`` when one dominates
    it or is it (the frontier holds that one or a member dominating it: ignored); None otherwise."""
    after = True
    for item in stored:
        order = compare_vectors(incoming.vv, item.vv)
        if order is Ordering.BEFORE or (order is Ordering.EQUAL and item == incoming):
            return Ordering.BEFORE
        if order is not Ordering.AFTER:
            after = False
    return Ordering.AFTER if after else None


def _same_version(a: MemoryItem, b: MemoryItem) -> bool:
    """``_identity(a) == _identity(b)``, encoding the values only when who and when are the same."""
    return a.origin == b.origin and a.hlc == b.hlc and _content(a) == _content(b)


def local_write(local: Sequence[MemoryItem], item: MemoryItem, node_id: str) -> MemoryItem:
    """A write that has seen every local sibling: its vector dominates them all.

    Its stamp is raised above every sibling's if the clock lags, so a write is
    always later than what it replaces (latest_wins relies on it).
    """
    vv = VersionVector(merged_vector(local)).increment(node_id)
    hlc = max([item.hlc, *(s.hlc + 1 for s in local)])
    return replace(item, vv=vv.to_dict(), origin=node_id, hlc=hlc)


def resolve_manually(siblings: Sequence[MemoryItem], chosen_value: Any, node_id: str, hlc: int, *,
                     tombstone: bool = False, priority: int | None = None) -> MemoryItem:
    """A person's resolution (a picked sibling's value, a merge, or a new value) as a new original.

    Its vector is the merge of every sibling plus one on the resolver's entry, so
    it dominates them all: every replica applies it as a plain supersede, with no
    new conflict. Pass the siblings *and* sources known here so nothing is missed.
    """
    if not siblings:
        raise ValueError("resolve_manually needs the siblings it settles")
    first = siblings[0]
    if any((s.memory_type, s.key) != (first.memory_type, first.key) for s in siblings):
        raise ValueError("resolve_manually: siblings belong to different keys")
    draft = MemoryItem(first.memory_type, first.key, chosen_value, {}, hlc, node_id,
                       max(s.priority for s in siblings) if priority is None else priority, tombstone)
    return local_write(siblings, draft, node_id)


def local_sibling(siblings: Sequence[MemoryItem], node_id: str) -> MemoryItem:
    """The sibling a reader on ``node_id`` is shown while in conflict: its own write, else the latest."""
    own = [s for s in siblings if s.origin == node_id]
    return max(own or siblings, key=item_sort_key)


# -- a batch of incoming writes ----------------------------------------------------------

KeyName = tuple[str, str]  # (memory_type, key)


def _stored(items: Sequence[MemoryItem]) -> tuple[MemoryItem, ...]:
    """Items in the order a replica reads a key's rows back: ``(hlc, origin)``."""
    if len(items) < 2:
        return tuple(items)
    return tuple(sorted(items, key=lambda i: (i.hlc, i.origin)))


class KeyFold(NamedTuple):
    """One key after a batch of incoming writes was folded into it (see ``fold_batch``; a named tuple, as
    ``Resolution``).

    ``siblings`` and ``sources`` are its new state (in stored order); ``losers`` pairs every value that left
    the visible state, in order, with the strategy that decided; ``steps`` is each incoming write that changed
    the key with its ``Resolution``, in arrival order; ``fresh``: the key had no rows before the batch.
    """

    memory_type: str
    key: str
    siblings: tuple[MemoryItem, ...]
    sources: tuple[MemoryItem, ...]
    losers: tuple[tuple[MemoryItem, str], ...]
    steps: tuple[tuple[MemoryItem, Resolution], ...]
    fresh: bool


def fold_batch(states: Mapping[KeyName, tuple[Sequence[MemoryItem], Sequence[MemoryItem]]],
               incoming: Iterable[MemoryItem], strategy_of: Callable[[str], str], *, ranking: Ranking | None = None,
               sibling_warning: int = SIBLING_WARNING) -> dict[KeyName, KeyFold]:
    """Fold a batch of incoming originals into the keys' stored ``(siblings, sources)`` in one pass.

    The result is what ``apply_remote`` gives applied to each item in turn, with the key's state stored and read
    back between items (in stored order), which is what a replica did one item at a time: the same final
    siblings and sources, the same losers in the same order, the same changes. Keys the batch did not change
    are left out. ``strategy_of(memory_type)`` names the conflict strategy of a type.
    """
    current: dict[KeyName, tuple[tuple[MemoryItem, ...], tuple[MemoryItem, ...]]] = {}
    losers: dict[KeyName, list[tuple[MemoryItem, str]]] = {}
    steps: dict[KeyName, list[tuple[MemoryItem, Resolution]]] = {}
    strategies: dict[str, str] = {}
    for item in incoming:
        name = (item.memory_type, item.key)
        state = current.get(name)
        if state is None:
            siblings, sources = states.get(name, ((), ()))
            state = current[name] = (_stored(siblings), _stored(sources))
        strategy = strategies.get(item.memory_type)
        if strategy is None:
            strategy = strategies[item.memory_type] = strategy_of(item.memory_type)
        result = apply_remote(state[0], item, strategy, ranking=ranking, sources=state[1],
                              sibling_warning=sibling_warning)
        if result.outcome == IGNORED:
            continue
        current[name] = (_stored(result.siblings), _stored(result.sources) if result.sources else state[1])
        if result.losers:
            losers.setdefault(name, []).extend((loser, result.strategy) for loser in result.losers)
        changes = steps.get(name)
        if changes is None:
            steps[name] = [(item, result)]
        else:
            changes.append((item, result))
    out: dict[KeyName, KeyFold] = {}
    for name, changes in steps.items():
        before = states.get(name)
        siblings, sources = current[name]
        out[name] = KeyFold(name[0], name[1], siblings, sources, tuple(losers.get(name, ())), tuple(changes),
                            fresh=before is None or (not before[0] and not before[1]))
    return out


def conflict_id_of(item: MemoryItem, result: Resolution) -> str:
    """The id of the conflict a fold opened: the same on every replica (the key and its siblings' marks)."""
    marks = sorted((s.origin, s.vv.get(s.origin, 0)) for s in result.siblings)
    return hashlib.sha1(repr((item.memory_type, item.key, marks)).encode()).hexdigest()[:16]
