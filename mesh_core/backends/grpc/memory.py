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
  an anti-entropy exchange shows the peer's digests equal to this node's. So ``cursor_reached(acks[peer],
  position of a write)`` means: the peer's node applied that write.
- **Bounded queues.** The wire refuses a push when the peer's stream queue is full, and a peer with
  ``IN_FLIGHT_LIMIT`` pushes unacknowledged gets no more; either way the push is counted
  (``memory_push_dropped``) and the peer catches up by anti-entropy instead of growing this node's memory.
- **Anti-entropy.** ``put_digests`` keeps this node's digests here; ``peer_digests`` asks each live worker
  for its own over the unary ``Digest`` (concurrently, short timeout, an unreachable peer skipped);
  ``memory_bucket`` pulls (``Pull``) the bucket from the peers whose digests differed in that exchange,
  appends what is newer to the local log and returns the local bucket. A peer that comes alive (a join,
  a restart, the end of a partition) gets a one-off catch-up: the two logs' digests are compared
  (``Digest`` with ``log``) and the differing buckets pulled, so a node back from an absence converges
  without waiting for ``sync_interval_seconds``.
- **master_slave.** The ``memory-primary`` lease is a claim fenced by an epoch: a live holder keeps it
  while it renews (each renewal is announced to every live worker); when it lapses or its holder is not
  live, the candidate (the configured primary, else a coordination hub, else the lowest node id among live
  workers) takes it with an epoch one above the highest it has heard. The primary's entries carry its
  epoch; a replica refuses entries of a claim weaker (epoch, then node id) than the strongest it heard,
  so two primaries after a partition cannot both be obeyed where the newer one was heard.

A one-shot client keeps no log worth the name: it is pushed nothing, and reads keys, versions and buckets
from the live workers. Its write is stored once a worker's node applied it (nothing the client queued
survives its exit): ``publish_memory`` waits for the acks of the workers it pushed to (every one, or at
least one by ``CLIENT_WRITE_WAIT_SECONDS``; the others get it from those by anti-entropy) and raises
``BackendUnavailable`` when none took it. The master_slave primary's own writes (the ones forwarded to it
are acknowledged to their writers once they return) likewise wait, up to ``node_timeout_seconds``, for
the live workers to apply them, so a primary killed right after does not take them with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from ... import codec
from ...errors import BackendUnavailable, CodecError
from ...membership import Change
from ...memory.digest import BUCKETS, bucket_of, differing
from ...memory.store import item_from_wire
from ...model import MemoryItem, NodeInfo, NodeRole, NodeStatus, NodeType
from ..contracts import TOPIC_MEMORY
from ..shared import Coalescer, shortened
from ._generated import mesh_pb2 as pb
from .core import LIVE, GrpcCore, log
from .wire import Peer, Wire, closed_under_call

PRIMARY_LEASE = "memory-primary"  # the lease name node/primary.py holds
IN_FLIGHT_LIMIT = 1024  # pushes to one peer awaiting its ack; past it the peer catches up by anti-entropy
INBOX_LIMIT = 4096  # received envelopes waiting to be appended; past it they are dropped (and reported lost)
INBOX_BATCH = 256  # received envelopes taken into the log in one append at most
INBOX_BYTES = 64 * 1024 * 1024  # … and at most this many bytes of them (an envelope may be max_message_bytes)
SENDERS_KEPT = 4096  # peers whose pushes are tracked for acks at once; a further sender's pushes are dropped
MAX_EPOCH = 2 ** 63  # a primary epoch at or past this is refused (the next one must still fit the wire)
MAX_CLAIM_SECONDS = 3600.0  # a primary claim's lease longer than this (or not a number, or not positive) is refused
PULL_KEYS = 10_000  # keys one Pull may name
RELAYED_KEPT = 16_384  # peer_to_peer: entries remembered as relayed here (one relayed again later: hops bound it)
REFUSED_KEPT = 256  # refusals per sender waiting for the next ack (further ones are counted only)
PEER_CALL_SECONDS = 2.0  # one Digest or Pull call to one peer
PULL_BUCKETS_SECONDS = 5.0  # one Pull of buckets (all that differed with the peer: up to its whole replica)
PULL_CHUNK_BYTES = 1024 * 1024  # frames per PullChunk, about
CLIENT_PULL_FRESH_SECONDS = 2.0  # a client's pull of every bucket serves its bootstrap's 64 bucket reads
OWN_ACK_STORED_SECONDS = 0.5  # this node's own ack is written to its private store at most this often
CLIENT_WRITE_WAIT_SECONDS = 5.0  # a client's write waits this long for every worker it pushed to to apply it


@dataclass
class _Pushed:
    """What this node pushed to one peer that the peer has not acknowledged applying."""

    next_seq: int = 1
    in_flight: deque[tuple[int, int, int]] = field(default_factory=deque)  # (last seq, first cursor, last cursor)
    blocked: int | None = None  # lowest local cursor of an entry the peer never got

    def block(self, cursor: int) -> None:
        self.blocked = cursor if self.blocked is None else min(self.blocked, cursor)

    def ack(self, head: int) -> int:
        """The peer's ack in this node's log: below the first entry it has not applied, else ``head``."""
        out = head
        if self.in_flight:
            out = min(out, self.in_flight[0][1] - 1)
        if self.blocked is not None:
            out = min(out, self.blocked - 1)
        return out

    def clear_through(self, cursor: int) -> None:
        """The peer holds everything this node held up to ``cursor`` (equal digests): forget what it lacked."""
        if self.blocked is not None and self.blocked <= cursor:
            self.blocked = None
        while self.in_flight and self.in_flight[0][2] <= cursor:
            self.in_flight.popleft()


@dataclass
class _Received:
    """What one peer pushed here, waiting for this node to apply it before the ack goes back."""

    expected: int = 0  # the next seq expected from it (0: none seen yet)
    waiting: deque[tuple[int, int]] = field(default_factory=deque)  # (last seq of a push, local cursor it needs)
    refused: list[pb.EntryRefused] = field(default_factory=list)
    applied: int = 0  # the highest seq this node's node has applied (what the next ack says)
    acked: int = 0  # … as last acknowledged to it
    address: str = ""  # where it said it listens (its Hello): acks go back there before gossip names it

    def refuse(self, seq: int, reason: str) -> None:
        if len(self.refused) < REFUSED_KEPT:
            self.refused.append(pb.EntryRefused(seq=seq, reason=reason))


@dataclass
class _Claim:
    """The strongest memory primary claim heard (or made) here."""

    node_id: str = ""
    epoch: int = 0
    until: float = 0.0  # monotonic time the claim lapses without a renewal
    lease_seconds: float = 0.0

    def beats(self, epoch: int, node_id: str) -> bool:
        return (self.epoch, self.node_id) > (epoch, node_id)


class GrpcMemory(GrpcCore):
    """MemoryLog over the Memory streams, with Digest/Pull anti-entropy and a fenced memory primary."""

    acks_awaited = True  # strong writes, a client's and the primary's wait for the peers' acks

    wire: Wire | None  # set by the membership part when it opens

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._worker = True
        self._pushed: dict[str, _Pushed] = {}
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
        self._log_digests: dict[int, str] = {}
        self._stale_buckets: set[int] | None = None  # None: every bucket's log digest must be computed
        self._client_pulled_at = -CLIENT_PULL_FRESH_SECONDS
        self._claim = _Claim()
        self._ack_heard = asyncio.Event()  # set by every ack (a client's write waits on them)
        self._relayed_marks: set[int] = set()  # entries relayed here (see ``_first_relay``) …
        self._relayed_order: deque[int] = deque()  # … oldest first
        self._key_pulls: Coalescer[tuple[str | None, str, bool], list[bytes]] = Coalescer(self._pull_keys_now)

    # -- lifecycle -----------------------------------------------------------------------------------------
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

    # -- the log: this node's private store -------------------------------------------------------------------
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
        reached = self._push(origin, entries, cursor, gossip=not broadcast)
        if not self._worker:
            await self._held_by_workers(reached, cursor, CLIENT_WRITE_WAIT_SECONDS, required=True)
        elif origin == self.node_id and self.config.memory_sync.strategy == "master_slave" \
                and self._claim.node_id == self.node_id and reached:
            # The primary acknowledges the writes forwarded to it: they must outlive it (a kill -9 right after)
            # in the replicas, not only in its own log, as they outlive it in a shared store.
            await self._held_by_workers(reached, cursor, self.config.node_timeout_seconds, required=False)
        return cursor

    async def _held_by_workers(self, targets: list[str], cursor: int, wait: float, *, required: bool) -> None:
        """Wait until every live worker of ``targets`` applied this node's log up to ``cursor``, at most ``wait``
        seconds (a worker that stops being live meanwhile is not waited for). ``required`` (a client, whose
        write dies with it): past ``wait`` one must have, else ``BackendUnavailable``."""
        deadline = time.monotonic() + wait
        while True:
            targets = [t for t in targets if self.status_of(t) in LIVE]
            held = [t for t in targets if self._pushed[t].ack(self._accounted) >= cursor]
            # A worker that missed an earlier entry (pushed while it was lost, as in a network cut) acks nothing
            # past it until anti-entropy repairs it: waiting for it would hold every write for ``wait``.
            gapless = [t for t in targets if (self._pushed[t].blocked or cursor + 1) > cursor]
            left = deadline - time.monotonic()
            if targets and (len(held) == len(targets) or (held and (left <= 0 or set(gapless) <= set(held)))):
                return
            if left <= 0 or not targets:
                if not required:
                    self.counters["memory_primary_writes_unheld"] += 1
                    return
                self.counters["memory_client_writes_unheld"] += 1
                raise BackendUnavailable("no live worker of the mesh acknowledged this client's memory write"
                                         if targets else "this client knows no live worker to hand its memory write")
            self._ack_heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_heard.wait(), left)

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        return await self.store.read_memory(after, limit)

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

    async def memory_acks(self) -> dict[str, Any]:
        """This node's own ack, and per peer pushed to: the highest cursor of this node's log such that every
        entry pushed to it at or below it was applied there (see the module's docstring)."""
        acks = dict(await self.store.memory_acks())
        if self._own_ack:
            acks[self.node_id] = max(int(acks.get(self.node_id) or 0), self._own_ack)
        for node_id, pushed in self._pushed.items():
            acks[node_id] = pushed.ack(self._accounted)
        return acks

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        return self.store.cursor_reached(cursor, target)

    async def memory_versions(self, memory_type: str | None, key: str) -> list[bytes]:
        local = await self.store.memory_versions(memory_type, key)
        if self._worker:
            return local
        return _unique(local + await self._pull_keys(memory_type, [key], versions=True))

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        local = await self.store.memory_for_keys(memory_type, keys)
        if self._worker:
            return local
        return _unique(local + await self._pull_keys(memory_type, list(keys)))

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        local = await self.store.memory_for_key(memory_type, key)
        if self._worker:
            return local
        return _unique(local + await self._pull_keys(memory_type, [key]))

    async def memory_horizon(self) -> Any:
        return await self.store.memory_horizon()

    async def compact_memory(self, applied_everywhere: Any) -> int:
        return await self.store.compact_memory(applied_everywhere)

    # -- pushing ------------------------------------------------------------------------------------------
    def _push(self, origin: str, entries: Sequence[tuple[str, str, bytes]], cursor: int, *,
              gossip: bool) -> list[str]:
        """Push a publish's entries (local cursors up to ``cursor``) to the peers; the ones that took them."""
        if not self._worker and gossip:
            gossip = False  # a client's write goes to every worker: it relays nothing later
        peers = self.live_peers(workers_only=True)
        cfg = self.config.memory_sync
        epoch = self._claim.epoch if cfg.strategy == "master_slave" and self._claim.node_id == self.node_id else 0
        if gossip:
            targets = self._sample(peers, cfg.gossip_fanout)
            hops, seen = len(peers), [self.node_id, *(p.node_id for p in targets)]
        else:
            targets, hops, seen = peers, 0, []
        parts = [pb.MemoryEntry(origin_id=origin, memory_type=mt, key=key, frame=frame, hops_left=hops, epoch=epoch,
                                seen_by=seen) for mt, key, frame in entries]
        first = cursor - len(parts) + 1  # a publish's entries are contiguous in the log (one coalesced batch)
        sent = [info.node_id for info in targets if self._send_entries(info.node_id, parts, first, cursor)]
        if not gossip:  # a peer pushed to before but not live now did not get these
            reached = {p.node_id for p in targets}
            for node_id, pushed in self._pushed.items():
                if node_id not in reached:
                    pushed.block(first)
        self._accounted = max(self._accounted, cursor)
        return sent

    def _sample(self, peers: Sequence[NodeInfo], fanout: int) -> list[NodeInfo]:
        wire = self.wire
        rng = wire.rng if wire is not None else None
        if rng is None or len(peers) <= fanout:
            return list(peers)
        return rng.sample(list(peers), fanout)

    def _send_entries(self, node_id: str, parts: Sequence[pb.MemoryEntry], first: int, last: int) -> bool:
        """Push ``parts`` (local cursors ``first``..``last``) to ``node_id``; False (counted) when refused."""
        pushed = self._pushed.setdefault(node_id, _Pushed())
        address = self.address_of(node_id)
        sent = False
        if self.wire is not None and address and len(pushed.in_flight) < IN_FLIGHT_LIMIT:
            env = pb.MemoryMessage()
            for i, part in enumerate(parts):
                entry = env.entries.add()
                entry.CopyFrom(part)
                entry.seq = pushed.next_seq + i
            sent = self.wire.send(address, "memory", env)
        if sent:
            pushed.next_seq += len(parts)
            pushed.in_flight.append((pushed.next_seq - 1, first, last))
        else:
            self.counters["memory_push_dropped"] += len(parts)
            pushed.block(first)
        return sent

    # -- receiving ----------------------------------------------------------------------------------------
    def _memory_received(self, peer: Peer, env: pb.MemoryMessage) -> None:
        if not peer.node_id:
            return
        if env.HasField("ack"):
            self._acked(peer, env.ack)
        if env.HasField("primary"):
            claim = env.primary
            lease = claim.lease_seconds
            if claim.node_id != peer.node_id or not 0 < claim.epoch < MAX_EPOCH \
                    or not (math.isfinite(lease) and 0 < lease <= MAX_CLAIM_SECONDS):
                # a claim is announced by the claimant itself, at an epoch and for a time that make sense
                self.refuse("memory_claims_refused", peer.node_id, f"grpc memory: a primary claim from "
                            f"{peer.name or '?'} for {claim.node_id[:12]!r} at epoch {claim.epoch} for {lease} s")
            else:
                self._heard_claim(claim.node_id, claim.epoch, lease)
        if env.entries:
            size = env.ByteSize()
            if self._inbox_bytes + size > INBOX_BYTES:
                self.counters["memory_inbox_dropped"] += len(env.entries)
                return
            try:
                self._memory_inbox.put_nowait((peer, list(env.entries), size))
                self._inbox_bytes += size
            except asyncio.QueueFull:  # the sender hears of the gap with its next push
                self.counters["memory_inbox_dropped"] += len(env.entries)

    async def _append_loop(self) -> None:
        """Take what the peers pushed, every envelope waiting at once (up to ``INBOX_BATCH``): one append to
        the log, one wake-up of the node, one round of acks per batch, whatever the number of senders."""
        inbox = self._memory_inbox
        while True:
            batch = [await inbox.get()]
            while len(batch) < INBOX_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            self._inbox_bytes = max(0, self._inbox_bytes - sum(size for _, _, size in batch))
            try:
                await self._take([(peer, entries) for peer, entries, _ in batch])
            except Exception as exc:  # one bad batch never ends the loop (the senders catch up by anti-entropy)
                self.found_problem("backend_errors", f"grpc memory inbox: {shortened(repr(exc))}")

    def _sender(self, peer: Peer) -> _Received | None:
        """What is tracked of ``peer``'s pushes; None when ``SENDERS_KEPT`` others are tracked (they are live)."""
        state = self._from_peers.get(peer.node_id)
        if state is None:
            if len(self._from_peers) >= SENDERS_KEPT:  # the ones no longer live make room first
                for node_id in [n for n in self._from_peers if self.status_of(n) not in LIVE]:
                    del self._from_peers[node_id]
            if len(self._from_peers) >= SENDERS_KEPT:
                return None
            state = self._from_peers[peer.node_id] = _Received()
        state.address = peer.address or state.address
        return state

    async def _take(self, batch: Sequence[tuple[Peer, list[pb.MemoryEntry]]]) -> None:
        """Validate, append (in one go) and relay the entries of envelopes from peers; record what each
        sender's ack waits for: the local cursor where the whole batch landed."""
        good: list[tuple[pb.MemoryEntry, MemoryItem]] = []
        units: list[tuple[_Received, int, int]] = []  # (sender, first seq, last seq) per envelope taken
        for peer, entries in batch:
            state = self._sender(peer)
            if state is None:
                self.counters["memory_inbox_dropped"] += len(entries)
                continue
            first_seq = entries[0].seq
            if state.expected and first_seq > state.expected:
                state.refuse(state.expected, f"entries {state.expected}..{first_seq - 1} were lost on the way")
            for entry in entries:
                item, why = self._check(entry)
                if item is None:
                    state.refuse(entry.seq, shortened(why))
                    self.refuse("memory_frames_refused", peer.node_id,
                                f"memory entry {shortened(entry.memory_type, 60)}/{shortened(entry.key, 60)} from "
                                f"{peer.name or peer.node_id[:12]} refused: {shortened(why)}")
                else:
                    good.append((entry, item))
            state.expected = entries[-1].seq + 1
            units.append((state, first_seq, entries[-1].seq))
        landed: int | None = None
        try:
            gossiped = [g for g in good if g[0].seen_by]
            fresh = await self._newer(gossiped) if gossiped else []
            landed = await self._append([g for g in good if not g[0].seen_by] + fresh)
        except Exception as exc:  # this node's log did not take them: each sender hears of it in its next ack
            why = shortened(repr(exc))
            for state, first_seq, _ in units:
                state.refuse(first_seq, f"not appended here: {why}")
            for peer_id in {peer.node_id for peer, _ in batch}:
                self.refuse("backend_errors", peer_id, f"grpc memory from {peer_id[:12]}: {why}")
            good = []  # nothing of it is relayed either
        for state, _, last_seq in units:
            needed = max(landed or 0, state.waiting[-1][1] if state.waiting else 0)
            state.waiting.append((last_seq, needed))
        if landed is not None:
            self._accounted = max(self._accounted, landed)
            self._deliver(TOPIC_MEMORY)
        self._relay([e for e, item in good if e.seen_by and e.hops_left > 0 and self._first_relay(item)],
                    landed if landed is not None else self._accounted)
        self._ack_senders()

    def _check(self, entry: pb.MemoryEntry) -> tuple[MemoryItem | None, str]:
        """The entry's item, or None and why it is refused (codec, envelope mismatch, a stale primary epoch)."""
        try:
            item = item_from_wire(codec.decode(entry.frame, self.limits))
        except CodecError as exc:
            return None, f"frame: {exc}"
        if (item.origin, item.memory_type, item.key) != (entry.origin_id, entry.memory_type, entry.key):
            return None, (f"the frame holds {item.memory_type}/{item.key} from {item.origin[:12]}, not "
                          f"{entry.memory_type}/{entry.key} from {entry.origin_id[:12]}")
        if entry.epoch >= MAX_EPOCH:
            return None, f"epoch {entry.epoch} past 63 bits"
        if entry.epoch:
            claim = self._claim
            if claim.beats(entry.epoch, entry.origin_id):
                self.counters["memory_fenced"] += 1
                self._tell_claim(entry.origin_id)
                return None, f"epoch {entry.epoch} of {entry.origin_id[:12]} is behind {claim.epoch}"
            self._heard_claim(entry.origin_id, entry.epoch, claim.lease_seconds)
        return item, ""

    async def _newer(self, found: Sequence[tuple[Any, MemoryItem]]) -> list[tuple[Any, MemoryItem]]:
        """The entries newer than what this log holds from their origin for their key (the rest is known here)."""
        held: dict[tuple[str, str, str], int] = {}
        for memory_type in {item.memory_type for _, item in found}:
            keys = [item.key for _, item in found if item.memory_type == memory_type]
            for frame in await self.store.memory_for_keys(memory_type, keys):
                with contextlib.suppress(CodecError):
                    old = item_from_wire(codec.decode(frame, self.limits))
                    name = (old.memory_type, old.key, old.origin)
                    held[name] = max(held.get(name, -1), old.hlc)
        out = []
        for entry, item in found:
            name = (item.memory_type, item.key, item.origin)
            if item.hlc > held.get(name, -1):
                held[name] = item.hlc
                out.append((entry, item))
        return out

    async def _append(self, good: Iterable[tuple[Any, MemoryItem]]) -> int | None:
        """Append frames to this node's log under their own origins; the highest cursor, None if nothing."""
        by_origin: dict[str, list[tuple[str, str, bytes]]] = {}
        for entry, item in good:
            frame = entry.frame if isinstance(entry, pb.MemoryEntry) else entry
            by_origin.setdefault(item.origin, []).append((item.memory_type, item.key, frame))
        if not by_origin:
            return None
        cursors = await asyncio.gather(*(self.store.publish_memory(origin, frames, broadcast=False)
                                         for origin, frames in by_origin.items()))
        for frames in by_origin.values():
            self._stale(frames)
        return max(int(c or 0) for c in cursors)

    def _first_relay(self, item: MemoryItem) -> bool:
        """True the first time this node is asked to relay ``item`` (then remembered among ``RELAYED_KEPT``)."""
        mark = hash((item.origin, item.memory_type, item.key, item.hlc))
        if mark in self._relayed_marks:
            return False
        self._relayed_marks.add(mark)
        self._relayed_order.append(mark)
        if len(self._relayed_order) > RELAYED_KEPT:
            self._relayed_marks.discard(self._relayed_order.popleft())
        return True

    def _relay(self, entries: list[pb.MemoryEntry], landed: int) -> None:
        """peer_to_peer: pass entries on to ``gossip_fanout`` workers that do not hold them yet (the ones not on
        their ``seen_by`` path). Each entry is relayed once, the first time it arrives by gossip, also when this
        node knew it already (pulled by a catch-up or anti-entropy): with a fanout of 1 the gossip is one chain,
        and a node that knew the entry and kept quiet would end it before the nodes after it on the path."""
        if not entries or not self._worker:
            return
        peers = self.live_peers(workers_only=True)
        fanout = self.config.memory_sync.gossip_fanout
        by_path: dict[tuple[str, ...], list[pb.MemoryEntry]] = {}
        for entry in entries:
            by_path.setdefault(tuple(entry.seen_by), []).append(entry)
        for path, group in by_path.items():
            targets = self._sample([p for p in peers if p.node_id not in path], fanout)
            if not targets:
                continue
            seen = [*path, *(t.node_id for t in targets)]
            parts = []
            for entry in group:
                part = pb.MemoryEntry()
                part.CopyFrom(entry)
                part.hops_left = entry.hops_left - 1
                del part.seen_by[:]
                part.seen_by.extend(seen)
                parts.append(part)
            self.counters["memory_relayed"] += len(parts) * len(targets)
            for target in targets:
                self._send_entries(target.node_id, parts, landed, landed)

    def _ack_senders(self) -> None:
        """Ack to each sender what this node's node has now applied of its pushes (cumulative, with refusals)."""
        if self.wire is None:
            return
        for sender, state in self._from_peers.items():
            while state.waiting and state.waiting[0][1] <= self._own_ack:
                state.applied = state.waiting.popleft()[0]
            through = state.applied
            if through == state.acked and not any(r.seq <= through for r in state.refused):
                continue
            refused = [r for r in state.refused if r.seq <= through]
            # A sender that gossip does not name yet (a client that just joined) is answered on the stream it
            # pushed on (its Hello's address). An ack not sent (no address, a full queue) stays owed: acks are
            # cumulative, so the next one carries it, and nothing is taken as acknowledged that was not sent.
            address = self.address_of(sender) or state.address
            if not address or not self.wire.send(address, "memory", pb.MemoryMessage(
                    ack=pb.MemoryAck(through_seq=through, refused=refused))):
                continue
            state.refused = [r for r in state.refused if r.seq > through]
            state.acked = through

    def _acked(self, peer: Peer, ack: pb.MemoryAck) -> None:
        peer_id = peer.node_id
        pushed = self._pushed.get(peer_id)
        if pushed is None or ack.through_seq >= pushed.next_seq:
            # an ack of entries never pushed to it says nothing about the ones that were
            self.refuse("memory_acks_refused", peer_id, f"grpc memory: {peer.name or peer_id[:12]} acked seq "
                                                        f"{ack.through_seq}, past what was pushed to it")
            return
        for refused in ack.refused:
            unit = next((first for last_seq, first, _ in pushed.in_flight if last_seq >= refused.seq), None)
            if unit is not None:
                pushed.block(unit)
            self.refuse("memory_push_refused", peer_id, f"grpc memory: {peer.name or peer_id[:12]} refused entry "
                                                        f"{refused.seq}: {shortened(refused.reason)}")
        while pushed.in_flight and pushed.in_flight[0][0] <= ack.through_seq:
            pushed.in_flight.popleft()
        self._ack_heard.set()

    def _member_seen(self, change: Change) -> None:
        node_id = change.node.node_id
        if node_id == self.node_id:
            return
        if change.new not in LIVE:
            pushed = self._pushed.get(node_id)
            if pushed is not None and pushed.in_flight:
                pushed.block(pushed.in_flight[0][1])
                pushed.in_flight.clear()
            self._from_peers.pop(node_id, None)
            self._differs.pop(node_id, None)
            return
        if node_id in self._from_peers:
            self._ack_senders()  # an ack owed to it may have had no address before
        if change.new is NodeStatus.ACTIVE and change.old not in LIVE and self._worker \
                and change.node.role is NodeRole.WORKER and not self._closed:
            self.spawn(self._catch_up(node_id), "memory-catch-up")

    # -- anti-entropy -------------------------------------------------------------------------------------
    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        await self.store.put_digests(node_id, digests)
        if node_id == self.node_id:
            self._digests = dict(digests)
            # what the replica held when it hashed: everything its node applied and its own writes
            self._digests_cursor = max(self._own_ack, self._own_written)

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        """This node's digests and every live worker's (asked now, concurrently; an unreachable peer or one
        that has published none is left out). A peer whose digests equal ours holds all we had applied."""
        out: dict[str, dict[int, str]] = {}
        mine = dict(self._digests or {})
        if self._digests is not None:
            out[self.node_id] = mine
        peers = self.live_peers(workers_only=True)
        replies = await asyncio.gather(*(self._call_digest(p.node_id, mine, log=False) for p in peers))
        for info, reply in zip(peers, replies, strict=True):
            if reply is None or not reply.published:
                continue
            theirs = dict(reply.digests)
            out[info.node_id] = theirs
            self._differs[info.node_id] = differing(mine, theirs)
            if not self._differs[info.node_id] and info.node_id in self._pushed:
                self._pushed[info.node_id].clear_through(self._digests_cursor)
        return out

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        """This log's newest entries of ``bucket``, after pulling the bucket from the peers whose digests for it
        differed in the last exchange (a client pulls every bucket from every live worker once, then reads)."""
        if not self._worker:
            if time.monotonic() - self._client_pulled_at >= CLIENT_PULL_FRESH_SECONDS:
                peers = [p.node_id for p in self.live_peers(workers_only=True)]
                await self._pull_into_log(peers, list(range(BUCKETS)))
                self._client_pulled_at = time.monotonic()
        elif any(bucket in buckets for buckets in self._differs.values()):
            # The node asks for the differing buckets one by one: the first ask pulls all of them, one Pull per
            # peer (its differing buckets), so a round costs one call per peer, not one per bucket and peer.
            wanted = {p: sorted(buckets) for p, buckets in self._differs.items()
                      if buckets and self.status_of(p) in LIVE}
            self._differs = {}
            await self._pull_into_log_from(wanted)
        return await self.store.memory_bucket(bucket)

    async def _catch_up(self, peer_id: str) -> None:
        """Compare this log with a peer that came alive and pull what differs (then wake this node)."""
        reply = await self._call_digest(peer_id, await self._log_digests_now(), log=True)
        if reply is not None and reply.differing and await self._pull_into_log([peer_id], sorted(reply.differing)):
            self.counters["memory_caught_up"] += 1
            self._deliver(TOPIC_MEMORY)

    async def _pull_back(self, peer_id: str, buckets: list[int]) -> None:
        """Pull the buckets a catching-up peer found different from it (the other half of ``_catch_up``)."""
        if await self._pull_into_log([peer_id], buckets):
            self.counters["memory_caught_up"] += 1
            self._deliver(TOPIC_MEMORY)

    async def _pull_into_log(self, peers: Sequence[str], buckets: list[int]) -> int:
        """Pull ``buckets`` from ``peers`` and append to this log what is newer than it holds; how many."""
        return await self._pull_into_log_from(dict.fromkeys(peers, buckets))

    async def _pull_into_log_from(self, wanted: dict[str, list[int]]) -> int:
        """Pull from each peer its buckets in ``wanted`` (concurrently) and append what is newer here; how many."""
        wanted = {p: buckets for p, buckets in wanted.items() if buckets}
        if not wanted:
            return 0
        pulled = await asyncio.gather(*(self._call_pull(p, pb.PullRequest(buckets=buckets), PULL_BUCKETS_SECONDS)
                                        for p, buckets in wanted.items()))
        found: list[tuple[Any, MemoryItem]] = []
        for frame in _unique([f for frames in pulled for f in frames]):
            try:
                found.append((frame, item_from_wire(codec.decode(frame, self.limits))))
            except CodecError as exc:
                self.found_problem("memory_frames_refused", f"pulled memory frame refused: {exc}")
        fresh = await self._newer(found)
        if await self._append(fresh) is None:
            return 0
        return len(fresh)

    async def _log_digests_now(self) -> dict[int, str]:
        """Per bucket, a hash of this log's newest entry per key and origin (recomputed for changed buckets)."""
        stale = self._stale_buckets
        buckets = None if stale is None else sorted(stale)
        if buckets == []:
            return dict(self._log_digests)
        self._stale_buckets = set()
        where = "" if buckets is None else f" WHERE bucket IN ({','.join(str(b) for b in buckets)})"

        def read(conn: Any) -> list[Any]:
            return conn.execute(f"SELECT bucket, memory_type, key, origin, frame FROM memory_latest{where}").fetchall()
        rows = await self.store._read(read)
        lines: dict[int, list[str]] = {}
        for bucket, memory_type, key, origin, frame in rows:
            body = frame if isinstance(frame, bytes) else str(frame).encode()
            lines.setdefault(int(bucket), []).append(
                f"{memory_type}\0{key}\0{origin}\0{hashlib.sha1(body).hexdigest()[:16]}")
        if buckets is None:
            self._log_digests = {}
        for bucket in buckets or ():
            self._log_digests.pop(bucket, None)
        for bucket, found in lines.items():
            self._log_digests[bucket] = hashlib.sha1("\n".join(sorted(found)).encode()).hexdigest()[:16]
        return dict(self._log_digests)

    def _stale(self, entries: Iterable[tuple[str, str, bytes]]) -> None:
        if self._stale_buckets is not None:
            self._stale_buckets.update(bucket_of(mt, key) for mt, key, _ in entries)

    # -- calls to peers -----------------------------------------------------------------------------------
    async def _call_digest(self, peer_id: str, digests: dict[int, str], *, log: bool) -> pb.DigestReply | None:
        address, wire = self.address_of(peer_id), self.wire
        if not address or wire is None:
            return None
        try:
            reply: pb.DigestReply = await wire.stub(address).Digest(
                pb.DigestRequest(caller=wire.hello(), digests=digests, log=log), timeout=PEER_CALL_SECONDS,
                metadata=wire.metadata())
            return reply
        except grpc.aio.AioRpcError as exc:
            self.counters["memory_peer_calls_failed"] += 1
            _log_call("Digest", address, exc)
            return None
        except asyncio.CancelledError:
            if not closed_under_call():
                raise
            self.counters["memory_peer_calls_failed"] += 1  # the peer was declared dead mid-call
            return None

    async def _call_pull(self, peer_id: str, request: pb.PullRequest,
                         timeout: float = PEER_CALL_SECONDS) -> list[bytes]:
        address, wire = self.address_of(peer_id), self.wire
        if not address or wire is None:
            return []
        asked = pb.PullRequest()
        asked.CopyFrom(request)
        asked.caller.CopyFrom(wire.hello())
        frames: list[bytes] = []
        try:
            async for chunk in wire.stub(address).Pull(asked, timeout=timeout, metadata=wire.metadata()):
                frames.extend(chunk.frames)
        except grpc.aio.AioRpcError as exc:
            self.counters["memory_peer_calls_failed"] += 1
            _log_call("Pull", address, exc)
        except asyncio.CancelledError:
            if not closed_under_call():
                raise
            self.counters["memory_peer_calls_failed"] += 1  # the peer was declared dead mid-call
        return frames

    async def _pull_keys(self, memory_type: str | None, keys: list[str], *, versions: bool = False) -> list[bytes]:
        """A client's read of keys from every live worker. Concurrent reads share the calls (``_key_pulls``):
        a client writing 64 keys at once asks each worker once for all of them, not 64 times."""
        found = await self._key_pulls([(memory_type, key, versions) for key in keys])
        return [f for frames in found for f in frames]

    async def _pull_keys_now(self, wanted: list[tuple[str | None, str, bool]]) -> list[list[bytes]]:
        """The frames of each ``(memory_type or None, key, versions)`` in ``wanted``, from one Pull per live
        worker and kind of read (at most ``PULL_KEYS`` keys each); frames are handed to the keys they hold."""
        groups: dict[tuple[str | None, bool], list[str]] = {}
        for memory_type, key, versions in wanted:
            groups.setdefault((memory_type, versions), []).append(key)
        requests: list[pb.PullRequest] = []
        for (memory_type, versions), keys in groups.items():
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), PULL_KEYS):
                request = pb.PullRequest(keys=unique[start:start + PULL_KEYS], versions=versions)
                if memory_type is not None:
                    request.memory_type = memory_type
                requests.append(request)
        peers = [p.node_id for p in self.live_peers(workers_only=True)]
        pulled = await asyncio.gather(*(self._call_pull(p, r) for p in peers for r in requests))
        by_key: dict[tuple[str | None, str], list[bytes]] = {}
        for frame in _unique(f for frames in pulled for f in frames):
            try:
                item = item_from_wire(codec.decode(frame, self.limits))
            except CodecError as exc:
                self.found_problem("memory_frames_refused", f"pulled memory frame refused: {exc}")
                continue
            by_key.setdefault((item.memory_type, item.key), []).append(frame)
            by_key.setdefault((None, item.key), []).append(frame)  # for reads of a key of any type
        return [by_key.get((memory_type, key), []) for memory_type, key, _ in wanted]

    # -- serving peers ------------------------------------------------------------------------------------
    async def _serve_digest(self, request: pb.DigestRequest, context: Any) -> pb.DigestReply:
        theirs = dict(request.digests)
        if request.log:
            mine = await self._log_digests_now()
            differs = sorted(differing(mine, theirs))
            caller = request.caller.node_id
            if differs and self._worker and not self._closed and caller and caller != self.node_id \
                    and self.status_of(caller) in LIVE:
                # A catch-up runs both ways: the caller saw this node come back (SIGCONT, a healed partition),
                # while this node may have seen nothing change, and it is the one that missed writes.
                self.spawn(self._pull_back(caller, differs), "memory-catch-up")
            return pb.DigestReply(digests=mine, differing=differs, published=True)
        mine = dict(self._digests or {})
        return pb.DigestReply(digests=mine, differing=sorted(differing(mine, theirs)),
                              published=self._digests is not None)

    async def _serve_pull(self, request: pb.PullRequest, context: Any) -> list[pb.PullChunk]:
        buckets = list(dict.fromkeys(request.buckets))  # a bucket named twice is read once
        if any(b >= BUCKETS for b in buckets) or len(request.keys) > PULL_KEYS:
            self.counters["refused_calls_bad_argument"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"buckets are 0..{BUCKETS - 1} and at most {PULL_KEYS} keys are pulled at once")
        chunks: list[pb.PullChunk] = []
        for bucket in buckets:
            chunks += _chunks(await self.store.memory_bucket(bucket), bucket)
        if request.keys:
            memory_type = request.memory_type if request.HasField("memory_type") else None
            keys = list(dict.fromkeys(request.keys))
            if request.versions:
                frames = [f for key in keys for f in await self.store.memory_versions(memory_type, key)]
            elif memory_type is not None:
                frames = await self.store.memory_for_keys(memory_type, keys)
            else:
                frames = [f for key in keys for f in await self.store.memory_for_key(None, key)]
            chunks += _chunks(frames, None)
        return chunks

    # -- master_slave: the memory primary's lease, fenced by an epoch ------------------------------------
    def primary_lease(self, holder: str, ttl: float) -> str:
        """``hold_lease("memory-primary", holder, ttl)`` on grpc: a live claim that is renewed holds; when it
        lapses the candidate takes it with a higher epoch, announced to every live worker (module docstring)."""
        now = time.monotonic()
        claim = self._claim
        if claim.node_id and claim.node_id != holder and now < claim.until and \
                (claim.node_id == self.node_id or self.status_of(claim.node_id) in LIVE):
            return claim.node_id
        candidate = self._primary_candidate(holder)
        if candidate != holder:
            return candidate  # the candidate takes the role on its own next renewal
        if claim.node_id != holder or now >= claim.until:
            self._claim = claim = _Claim(holder, claim.epoch + 1)
            self.counters["memory_primary_epochs"] += 1
            log.info("grpc memory: %s takes the memory primary role at epoch %d", holder[:12], claim.epoch)
        claim.until, claim.lease_seconds = now + ttl, ttl
        self._announce(claim)
        return holder

    def _primary_candidate(self, holder: str) -> str:
        """Who should hold the role when it is free: the configured primary, else a coordination hub, else the
        lowest node id, among the live workers and ``holder``."""
        named = self.config.memory_sync.primary
        me = self.info
        nodes = [i for i in self.live_peers(workers_only=True) if self.status_of(i.node_id) is NodeStatus.ACTIVE]
        ranked = [(i.node_id, i.name, i.node_type) for i in nodes]
        ranked.append((holder, me.name if me and holder == self.node_id else "",
                       me.node_type if me and holder == self.node_id else NodeType.GENERAL))
        ranked.sort(key=lambda r: (not (named and r[1] == named), r[2] is not NodeType.COORDINATION_HUB, r[0]))
        return ranked[0][0]

    def _announce(self, claim: _Claim) -> None:
        if self.wire is None:
            return
        for info in self.live_peers(workers_only=True):
            address = self.address_of(info.node_id)
            if address:
                self.wire.send(address, "memory", pb.MemoryMessage(primary=pb.PrimaryClaim(
                    node_id=claim.node_id, epoch=claim.epoch, lease_seconds=claim.lease_seconds)))

    def _tell_claim(self, node_id: str) -> None:
        """Tell a node that claims the role with a weaker epoch (one restarted, which forgot it, or cut off) the
        strongest claim heard here, with what is left of its lease: it takes the role again above that epoch."""
        claim, address = self._claim, self.address_of(node_id)
        if self.wire is not None and address and claim.node_id:
            left = max(0.0, claim.until - time.monotonic())
            self.wire.send(address, "memory", pb.MemoryMessage(primary=pb.PrimaryClaim(
                node_id=claim.node_id, epoch=claim.epoch, lease_seconds=left)))

    def _heard_claim(self, node_id: str, epoch: int, lease_seconds: float) -> None:
        claim = self._claim
        if not node_id:
            return
        if claim.beats(epoch, node_id):
            if node_id != self.node_id and node_id != claim.node_id:
                self._tell_claim(node_id)
            return
        if (epoch, node_id) != (claim.epoch, claim.node_id):
            if claim.node_id == self.node_id:
                self.counters["memory_primary_deposed"] += 1
                log.warning("grpc memory: deposed as memory primary by %s at epoch %d", node_id[:12], epoch)
            self._claim = claim = _Claim(node_id, epoch)
        claim.lease_seconds = lease_seconds or claim.lease_seconds
        claim.until = time.monotonic() + lease_seconds  # what is left of it (a told claim may have lapsed)

    @property
    def memory_epoch(self) -> tuple[str, int]:
        """The strongest primary claim known here: (node id, epoch)."""
        return self._claim.node_id, self._claim.epoch


def _unique(frames: Iterable[bytes]) -> list[bytes]:
    return list(dict.fromkeys(frames))


def _chunks(frames: list[bytes], bucket: int | None) -> list[pb.PullChunk]:
    out: list[pb.PullChunk] = []
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        if batch and size + len(frame) > PULL_CHUNK_BYTES:
            out.append(pb.PullChunk(bucket=bucket, frames=batch))
            batch, size = [], 0
        batch.append(frame)
        size += len(frame)
    if batch:
        out.append(pb.PullChunk(bucket=bucket, frames=batch))
    return out


def _log_call(method: str, address: str, exc: grpc.aio.AioRpcError) -> None:
    log.debug("grpc memory: %s to %s failed: %s %s", method, address, exc.code(), exc.details())
