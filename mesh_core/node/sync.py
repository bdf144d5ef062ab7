"""Memory sync: read the mesh's memory log into the replica, acknowledge it, repair by anti-entropy, compact.

The log is read from this node's cursor; anything the log did not deliver
(a refused frame, a write lost by the medium, entries compacted while the node
was away) is repaired by comparing bucket digests and pulling what differs.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from typing import Any

from ..backends.contracts import TOPIC_MEMORY, MemoryLog
from ..errors import BackendError
from ..memory.digest import BUCKETS, bucket_of, differing
from ..memory.store import Mark
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
# The periodic anti-entropy round rests this many times each bucket's work after it: a round over a big replica
# under steady writes (every bucket differs: peers' digests are a round old) spreads over a few seconds instead of
# taking the node's CPU at once (bench memory, SQLite, batched writes: p99 296-421 ms paced, 357-634 not).
ANTI_ENTROPY_REST = 3.0
FOLDED_KEPT_MAX = 250_000  # frame hashes kept for anti-entropy between its rounds (some 15 MB at most)


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
        # per bucket: hash(frame) of frames folded here (read from the log, or by the bucket's last anti-entropy
        # pull) that the bucket may still hold. A pull reads the bucket whole: these it need not decode again.
        self._folded: dict[int, set[int]] = {}
        self._reading = asyncio.Lock()

    @property
    def log(self) -> MemoryLog:
        return self.ctx.backend

    def open(self) -> None:
        """Resume from where this replica stopped reading."""
        store = self.memory.store
        self.cursor = store.get_meta("memory_cursor")
        self._bootstrapped = store.get_meta("memory_bootstrapped") is not None
        # The digests followed from the start (one pass over the frontier, which the first round would make anyway):
        # the states the replica goes through are remembered, and the first round already reads only the buckets
        # where a peer may hold something new, not the whole replica.
        store.digests()

    async def sync_now(self) -> dict[str, int]:
        """Pull every memory entry not yet applied here; returns what moved (one reader at a time: the loop,
        an anti-entropy round between its buckets, a caller)."""
        async with self._reading:
            return await self._read_log()

    async def _read_log(self) -> dict[str, int]:
        store = self.memory.store
        applied = seen = 0
        if not self._bootstrapped:
            applied += await self._bootstrap()
        elif await self._behind_horizon():  # away past compaction: every key's newest entries again (counted)
            self.ctx.counters["memory_rebootstraps"] += 1
            applied += await self._bootstrap()
        batch = max(MIN_PULL_BATCH, self.ctx.config.memory_sync.max_sync_batch_size)
        while True:
            frames, cursor = await self.log.read_memory(self.cursor, batch)
            if frames:
                folded: dict[int, set[int]] | None = {} if self._keeps_folded() else None
                with store.batch():  # the items, the cursor and the clock in one commit
                    seen += len(frames)
                    applied += self.memory.fold_frames(frames, folded=folded)
                    store.set_meta("memory_cursor", str(cursor or 0))
                    store.set_meta("hlc", str(self.memory.hlc.last))
                # only past a commit that held: a failed one (disk full) is read again, not skipped
                self.cursor = cursor
                self._remember(folded)
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
            folded: dict[int, set[int]] = {}
            applied += self.memory.apply_frames(await self.log.memory_bucket(bucket), folded=folded)
            self._remember(folded)
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

    async def anti_entropy(self, *, paced: bool = False) -> dict[str, int]:
        """Compare bucket digests with every active node; pull what differs, re-send our own writes there.

        Repairs whatever the log did not deliver: a refused (corrupted) entry,
        a write lost by the medium, a replica that was restored from an old copy.
        ``paced``: the periodic round, background work that rests between buckets (``ANTI_ENTROPY_REST``); a round
        asked for, or one that repairs what the medium knows was missed (``repair_wanted``), goes straight through.
        """
        store, node_id = self.memory.store, self.ctx.node_id
        mine = store.digests()  # kept by the replica as it changes: no rehash of the frontier per round
        await self.log.put_digests(node_id, mine)
        active = self.members.active_ids()
        buckets: set[int] = set()  # differ from some peer's: this node's own writes there are re-sent
        pulled: set[int] = set()  # ... and some peer's digest is not one this replica had lately: read and folded
        for peer, theirs in (await self.log.peer_digests()).items():
            if peer != node_id and peer in active:
                for bucket in differing(mine, theirs):
                    buckets.add(bucket)
                    # Under steady writes every bucket differs, each replica a moment behind another: a peer whose
                    # digest this one had lately holds nothing there it lacks, and the bucket is not read for it.
                    if bucket not in pulled and not store.held_lately(bucket, theirs.get(bucket)):
                        pulled.add(bucket)
        applied = resent = 0
        for bucket in [b for b in self._folded if b not in buckets]:
            del self._folded[bucket]  # the same here as everywhere: nothing to skip in it until it differs again
        # Peers' digests are as old as their last round: under steady writes most buckets differ and most of what
        # a bucket holds is here already. A frame folded here before (``_folded``) is not decoded again. When most
        # of a bucket is new to it (the first round after a start), the frontier's marks are read once, and a frame
        # they hold is left out before the fold (it would be ignored); a few new ones are folded as they are.
        held: set[Mark] | None = None
        # This node's writes to re-send, read once per round and grouped by bucket (its writes after this read were
        # stored by the medium before they returned: nothing to re-send of those). Re-sending one a pulled entry
        # has since dominated costs nothing: its receivers ignore it.
        own: dict[int, list[MemoryItem]] = {}
        for s in self.memory.own_sources() if buckets else ():
            own.setdefault(bucket_of(s.memory_type, s.key), []).append(s)
        for bucket in sorted(buckets):
            if bucket in pulled:
                started = time.monotonic()
                frames = await self.log.memory_bucket(bucket)
                known = self._folded.get(bucket, set())
                marks_of = [hash(frame) for frame in frames]
                unknown = [f for f, h in zip(frames, marks_of, strict=True) if h not in known]
                folded: dict[int, set[int]] = {}
                if unknown:
                    if held is None and len(unknown) * 10 > len(frames):
                        held = set(store.frontier_marks())
                    applied += self.memory.apply_frames(unknown, held=held or (), folded=folded)
                # what the bucket still holds: the superseded frames the log brought are forgotten here
                self._folded[bucket] = folded.get(bucket, set()) | {h for h in marks_of if h in known}
                # A round over a big replica takes a while: what arrived meanwhile is applied (and acknowledged:
                # writers may wait on the acks) between its buckets, not after the whole round.
                await self._rest((time.monotonic() - started) * ANTI_ENTROPY_REST if paced else 0.0)
            mine_here = own.get(bucket)
            if mine_here:
                await self.log.publish_memory(node_id, [(s.memory_type, s.key, self.memory.frame_of(s))
                                                        for s in mine_here])
                resent += len(mine_here)
        if buckets:
            await self.log.put_digests(node_id, store.digests())
        return {"buckets": len(buckets), "read": len(pulled), "applied": applied, "resent": resent}

    async def _rest(self, seconds: float) -> None:
        """Between two buckets of an anti-entropy round: read the log, and go on reading it as it wakes for
        ``seconds`` (the round is background work, not a burst that holds up the node and its neighbours)."""
        deadline = time.monotonic() + seconds
        await self.sync_now()
        while (left := deadline - time.monotonic()) > 0 and not self.ctx.closing:
            await self.ctx.wait_wake(TOPIC_MEMORY, left)
            await self.sync_now()

    def _remember(self, folded: dict[int, set[int]] | None) -> None:
        """Add to ``_folded`` what a fold just committed (after the commit: a failed one is read again, not skipped)."""
        for bucket, marks in (folded or {}).items():
            self._folded.setdefault(bucket, set()).update(marks)

    def _keeps_folded(self) -> bool:
        """Whether a log read adds what it folded to ``_folded`` (bounded: past FOLDED_KEPT_MAX, the next anti-entropy
        round decodes what it does not know, as one after a restart does)."""
        return sum(map(len, self._folded.values())) < FOLDED_KEPT_MAX

    async def compact(self) -> int:
        """Drop memory log entries that every live node has applied (the sweeping node does this).

        A node that finds the log compacted past its cursor reads every key's newest entries again
        (``_bootstrap``): the whole memory, not just what it missed. So a suspect node counts (it may only be
        late: paused, swapping, a long GC), and so does one away (declared dead, or stopped) for less than
        ``memory_sync.keep_log_for_absent_seconds`` since its last heartbeat (a restart, a longer pause, a cut
        link), when it has applied anything. A node away longer, or one that joins later, gets what was dropped
        by that bootstrap, which reads the newest entry per key and origin.
        """
        acks = await self.log.memory_acks()
        # workers only: a client (a one-shot command, an observer) reads no log and acks none
        cursors = [acks.get(node_id) for node_id in self.members.live_ids(workers_only=True)]
        if not cursors or any(c is None for c in cursors):
            return 0  # someone has applied nothing yet: keep everything for it
        keep = self.ctx.config.memory_sync.keep_log_for_absent_seconds
        cursors += [acks[node_id] for node_id in self.members.away_worker_ids(keep) if acks.get(node_id) is not None]
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
        # The first round comes at a random point of the first interval, so nodes started together (a service
        # manager at boot, a test) do not all run their rounds at the same moments.
        last_round = time.monotonic() - random.uniform(0, cfg.sync_interval_seconds)
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
                    moved = await self.anti_entropy(paced=not self.log.repair_wanted)
                    if moved["applied"] or moved["resent"]:
                        ctx.counters["anti_entropy_repairs"] += moved["applied"] + moved["resent"]
            except BackendError as exc:
                ctx.problem("backend_errors", str(exc))
            except sqlite3.Error as exc:  # this node's replica did not take a batch (disk full): retried next round
                ctx.problem("replica_errors", f"memory replica {self.memory.store.path}: {exc}")
