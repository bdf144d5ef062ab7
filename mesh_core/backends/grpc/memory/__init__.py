"""``grpc_mesh`` memory: each node's memory log is its own, filled by what its peers push over the Memory streams.

A node's log is the private store's (``store.publish_memory`` …), so reading it, its cursors, the newest
entries per key, the replicated history, the horizon and compaction are the SQLite log's, unchanged.
What grpc adds is how entries reach the other logs:

- **Push.** ``publish_memory`` appends locally, then pushes the entries (``MemoryEntry``, with a per-peer
  sequence number) to every live worker (eventual, strong, master_slave). peer_to_peer (``broadcast``
  False) pushes to ``gossip_fanout`` random live workers with ``hops_left`` and the list of nodes that
  already hold the entry (``seen_by``); a receiver relays each entry once, the same way, to workers not on
  that list (also one it held already, pulled by anti-entropy: it would otherwise end the walk), so even a
  fanout of 1 walks to every node, and an entry relayed here before is not relayed again.
- **Receive.** A frame that fails the codec (checksum, limits) or whose item does not match its envelope
  is refused, counted (``memory_frames_refused``) and named in the ack's ``refused``; it is never
  appended. Good ones are appended to the local log under the frame's origin and the node is woken
  (TOPIC_MEMORY); its memory service then applies them, checking signatures and trust as on every medium.
- **Acks** (what ``strong`` waits on). The receiver acks ``through_seq`` once its *node* has applied the
  entries: when the node's ``ack_memory`` passes the local cursor where they landed. The writer turns it
  into ``memory_acks()[peer]``: the highest cursor *of the writer's own log* such that every entry it
  pushed to that peer at or below it was acknowledged as applied (entries it never pushed there, such as
  those it received from others, do not hold it back). An entry the peer never got (its send queue was
  full, the stream broke, the peer refused it, the peer was not live) holds that peer's ack below it until
  an anti-entropy exchange shows the peer's digests equal to this node's, or until this node checks the peer's log
  for its own entries since then (asked by their keys, every second while the peer is active and lacks some: a
  client runs no anti-entropy round, and steady writes seldom leave digests equal), pushes again the ones it lacks
  when they are few (``RESEND_MAX``; more are left to the peer's catch-up) or, lacking none, the newest, named as
  held so that nothing is appended twice, and that push is acknowledged: the peer's node then applied what its log
  held, these included (``_confirm_held``; master_slave leaves them to anti-entropy, as the log does not keep the
  epoch an entry was pushed with). So
  ``cursor_reached(acks[peer], position of a write)`` means: the peer's node applied that write.
- **Bounded queues.** The wire refuses a push when the peer's stream queue is full, and a peer with
  ``IN_FLIGHT_LIMIT`` pushes unacknowledged gets no more; either way the push is counted
  (``memory_push_dropped``) and the peer catches up by anti-entropy instead of growing this node's memory.
- **Anti-entropy.** ``put_digests`` keeps this node's digests here; ``peer_digests`` asks each live worker
  for its own over the unary ``Digest`` (concurrently, short timeout, an unreachable peer skipped);
  ``memory_bucket`` pulls (``Pull``) the bucket from the peers whose digests differed in that exchange,
  appends what is newer to the local log and returns the local bucket. A peer that comes alive (a join,
  a restart, the end of a partition) gets a one-off catch-up: the two logs' digests are compared
  (``Digest`` with ``log``) and the differing buckets pulled, so a node back from an absence converges
  without waiting for ``sync_interval_seconds``. A Pull of buckets names what the puller holds of them (``have``:
  8 bytes per entry, from the log digests' pass), so what moves is what it lacks, not the buckets, in pages of
  ``PULL_PAGE_BYTES`` asked back to back; one pull per peer at a time, a round's peers in turn, and catch-ups and
  pull-backs one at a time, each naming what the ones before brought (a pulled frame the log holds already is
  dropped unread). A pull that failed, a gap in a peer's pushes
  (which also starts a catch-up with that peer at once) or a round that left a peer to a running pull bring rounds
  every second (``repair_wanted``) until the digests agree.
- **master_slave.** The ``memory-primary`` lease is a claim fenced by an epoch: a live holder keeps it
  while it renews (each renewal is announced to every live worker); when it lapses or its holder is not
  live, the candidate (the configured primary, else a coordination hub, else the lowest node id among live
  workers) takes it with an epoch one above the highest it has heard. A holder that sees a better candidate
  live (it took the role while that one looked suspect) releases its claim and announces it released (a claim
  for no time), so the candidate, which honours a live claim, takes it at its next renewal instead of each
  holding the other the primary until the claim lapses. A claim is taken from its claimant only (a stale
  claimant is told the current claim by its holder). The primary's entries carry its
  epoch; a replica refuses entries of a claim weaker (epoch, then node id) than the strongest it heard,
  so two primaries after a partition cannot both be obeyed where the newer one was heard.

A one-shot client keeps no log worth the name: it is pushed nothing, and reads keys, versions and buckets
from the live workers (a key's newest entries from two of them, the others only when those two differ or one
does not answer: ``_pull_keys_now``). Its write is stored once a worker's node applied it (nothing the client queued
survives its exit): ``publish_memory`` waits for the acks of the workers it pushed to (every one, or at
least one by ``CLIENT_WRITE_WAIT_SECONDS``; the others get it from those by anti-entropy; once one holds it, not
for one that has owed an ack for ``PEER_STALLED_SECONDS``: paused or cut off, it would hold every write until it is
declared dead) and raises ``BackendUnavailable`` when none took it. The master_slave primary's own writes (the
ones forwarded to it are acknowledged to their writers once they return) likewise wait, up to
``node_timeout_seconds``, for the live workers to apply them, so a primary killed right after does not take them
with it. A node back from away (held suspect or dead by others, or its loop stood still) catches up at once with
each active worker in turn (one may have died meanwhile, unnoticed yet: a killed primary; one may have missed
entries too, its queue full under load: the next holds them, and only what is still missing moves); so does a
node that holds a peer which pushed to it dead or gone (its last pushes, lost on the way here, show no gap when
no later push comes: the workers it reached hold them), and a node that takes the primary role catches up with
every active worker: its predecessor acknowledged writes once a worker held them, perhaps not this one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ....coalesce import Coalescer
from ....membership import Change
from ....memory.digest import BucketDigests
from ....model import LIVE, NodeInfo, NodeRole, NodeStatus
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .base import (
    CLIENT_PULL_FRESH_SECONDS,
    CLIENT_WRITE_WAIT_SECONDS,
    IN_FLIGHT_LIMIT,
    INBOX_LIMIT,
    OWN_ACK_STORED_SECONDS,
    PRIMARY_LEASE,
    _Claim,
    _Pushed,
    _Received,
    _unique,
)
from .entropy import MemoryEntropy

__all__ = ["IN_FLIGHT_LIMIT", "PRIMARY_LEASE", "GrpcMemory"]


class GrpcMemory(MemoryEntropy):
    """MemoryLog over the Memory streams, with Digest/Pull anti-entropy and a fenced memory primary: the parts
    (``primary``, ``push``, ``reads``, ``entropy``) over ``base.MemoryState``, and the log's own methods here."""

    acks_awaited = True  # strong writes, a client's and the primary's wait for the peers' acks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._worker = True
        self._pushed: dict[str, _Pushed] = {}
        self._confirm_timer: asyncio.TimerHandle | None = None  # a check's lapse, looked at (``_confirm_blocked``)
        self._read_missed: dict[str, float] = {}
        self._from_peers: dict[str, _Received] = {}
        self._accounted = 0  # highest local cursor whose pushes are registered in ``_pushed``
        self._own_ack = 0  # how far this node's own node has applied its log
        self._own_ack_stored, self._own_ack_stored_at = 0, -OWN_ACK_STORED_SECONDS  # … as last kept in the store
        self._own_written = 0  # the cursor of this node's own newest write (its replica holds it from the start)
        self._memory_inbox: asyncio.Queue[tuple[Peer, list[pb.MemoryEntry], int]] = asyncio.Queue(INBOX_LIMIT)
        self._inbox_bytes = 0
        self._digests: dict[int, str] | None = None  # this node's replica digests, as last put
        self._digests_cursor = 0  # ``_own_ack`` when they were put
        self._differs: dict[str, set[int]] = {}  # peer → buckets that differed in the last exchange
        self._log_sums = BucketDigests(kept=0)  # the log's digests (``_log_digests_now``) …
        self._log_marks: dict[int, set[int]] = {}  # … per bucket the marks of its entries in the log (as read last) …
        self._log_entries: dict[tuple[str, str], dict[str, int]] = {}  # … and per key: origin → mark
        self._digesting = asyncio.Lock()  # held while the log's digests (and marks) are recomputed
        self._stale_keys: set[tuple[str, str]] | None = None  # keys appended to since; None: the whole log to read
        self._client_pulled_at = -CLIENT_PULL_FRESH_SECONDS
        self._claim = _Claim()
        self._missed_until = 0.0  # entries pushed here went missing lately: repair rounds until then (monotonic)
        self._pull_locks: dict[str, asyncio.Lock] = {}  # live peer → held while pulling from it (one pull at a time)
        self._appending_pulled = asyncio.Lock()  # pulled entries are checked against the log and appended in turn
        self._catching_up = asyncio.Lock()  # one catch-up or pull-back at a time: each names what the last brought
        self._catch_ups_due = {}
        self._gap_repaired_at: dict[str, float] = {}  # live peer → when a gap in its pushes last brought a catch-up
        self._caught_up_all_at = -math.inf  # see ``_catch_up_with_all``
        self._ack_heard = asyncio.Event()  # set by every ack (a client's write waits on them)
        self._relayed_marks: set[int] = set()  # entries relayed here (see ``_first_relay``) …
        self._relayed_order: deque[int] = deque()  # … oldest first
        self._key_pulls: Coalescer[tuple[str | None, str, bool], list[bytes]] = Coalescer(self._pull_keys_now)
        self._recent: dict[int, bytes] = {}  # local cursor → frame, the latest appends (``_remember``)
        self._recent_bytes = 0
        self._recent_head = 0

    async def _open_store(self, local: NodeInfo) -> None:
        self._worker = local.role is NodeRole.WORKER
        await super()._open_store(local)
        published = (await self.store.peer_digests()).get(local.node_id)
        self._digests = published  # this replica's digests survive a restart in the private store

    async def _open_parts(self) -> None:
        await super()._open_parts()
        wire = self.wire
        assert wire is not None
        wire.on_stream("memory", self._memory_received)
        wire.on_unary("Digest", self._serve_digest)
        wire.on_unary("Pull", self._serve_pull)
        self.on_member_change(self._member_seen)
        self.spawn(self._append_loop(), "memory-inbox")

    async def publish_memory(self, origin: str, entries: Sequence[tuple[str, str, bytes]],
                             broadcast: bool = True) -> Any:
        """Append to this node's log, then push to the peers (see the module's docstring); the local cursor."""
        cursor = await self.store.publish_memory(origin, entries, broadcast=False)
        if not entries or cursor is None:
            return cursor
        cursor = int(cursor)
        if origin == self.node_id:
            self._own_written = max(self._own_written, cursor)
        self._stale(entries)
        self._remember(cursor, entries)
        reached = self._push(origin, entries, cursor, gossip=not broadcast)
        if not self._worker:
            await self._held_by_workers(reached, cursor, CLIENT_WRITE_WAIT_SECONDS, required=True)
        elif origin == self.node_id and self.config.memory_sync.strategy == "master_slave" \
                and self._claim.node_id == self.node_id and reached:
            # The primary acknowledges the writes forwarded to it: they must outlive it (a kill -9 right after)
            # in the replicas, not only in its own log, as they outlive it in a shared store.
            await self._held_by_workers(reached, cursor, self.config.node_timeout_seconds, required=False)
        return cursor

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        return await self._read_recent(after, limit)

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        """Record how far ``node_id`` applied this node's log; this node's own ack releases at once the acks
        owed to the peers whose pushes it has now applied (their writers wait on them: ``acks_awaited``), and
        is kept in the private store at most every ``OWN_ACK_STORED_SECONDS`` (it only feeds compaction there;
        ``memory_acks`` answers from memory)."""
        if node_id != self.node_id:
            await self.store.ack_memory(node_id, cursor)
            return
        self._own_ack = max(self._own_ack, int(cursor or 0))
        self._ack_senders()
        now = time.monotonic()
        if self._own_ack > self._own_ack_stored and now - self._own_ack_stored_at >= OWN_ACK_STORED_SECONDS:
            self._own_ack_stored, self._own_ack_stored_at = self._own_ack, now
            await self.store.ack_memory(node_id, self._own_ack)

    @property
    def repair_wanted(self) -> bool:
        """An anti-entropy round soon, not in ``sync_interval_seconds``: a live peer lacks entries pushed to it
        (dropped on the way out, or refused: its acks stay below them until digests show it holds them), or
        entries pushed here went missing lately (a gap in a peer's sequence): the round pulls them, and both
        sides' digests then show it."""
        if time.monotonic() < self._missed_until:
            return True
        return any(pushed.blocked is not None and self.status_of(node_id) in LIVE
                   for node_id, pushed in self._pushed.items())

    async def memory_acks(self) -> dict[str, Any]:
        """This node's own ack, and per peer pushed to: the highest cursor of this node's log such that every
        entry pushed to it at or below it was applied there (see the module's docstring). A live peer pushed
        nothing (a client, or a worker while only others wrote) owes nothing: its ack is the log's head. Without
        one, compaction waited for it, and a node whose log held only what others pushed here never compacted."""
        acks = dict(await self.store.memory_acks())
        if self._own_ack:
            acks[self.node_id] = max(int(acks.get(self.node_id) or 0), self._own_ack)
        for node_id, pushed in self._pushed.items():
            acks[node_id] = pushed.ack(self._accounted)
        if self._recent_head:
            for info in self.live_peers():
                if info.node_id not in self._pushed:
                    acks[info.node_id] = max(int(acks.get(info.node_id) or 0), self._recent_head)
        self._confirm_blocked()  # a peer that missed pushes may hold them since
        return acks

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        return self.store.cursor_reached(cursor, target)

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        if self._worker:
            return await self.store.memory_versions(memory_type, key)
        local, pulled = await asyncio.gather(self.store.memory_versions(memory_type, key),
                                             self._pull_keys(memory_type, [key], versions=True))
        return _unique(local + pulled)

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        if self._worker:
            return await self.store.memory_for_keys(memory_type, keys)
        local, pulled = await asyncio.gather(self.store.memory_for_keys(memory_type, keys),
                                             self._pull_keys(memory_type, list(keys)))
        return _unique(local + pulled)

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        if self._worker:
            return await self.store.memory_for_key(memory_type, key)
        # a client (its write's catch-up on the key, a read): its own log and the workers' at once
        local, pulled = await asyncio.gather(self.store.memory_for_key(memory_type, key),
                                             self._pull_keys(memory_type, [key]))
        return _unique(local + pulled)

    async def memory_horizon(self) -> Any:
        return await self.store.memory_horizon()

    async def compact_memory(self, applied_everywhere: Any) -> int:
        upto = int(applied_everywhere or 0)
        for seq in [s for s in self._recent if s < upto]:  # what the store drops is not read from here either
            self._recent_bytes -= len(self._recent.pop(seq))
        return await self.store.compact_memory(applied_everywhere)

    def _member_seen(self, change: Change) -> None:
        node_id = change.node.node_id
        if node_id == self.node_id:
            return
        if change.new not in LIVE:
            if node_id in self._from_peers:
                self._writer_gone(node_id)
            pushed = self._pushed.get(node_id)
            if pushed is not None and pushed.in_flight:
                pushed.block(pushed.in_flight[0][1])
                pushed.in_flight.clear()
            self._from_peers.pop(node_id, None)
            self._differs.pop(node_id, None)
            self._gap_repaired_at.pop(node_id, None)
            lock = self._pull_locks.get(node_id)
            if lock is not None and not lock.locked():
                del self._pull_locks[node_id]
            return
        if node_id in self._from_peers:
            self._ack_senders()  # an ack owed to it may have had no address before
        if change.new is NodeStatus.ACTIVE and change.old not in LIVE and self._worker \
                and change.node.role is NodeRole.WORKER and not self._closed:
            self.spawn(self._catch_up(node_id), "memory-catch-up")
