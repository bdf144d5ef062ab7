"""Memory: this node's replica, local writes, applying others' writes, conflicts, history and rollback.

Conflict decisions come from the pure ``mesh_core.memory.resolve``; the
replica is the node's own SQLite file. Reading the mesh's memory log and
anti-entropy live in ``sync.py``; the master_slave primary in ``primary.py``; writer backpressure in
``backpressure.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .. import codec
from ..backends.contracts import TOPIC_MEMORY, MemoryLog
from ..clock import HybridLogicalClock
from ..coalesce import Coalescer
from ..errors import (
    BackendError,
    BackendUnavailable,
    CodecError,
    MemoryNotFound,
    MeshError,
    SyncTimeout,
    UsageError,
)
from ..events import ConflictOpened, ConflictResolved, MemoryChanged
from ..memory.digest import bucket_of
from ..memory.history import earlier_versions, pick_version
from ..memory.resolve import (
    SIBLING_WARNING,
    KeyFold,
    KeyName,
    Ranking,
    conflict_id_of,
    fold_batch,
    local_sibling,
    local_write,
    merge_items,
    resolve_manually,
)
from ..memory.store import KeyChange, KeyState, Mark, ReplicaStore, item_from_wire, item_to_wire
from ..model import LIVE, Conflict, MemoryItem, NodeRole, NodeStatus, Recollection
from ..security import ORIGIN_HOST, ORIGIN_NAME, memory_parts, sign
from .backpressure import WriterBackpressure
from .context import NodeContext
from .membership import MembershipService

STRONG_POLL_SECONDS = 0.005  # how often a strong write looks whether every active node has applied it
NO_VALUE: Any = object()  # resolve_conflict was given no value (None is a value: a fact may be null)

# master_slave: hands a write to the primary when this node is not it; True when the write went there.
Forwarder = Callable[[str, Any, int, str, bool], Awaitable[bool]]
REFUSED = "write refused by the medium"  # why a conflict closed when the write that opened it is undone


Framed = tuple[MemoryItem, list[MemoryItem], bytes]  # a local write, the key's visible siblings it replaces, its frame


@dataclasses.dataclass
class _Turn:
    """One key's turn among local writes: the lock, and how many writes hold it or wait for it."""

    name: KeyName
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


class MemoryService:
    """The local replica and every change to it, local or from the mesh."""

    def __init__(self, ctx: NodeContext, members: MembershipService) -> None:
        self.ctx = ctx
        self.members = members
        self.replica: ReplicaStore | None = None
        self.hlc = HybridLogicalClock()
        self.forwarder: Forwarder | None = None
        self._ranking: Ranking | None = None
        self._ranking_generation = -1
        self._host = socket.gethostname()
        self._turns: dict[KeyName, _Turn] = {}  # keys local writes hold or wait for (see ``_turn``)
        self.backpressure = WriterBackpressure(ctx, members)  # held by max_lag_items
        # Local writes made in one event-loop pass (concurrent callers, each holding its keys' turns) are stored in
        # one replica change and published together; a batch does not wait for the one before it.
        self._local_writes: Coalescer[Framed, Any] = Coalescer(self._commit_local_writes, overlap=True)

    @property
    def log(self) -> MemoryLog:
        return self.ctx.backend

    @property
    def store(self) -> ReplicaStore:
        if self.replica is None:
            raise UsageError("this node's memory replica is not open", hint="await mesh.start() first")
        return self.replica

    def open(self, path: str | None) -> None:
        self.replica = ReplicaStore(path, self.ctx.config.memory_sync.history_size)
        if self.replica.not_upgraded:
            self.ctx.problem("replica_errors", f"memory replica {path}: {self.replica.not_upgraded}")
        self.hlc = HybridLogicalClock(last=max(int(self.replica.get_meta("hlc") or 0), self.replica.max_hlc()),
                                      max_offset_ms=round(self.ctx.config.max_clock_offset_seconds * 1000))

    def close(self) -> None:
        if self.replica is not None:
            self.replica.set_meta("hlc", str(self.hlc.last))
            self.replica.close()
            self.replica = None

    def count(self) -> int:
        return self.replica.count() if self.replica else 0

    def keys(self, pattern: str = "*") -> list[tuple[str, str, int]]:
        """``(memory_type, key, siblings)`` of the keys in the replica matching a glob ``pattern``."""
        return list(self.replica.keys(pattern)) if self.replica else []

    def metrics(self) -> dict[str, Any]:
        return {"memory_items": self.count()}

    def _ranking_now(self) -> Ranking | None:
        """source_priority: the configured ranking of nodes, rebuilt when membership changed."""
        order = self.ctx.config.memory_sync.source_priority
        if not order:
            return None
        if self._ranking is None or self._ranking_generation != self.members.generation:
            ctx = self.ctx
            nodes = [(m.info.node_id, m.info.name, m.info.node_type.value) for m in self.members.members()]
            if ctx.identity and ctx.profile:
                nodes.append((ctx.node_id, ctx.name, ctx.profile.node_type.value))
            self._ranking = Ranking.from_order(order, nodes)
            self._ranking_generation = self.members.generation
        return self._ranking

    # -- local writes ----------------------------------------------------------------------------
    async def write(self, memory_type: str, memory_data: Any, priority: int = 5, key: str | None = None, *,
                    tombstone: bool = False) -> str:
        """Write a fact to the local replica and push it to the mesh (see ``sync_memory_item``)."""
        key = key or f"{memory_type}:{uuid.uuid4().hex[:12]}"
        if self.forwarder is not None and await self.forwarder(memory_type, memory_data, priority, key, tombstone):
            return key
        self.members.fence_writes()
        await self.backpressure.hold_back()
        async with self._turn(memory_type, [key]):
            if not self.ctx.is_worker:
                await self.catch_up(key, memory_type)
            position = (await self._local_writes(self._framed(
                [self._local_item(memory_type, key, memory_data, priority, tombstone)])))[0]
        await self._settle(key, position)
        return key

    async def write_many(self, memory_type: str, values: Mapping[str, Any], priority: int = 5) -> list[str]:
        """Many facts of one type in one replica commit and one publish (see ``sync_memory_items``)."""
        keys = list(values)
        if self.ctx.config.memory_sync.strategy in ("strong", "master_slave"):
            return [await self.write(memory_type, values[k], priority, k) for k in keys]
        if not keys:
            return keys
        self.members.fence_writes()
        await self.backpressure.hold_back()
        async with self._turn(memory_type, keys):
            if not self.ctx.is_worker:  # a client's replica is empty: learn what each key holds first
                self.apply_frames(await self.log.memory_for_keys(memory_type, keys))
            await self._local_writes(self._framed(self._local_items(memory_type, {key: values[key] for key in keys},
                                                                    priority)))
        return keys

    def _local_item(self, memory_type: str, key: str, value: Any, priority: int,
                    tombstone: bool = False) -> tuple[MemoryItem, list[MemoryItem]]:
        """A new write of this node to ``key`` over what the replica holds, with the key's visible siblings."""
        return self._local_items(memory_type, {key: value}, priority, tombstone)[0]

    def _local_items(self, memory_type: str, values: Mapping[str, Any], priority: int,
                     tombstone: bool = False) -> list[tuple[MemoryItem, list[MemoryItem]]]:
        """``_local_item`` for each key of ``values``, the keys' states read together."""
        states = self.store.states([(memory_type, key) for key in values])
        node_id = self.ctx.node_id
        out = []
        for key, value in values.items():
            siblings, sources = states.get((memory_type, key), ([], []))
            draft = MemoryItem(memory_type, key, value, {}, self.hlc.now(), node_id, priority, tombstone)
            out.append((local_write(sources or siblings, draft, node_id), siblings))
        return out

    async def _write_local(self, item: MemoryItem, why: str) -> None:
        async with self._turn(item.memory_type, [item.key]):
            position = await self._commit(self._framed([(item, self.store.siblings(item.memory_type, item.key))]),
                                          why)
        await self._settle(item.key, position)

    async def _settle(self, key: str, position: Any) -> None:
        if self.ctx.config.memory_sync.strategy == "strong":
            await self._await_applied(key, position)

    @contextlib.asynccontextmanager
    async def _turn(self, memory_type: str, keys: Iterable[str]) -> AsyncIterator[None]:
        """Local writes to a key take turns, from reading its state until the medium took or refused them:
        so a refused write is undone to a state that no other local write has built on."""
        entered: list[_Turn] = []
        acquired: list[_Turn] = []
        try:
            for name in sorted({(memory_type, key) for key in keys}):  # one order: two batches never deadlock
                turn = self._turns.setdefault(name, _Turn(name))
                turn.users += 1
                entered.append(turn)
                await turn.lock.acquire()
                acquired.append(turn)
            yield
        finally:
            for turn in acquired:
                turn.lock.release()
            for turn in entered:
                turn.users -= 1
                if not turn.users:
                    del self._turns[turn.name]

    def own_sources(self) -> list[MemoryItem]:
        """This node's writes in the replica's frontier that the medium has taken (anti-entropy re-sends them);
        a write still being published is left out: it may yet be refused and undone."""
        return [s for s in self.store.own_sources(self.ctx.node_id) if (s.memory_type, s.key) not in self._turns]

    def _framed(self, writes: list[tuple[MemoryItem, list[MemoryItem]]]) -> list[Framed]:
        """Each local write with its frame for the mesh; raises FrameTooLarge for one over ``max_item_bytes`` (before
        it joins other writes: its caller alone hears of it)."""
        limit = self.ctx.config.memory_sync.max_item_bytes
        out = []
        for item, siblings in writes:
            frame = self.frame_of(item)
            if len(frame) > limit:
                raise codec.FrameTooLarge(f"memory item {item.key!r} is {len(frame)} bytes, over max_item_bytes "
                                          f"{limit}")
            out.append((item, siblings, frame))
        return out

    async def _commit_local_writes(self, writes: list[Framed]) -> list[Any]:
        position = await self._commit(writes, "local write")
        return [position] * len(writes)

    async def _commit(self, writes: list[Framed], why: str) -> Any:
        """Store local writes (each with the key's visible siblings it replaces) in the replica in one commit,
        then publish them; returns the medium's position. A write that is neither stored by the medium nor
        queued here leaves no trace: each key returns to its state before it (an undo record, not a transaction
        held open across the publish, since the sync loop commits to the same replica meanwhile)."""
        with self._replica_write(), self.store.batch():
            names = [(item.memory_type, item.key) for item, _, _ in writes]
            before = self.store.key_states(names)
            stored = self._store_local(writes, why)
            closed = self.store.close_conflicts_of(names, why)
        try:
            position = await self._ship(stored, why)
        except MeshError:  # neither stored by the medium nor queued here: the caller hears the write failed
            self._undo(before, [item for item, _ in stored])
            raise
        for conflict_id, key in closed:
            self.ctx.publish(ConflictResolved(conflict_id=conflict_id, key=key, choice=why))
        self.backpressure.written(position, len(stored))
        return position

    def _store_local(self, writes: list[Framed], why: str) -> list[tuple[MemoryItem, bytes]]:
        """Make each item this replica's state of its key, replacing the key's visible siblings, in one change of
        the replica (keys apart: each key once); returns each item with its frame for the mesh."""
        for item, _, _ in writes:
            self.hlc.update(item.hlc)
        # The clock is saved on sync and stop; after a crash it restarts above the replica's newest stamp.
        self.store.replace_many([KeyChange(item.memory_type, item.key, (item,), (item,),
                                           tuple((sibling, why) for sibling in siblings))
                                 for item, siblings, _ in writes])
        return [(item, frame) for item, _, frame in writes]

    def _undo(self, before: list[KeyState], refused: list[MemoryItem]) -> None:
        """Return each key to its state before a refused write, keeping what others wrote to it meanwhile
        (the frontier is order-free: the old state with the newcomers folded in is the state without the write)."""
        try:
            with self.store.batch():
                for state, item in zip(before, refused, strict=True):
                    siblings, sources = self.store.state(item.memory_type, item.key)
                    arrived = [s for s in sources or siblings if (s.origin, s.hlc) != (item.origin, item.hlc)]
                    for conflict_id in self.store.restore(state):
                        self.ctx.publish(ConflictResolved(conflict_id=conflict_id, key=item.key, choice=REFUSED))
                    self._fold(arrived)
        except sqlite3.Error as exc:
            self.ctx.problem("replica_errors", f"memory replica {self.store.path} kept {len(refused)} refused "
                                               f"write(s) it could not undo: {exc}")

    async def _ship(self, stored: list[tuple[MemoryItem, bytes]], why: str) -> Any:
        """Publish locally stored writes in one go; returns once the medium has stored them.

        While the medium is away (``BackendUnavailable``) a node whose replica is a file keeps the
        writes in its outbox (committed there, delivered in order when the medium is back); a
        client, whose replica lives in memory, raises instead. A medium that refuses the write
        (disk full, read-only or corrupt file, a Redis error reply) raises to the caller: nothing
        is acknowledged that nothing stored."""
        ctx = self.ctx
        gossip = ctx.config.memory_sync.strategy == "peer_to_peer"
        try:
            if self.store.has_outgoing():
                # keep the order of this node's writes
                raise BackendUnavailable("earlier writes are still queued for the mesh")
            position = await self.log.publish_memory(
                ctx.node_id, [(item.memory_type, item.key, frame) for item, frame in stored], broadcast=not gossip)
        except BackendUnavailable as exc:
            if self.store.path == ":memory:":  # a client's outbox would die with it: not a place to keep a write
                ctx.counters["memory_writes_refused"] += 1
                raise
            self._queue(stored)
            ctx.backend_ok(False, str(exc))
            ctx.wake(TOPIC_MEMORY)
            position, gossip = None, False
        except BackendError:
            ctx.counters["memory_writes_refused"] += 1
            raise
        if gossip:
            try:  # the write is stored: a failed wake-up is no refusal (anti-entropy reaches the peers)
                await self.gossip()
            except BackendError as exc:
                ctx.problem("backend_errors", f"gossip after a write: {exc}")
        if ctx.events.wants_routine():
            for item, _ in stored:
                ctx.publish(MemoryChanged(memory_type=item.memory_type, key=item.key, origin=ctx.node_id,
                                          outcome="local", strategy=why))
        return position

    def _queue(self, stored: list[tuple[MemoryItem, bytes]]) -> None:
        """Commit writes the medium did not take to this node's outbox, in order, in one replica transaction."""
        with self._replica_write(), self.store.batch():
            for item, frame in stored:
                self.store.queue_outgoing(item.memory_type, item.key, frame)

    @contextlib.contextmanager
    def _replica_write(self) -> Iterator[None]:
        """A replica write that fails (its disk is full, its file read-only) is one clear error, not a raw one."""
        try:
            yield
        except sqlite3.Error as exc:
            self.ctx.counters["memory_writes_refused"] += 1
            raise MeshError(f"this node's memory replica {self.store.path} did not store the write: {exc}",
                            hint="free space on its disk or make it writable") from None

    async def gossip(self) -> None:
        """peer_to_peer: wake a few random active peers; each that learns something relays the same way."""
        peers = sorted(self.members.active_ids() - {self.ctx.node_id})
        chosen = self.ctx.rng.sample(peers, min(len(peers), self.ctx.config.memory_sync.gossip_fanout))
        if chosen:
            self.ctx.counters["gossip_sent"] += len(chosen)
            await self.ctx.backend.wake(chosen, TOPIC_MEMORY)

    async def _await_applied(self, key: str, position: Any) -> None:
        """Strong writes: return once every worker not declared dead when the write began has applied
        ``position`` (suspect ones included, and one that dies meanwhile still counts); else say who did not."""
        timeout = self.ctx.config.memory_sync.strong_timeout_seconds
        deadline = time.monotonic() + timeout
        waiting = {m.info.node_id: m.info.name for m in self.members.members()
                   if m.status in LIVE and m.info.role is NodeRole.WORKER
                   and m.info.node_id != self.ctx.node_id}
        while True:
            if position is not None and waiting:
                acks = await self.log.memory_acks()
                waiting = {n: name for n, name in waiting.items() if not self.log.cursor_reached(acks.get(n), position)
                           and self.members.status_of(n) is not NodeStatus.LEFT}  # a graceful leave is no silence
            if not waiting:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(waiting.values()))
                where = "in the mesh's log" if position is not None else "queued here until the medium is back"
                raise SyncTimeout(f"write to {key!r} not applied within {timeout:g} s by: {names}",
                                  missing=sorted(waiting.values()),
                                  hint=f"the write is {where}: they apply it when they return")
            await asyncio.sleep(STRONG_POLL_SECONDS)

    def frame_of(self, item: MemoryItem) -> bytes:
        """One memory item as it travels: the wire form, signed when the mesh has an api_key."""
        wire = item_to_wire(item)
        if item.origin == self.ctx.node_id:  # who wrote it, for the allowlists of the replicas that read it
            wire[ORIGIN_NAME], wire[ORIGIN_HOST] = self.ctx.name, self._host
        key = self.ctx.config.security.api_key
        if key:
            wire["s"] = sign(key, *memory_parts(wire))
        return codec.encode(wire, self.ctx.limits)

    # -- others' writes ------------------------------------------------------------------------------
    def apply_frames(self, frames: Sequence[bytes], *, held: Collection[Mark] = (),
                     folded: dict[int, set[int]] | None = None) -> int:
        """Apply pulled entries (a log read, a bucket, a key's newest) in one replica commit; returns how many
        changed it. ``held`` and ``folded``: see ``fold_frames`` (``folded`` counts only once this returned)."""
        if not frames:
            return 0
        with self.store.batch():
            return self.fold_frames(frames, held=held, folded=folded)

    def apply_frame(self, frame: bytes) -> bool:
        """One entry: a batch of one."""
        return self.apply_frames([frame]) > 0

    def fold_frames(self, frames: Sequence[bytes], *, held: Collection[Mark] = (),
                    folded: dict[int, set[int]] | None = None) -> int:
        """Apply entries inside the caller's replica transaction (``store.batch``); returns how many changed it.

        ``held``: marks ``(memory_type, key, origin, hlc)`` that were in this replica's frontier a moment ago. An
        entry among them is one the fold would ignore (the same original, or one a later write here dominates):
        it is left out before the keys' states are read (an anti-entropy round pulls whole buckets, mostly held).
        ``folded``: gets ``hash(frame)`` by bucket of each frame read, trusted and folded with a stamp this clock
        has reached; folding it again changes nothing and counts nothing (not so a refused or clamped one)."""
        node_id = self.ctx.node_id
        pairs = [(frame, item) for frame in frames if (item := self._item_of(frame, skip_origin=node_id)) is not None]
        items = [item for _, item in pairs]
        newest: dict[str, int] = {}
        for item in items:
            newest[item.origin] = max(newest.get(item.origin, 0), item.hlc)
        for origin, stamp in newest.items():  # the clock only needs each origin's newest stamp
            self.members.merge_clock(self.hlc, stamp, origin)
        if folded is not None:
            reached = self.hlc.last
            for frame, item in pairs:
                if item.hlc <= reached:
                    folded.setdefault(bucket_of(item.memory_type, item.key), set()).add(hash(frame))
        if held:
            items = [item for item in items if (item.memory_type, item.key, item.origin, item.hlc) not in held]
        return self._fold(items)

    def _item_of(self, frame: bytes, *, skip_origin: str | None = None) -> MemoryItem | None:
        """The item in a frame from the medium; None (counted) when it is corrupt or not signed with the
        mesh's api_key, and (uncounted) when it comes from ``skip_origin``."""
        ctx = self.ctx
        try:
            wire = codec.decode(frame, ctx.limits)
            item = item_from_wire(wire)
        except CodecError as exc:
            ctx.problem("corrupt_memory_frames", f"memory frame refused: {exc}")
            return None
        if item.origin == skip_origin:
            return None
        why = self.members.distrust_memory(wire)
        if why:
            self.members.refuse("memory", item.origin, f"memory write to {item.memory_type}/{item.key} from "
                                                       f"{item.origin[:12]} refused: {why}")
            return None
        return item

    def _fold(self, items: Sequence[MemoryItem]) -> int:
        """Fold other nodes' writes into the replica as one batch: one read of the keys' states, one pass of
        version-vector comparisons (``fold_batch``), one write per table; returns how many changed a key."""
        if not items:
            return 0
        ctx = self.ctx
        store = self.store
        names = list(dict.fromkeys((item.memory_type, item.key) for item in items))
        folds = fold_batch(store.states(names), items, ctx.config.conflict_strategy_for,
                           ranking=self._ranking_now(), sibling_warning=SIBLING_WARNING)
        if not folds:
            return 0
        store.replace_many(list(folds.values()))
        self._track_conflicts(folds)
        routine = ctx.events.wants_routine()
        changed = 0
        events: list[MemoryChanged] = []  # published together, in the order they were made
        for fold in folds.values():
            changed += len(fold.steps)
            warning = None
            for _, result in fold.steps:  # the last warning of the key's writes, once per key and batch
                warning = result.warning or warning
            if warning:
                ctx.publish_many(events)
                events = []
                ctx.problem("sibling_warnings", f"{fold.memory_type}/{fold.key}: {warning}")
            if routine:  # a subscriber asked for per-item events
                events += [MemoryChanged(memory_type=item.memory_type, key=item.key, origin=item.origin,
                                         outcome=result.outcome, strategy=result.strategy)
                           for item, result in fold.steps]
        ctx.publish_many(events)
        return changed

    def _track_conflicts(self, folds: Mapping[KeyName, KeyFold]) -> None:
        """Open (or close) each changed key's conflict record as each write did in turn, in one write; a
        conflict's id is the same on every replica."""
        open_now = self.store.open_conflicts(folds)
        opened: dict[str, tuple[str, str, str, str, str, tuple[str, ...]]] = {}
        closed: dict[str, str] = {}
        events: list[ConflictOpened | ConflictResolved] = []
        for name, fold in folds.items():
            held = open_now.get(name)
            if held is None:
                if not any(result.conflict for _, result in fold.steps):
                    continue  # the usual key: no conflict held, none opened
                held = set()
            for item, result in fold.steps:
                keep = conflict_id_of(item, result) if result.conflict else None
                for conflict_id in sorted(held - {keep}):
                    held.discard(conflict_id)
                    closed[conflict_id] = "superseded"
                    events.append(ConflictResolved(conflict_id=conflict_id, key=item.key, choice="superseded"))
                if keep is not None and keep not in held:
                    held.add(keep)
                    closed.pop(keep, None)
                    opened[keep] = (keep, item.memory_type, item.key, result.strategy, result.reason,
                                    tuple(result.disagreements))
                    events.append(ConflictOpened(conflict_id=keep, memory_type=item.memory_type, key=item.key,
                                                 nodes=tuple(s.origin for s in result.siblings),
                                                 strategy=result.strategy))
        if opened or closed:
            self.store.settle_conflicts(list(opened.values()), list(closed.items()))
        for event in events:
            self.ctx.publish(event)

    async def catch_up(self, key: str, memory_type: str | None = None) -> None:
        """Bring one key of this replica up to date with the mesh now (a client's replica starts empty)."""
        self.apply_frames(await self.log.memory_for_key(memory_type, key))

    # -- reading, conflicts, history ---------------------------------------------------------------------
    async def recall_item(self, key: str, memory_type: str | None = None) -> Recollection:
        if not self.ctx.is_worker:
            await self.catch_up(key, memory_type)
        siblings = [s for s in self.store.find(key, memory_type) if not s.tombstone]
        if not siblings:
            raise MemoryNotFound(f"no memory item {key!r}" + (f" of type {memory_type!r}" if memory_type else ""))
        local = local_sibling(siblings, self.ctx.node_id)
        return Recollection(key, local.memory_type, local.value, tuple(siblings) if len(siblings) > 1 else (),
                            local.origin, local.hlc)

    def conflicts(self) -> list[Conflict]:
        """Open conflicts in this replica, each with its siblings."""
        out = []
        for c in self.store.conflicts():
            siblings = tuple(self.store.siblings(c["memory_type"], c["key"]))
            reason = c["reason"] or ""
            if c["disagreements"]:
                reason += f" (disagree at {', '.join(c['disagreements'])})"
            out.append(Conflict(c["conflict_id"], c["memory_type"], c["key"], siblings, c["strategy"],
                                c["opened_at"], reason))
        return out

    async def resolve_conflict(self, conflict_id: str, choice: str | Any = None, *,
                               value: Any = NO_VALUE) -> MemoryItem:
        """Settle a conflict: ``keep-local``, ``keep-remote``, ``merge``, or a new ``value`` (see the manager)."""
        found = [c for c in self.conflicts() if c.conflict_id == conflict_id or c.conflict_id.startswith(conflict_id)]
        if len(found) != 1:
            raise UsageError(f"no open conflict {conflict_id!r}" if not found else f"{conflict_id!r} is ambiguous")
        siblings = list(found[0].siblings)
        mine = local_sibling(siblings, self.ctx.node_id)
        if value is not NO_VALUE:
            choice = None
        elif choice == "keep-local":
            value = mine.value
        elif choice == "keep-remote":
            others = [s for s in siblings if s is not mine]
            if len(others) != 1:
                raise UsageError(f"keep-remote needs exactly one remote sibling; this conflict has {len(others)}",
                                 hint="resolve with a value instead")
            value = others[0].value
        elif choice == "merge":
            merged = merge_items(siblings)
            if not merged.ok:
                raise UsageError(f"the siblings disagree at {', '.join(merged.disagreements)}; cannot merge",
                                 hint="keep one side or give a new value")
            value = merged.value
        else:
            value, choice = choice, None
        self.members.fence_writes()
        item = resolve_manually(siblings, value, self.ctx.node_id, self.hlc.now())
        await self._write_local(item, f"resolved: {choice or 'new value'}")
        return item

    async def forget(self, key: str, memory_type: str | None = None) -> None:
        """Delete a fact everywhere (a tombstone version that dominates what this replica has seen)."""
        found = await self.recall_item(key, memory_type)
        await self.write(found.memory_type, None, key=key, tombstone=True)

    async def history(self, key: str, memory_type: str | None = None) -> list[dict[str, Any]]:
        """The key's earlier versions, newest first, the same on every replica and client: the versions the
        medium keeps for it less its current value(s), at most ``history_size``. ``index`` 1 is the version
        just before the current one; ``version`` names each by its stamp (see ``memory.history``)."""
        if not self.ctx.is_worker:
            await self.catch_up(key, memory_type)
        try:
            frames = await self.log.memory_versions(memory_type, key)
            versions = [item for frame in frames if (item := self._item_of(frame)) is not None]
        except BackendError as exc:
            self.ctx.problem("backend_errors", f"history of {key!r} from this replica only: {exc}")
            versions = self._replica_history(key, memory_type)
        types = {v.memory_type for v in versions}
        current = [s for mt in sorted(types) for s in self.store.siblings(mt, key)]
        return earlier_versions(versions, current, self.ctx.config.memory_sync.history_size)

    def _replica_history(self, key: str, memory_type: str | None) -> list[MemoryItem]:
        """What this replica saw replaced, for when the medium cannot be read."""
        types = [memory_type] if memory_type else sorted({mt for mt, k, _ in self.store.keys(key) if k == key})
        return [MemoryItem(mt, key, h["value"], h["vv"], h["hlc"], h["origin"]) for mt in types
                for h in self.store.history(mt, key)]

    async def rollback(self, key: str, version: int | str, memory_type: str | None = None) -> MemoryItem:
        """Write an earlier value back as a new version (which wins everywhere). ``version`` is an index in
        ``history`` (1 = the version just before the current one) or a version id (a unique prefix will do)."""
        entry = pick_version(await self.history(key, memory_type), version)
        if entry is None:
            raise UsageError(f"{key!r} has no earlier version {version}", hint=f"see /mesh_history {key}")
        await self.write(entry["memory_type"], entry["value"], key=key)
        return local_sibling(self.store.siblings(entry["memory_type"], key), self.ctx.node_id)
