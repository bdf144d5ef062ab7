"""Memory sync: read the mesh's memory log into the replica, acknowledge it, repair by anti-entropy, compact.

The log is read from this node's cursor; anything the log did not deliver
(a refused frame, a write lost by the medium, entries compacted while the node
was away) is repaired by comparing bucket digests and pulling what differs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from ..backends.contracts import TOPIC_MEMORY, MemoryLog
from ..errors import BackendError
from ..memory.digest import BUCKETS, bucket_of, differing
from ..model import MemoryItem
from .context import NodeContext
from .membership import MembershipService
from .memory import MemoryService

HORIZON_CHECK_SECONDS = 5.0  # how often a node looks whether compaction dropped entries it never read
ACK_EVERY_SECONDS = 0.5  # memory log acks (they feed compaction; strong writes and awaited acks go at once)
MIN_PULL_BATCH = 2000  # entries read per log call, at least
MEMORY_POLL_SECONDS = 1.0  # the memory loop's safety net when a wake-up is missed
# While the medium knows of entries a node did not get (``MemoryLog.repair_wanted``), anti-entropy rounds run this
# often instead of every sync_interval_seconds: the node that missed them pulls them, and the writer sees it hold
# them (its writers' backpressure and strong writes wait on that).
REPAIR_EVERY_SECONDS = 1.0


class MemorySync:
    """Keeps the replica caught up with the mesh's memory log."""

    def __init__(self, ctx: NodeContext, members: MembershipService, memory: MemoryService) -> None:
        self.ctx = ctx
        self.members = members
        self.memory = memory
        self.cursor: Any = None
        self._acked_cursor: Any = None
        self._acked_at = 0.0
        self._horizon_checked_at = -HORIZON_CHECK_SECONDS
        self._bootstrapped = False  # this replica has loaded every key's newest entries once
        # per bucket: hash(frame) of the frames of its last anti-entropy pull that were folded here (a pull reads
        # the whole bucket; what was folded already is not read again)
        self._pulled: dict[int, set[int]] = {}
        self._reading = asyncio.Lock()

    @property
    def log(self) -> MemoryLog:
        return self.ctx.backend

    def open(self) -> None:
        """Resume from where this replica stopped reading."""
        store = self.memory.store
        self.cursor = store.get_meta("memory_cursor")
        self._bootstrapped = store.get_meta("memory_bootstrapped") is not None

    async def sync_now(self) -> dict[str, int]:
        """Pull every memory entry not yet applied here; returns what moved (one reader at a time: the loop,
        an anti-entropy round between its buckets, a caller)."""
        async with self._reading:
            return await self._read_log()

    async def _read_log(self) -> dict[str, int]:
        store = self.memory.store
        applied = seen = 0
        if not self._bootstrapped or await self._behind_horizon():
            applied += await self._bootstrap()
        batch = max(MIN_PULL_BATCH, self.ctx.config.memory_sync.max_sync_batch_size)
        while True:
            frames, cursor = await self.log.read_memory(self.cursor, batch)
            if frames:
                with store.batch():  # the items, the cursor and the clock in one commit
                    seen += len(frames)
                    applied += self.memory.fold_frames(frames)
                    store.set_meta("memory_cursor", str(cursor or 0))
                    store.set_meta("hlc", str(self.memory.hlc.last))
                # only past a commit that held: a failed one (disk full) is read again, not skipped
                self.cursor = cursor
            if len(frames) < batch:
                break
        # strong writers wait for acks, and so does a master_slave primary on a medium with no shared store (its
        # write must outlive it in the replicas), and every writer on a medium whose writes wait for acks: answer
        # at once; otherwise acks only feed compaction (see _ack)
        strategy = self.ctx.config.memory_sync.strategy
        await self._ack(force=strategy in ("strong", "master_slave") or self.log.acks_awaited)
        return {"seen": seen, "applied": applied}

    async def _ack(self, *, force: bool = False) -> None:
        """Tell the mesh how far this node has applied the memory log, at most every ACK_EVERY_SECONDS."""
        if not self.ctx.is_worker or self.cursor is None or self.cursor == self._acked_cursor:
            return
        if not force and time.monotonic() - self._acked_at < ACK_EVERY_SECONDS:
            return
        await self.log.ack_memory(self.ctx.node_id, self.cursor)
        self._acked_cursor, self._acked_at = self.cursor, time.monotonic()

    async def _behind_horizon(self) -> bool:
        """True when compaction dropped log entries this replica never read (it was away): checked at the
        first sync and then every few seconds, so a returning node need not wait for anti-entropy."""
        if time.monotonic() - self._horizon_checked_at < HORIZON_CHECK_SECONDS:
            return False
        self._horizon_checked_at = time.monotonic()
        horizon = await self.log.memory_horizon()
        return horizon is not None and not self.log.cursor_reached(self.cursor, horizon)

    async def _bootstrap(self) -> int:
        """A replica that never synced starts from every key's newest entries, then reads the log:
        the log's older entries may be compacted away (``compact``)."""
        applied = 0
        for bucket in range(BUCKETS):
            applied += self.memory.apply_frames(await self.log.memory_bucket(bucket))
        self.memory.store.set_meta("memory_bootstrapped", "1")
        self._bootstrapped = True
        return applied

    async def flush_outbox(self) -> int:
        """Deliver memory writes queued while the medium was away; returns how many went out.

        An entry leaves the outbox only after the medium has stored it (``publish_memory`` returned)."""
        store = self.memory.store
        sent = 0
        while batch := store.outgoing(self.ctx.config.memory_sync.max_sync_batch_size):
            await self.log.publish_memory(self.ctx.node_id, [(mt, key, frame) for _, mt, key, frame in batch])
            store.delivered(batch[-1][0])
            sent += len(batch)
        return sent

    async def anti_entropy(self) -> dict[str, int]:
        """Compare bucket digests with every active node; pull what differs, re-send our own writes there.

        Repairs whatever the log did not deliver: a refused (corrupted) entry,
        a write lost by the medium, a replica that was restored from an old copy.
        """
        store, node_id = self.memory.store, self.ctx.node_id
        mine = store.digests()  # kept by the replica as it changes: no rehash of the frontier per round
        await self.log.put_digests(node_id, mine)
        active = self.members.active_ids()
        buckets: set[int] = set()
        for peer, theirs in (await self.log.peer_digests()).items():
            if peer != node_id and peer in active:
                buckets |= differing(mine, theirs)
        applied = resent = 0
        # Peers' digests are as old as their last round: under steady writes most buckets differ and most of what
        # a bucket holds is held here already. That is left out before the fold (it would be ignored).
        held = set(store.frontier_marks()) if buckets else set()
        # This node's writes to re-send, read once per round and grouped by bucket (its writes after this read were
        # stored by the medium before they returned: nothing to re-send of those). Re-sending one a pulled entry
        # has since dominated costs nothing: its receivers ignore it.
        own: dict[int, list[MemoryItem]] = {}
        for s in self.memory.own_sources() if buckets else ():
            own.setdefault(bucket_of(s.memory_type, s.key), []).append(s)
        for bucket in sorted(buckets):
            frames = await self.log.memory_bucket(bucket)
            pulled = self._pulled.get(bucket, set())
            marks_of = [hash(frame) for frame in frames]
            folded: set[int] = set()
            applied += self.memory.apply_frames([f for f, h in zip(frames, marks_of, strict=True) if h not in pulled],
                                                held=held, folded=folded)
            self._pulled[bucket] = folded | {h for h in marks_of if h in pulled}  # what the bucket still holds
            # A round over a big replica takes a while: what arrived meanwhile is applied (and acknowledged:
            # writers may wait on the acks) between its buckets, not after the whole round.
            await self.sync_now()
            mine_here = own.get(bucket)
            if mine_here:
                await self.log.publish_memory(node_id, [(s.memory_type, s.key, self.memory.frame_of(s))
                                                        for s in mine_here])
                resent += len(mine_here)
        if buckets:
            await self.log.put_digests(node_id, store.digests())
        return {"buckets": len(buckets), "applied": applied, "resent": resent}

    async def compact(self) -> int:
        """Drop memory log entries that every active node has applied (the sweeping node does this).

        A node that was away, or joins later, gets what was dropped from anti-entropy, which reads the
        newest entry per key and origin.
        """
        acks = await self.log.memory_acks()
        cursors = [acks.get(node_id) for node_id in self.members.active_ids()]
        if not cursors or any(c is None for c in cursors):
            return 0  # someone has applied nothing yet: keep everything for it
        low = cursors[0]
        for cursor in cursors[1:]:
            if not self.log.cursor_reached(cursor, low):
                low = cursor
        dropped = await self.log.compact_memory(low)
        if dropped:
            self.ctx.counters["memory_log_compacted"] += dropped
        return dropped

    async def loop(self) -> None:
        ctx = self.ctx
        cfg = ctx.config
        last_round = time.monotonic()
        while not ctx.closing:
            # Wake-ups make this immediate; the short poll covers a missed one.
            await ctx.wait_wake(TOPIC_MEMORY, min(MEMORY_POLL_SECONDS, cfg.sync_interval_seconds))
            if not cfg.memory_sync.enabled:
                continue
            try:
                if await self.flush_outbox():
                    ctx.backend_ok(True)
                moved = await self.sync_now()
                await self._ack()  # a deferred ack goes out even when nothing new arrives
                if moved["applied"] and cfg.memory_sync.strategy == "peer_to_peer":
                    await self.memory.gossip()  # pass on what was new here; a node that learned nothing stays quiet
                since = time.monotonic() - last_round
                if since >= cfg.sync_interval_seconds or (self.log.repair_wanted and since >= REPAIR_EVERY_SECONDS):
                    last_round = time.monotonic()
                    moved = await self.anti_entropy()
                    if moved["applied"] or moved["resent"]:
                        ctx.counters["anti_entropy_repairs"] += moved["applied"] + moved["resent"]
            except BackendError as exc:
                ctx.problem("backend_errors", str(exc))
            except sqlite3.Error as exc:  # this node's replica did not take a batch (disk full): retried next round
                ctx.problem("replica_errors", f"memory replica {self.memory.store.path}: {exc}")
