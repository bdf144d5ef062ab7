"""``grpc_mesh`` memory: pushes to the peers, what they push here, acks after apply, peer_to_peer relays (package
docstring)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from .... import codec
from ....errors import BackendUnavailable, CodecError
from ....memory.store import item_from_wire
from ....model import LIVE, MemoryItem, NodeInfo
from ....waits import wait_event
from ...contracts import TOPIC_MEMORY
from ...shared import shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .base import (
    IN_FLIGHT_LIMIT,
    INBOX_BATCH,
    INBOX_BYTES,
    MAX_CLAIM_SECONDS,
    MAX_EPOCH,
    MISSED_REPAIR_SECONDS,
    PEER_STALLED_SECONDS,
    RELAYED_KEPT,
    SENDERS_KEPT,
    _Pushed,
    _Received,
)
from .primary import MemoryPrimary


class MemoryPush(MemoryPrimary):
    """Push-and-ack over the Memory streams: bounded, acknowledged once applied, relayed on peer_to_peer."""

    async def _held_by_workers(self, targets: list[str], cursor: int, wait: float, *, required: bool) -> None:
        """Wait until every live worker of ``targets`` applied this node's log up to ``cursor``, at most ``wait``
        seconds (a worker that stops being live meanwhile is not waited for, nor, once another holds the entries,
        one that has owed an ack for ``PEER_STALLED_SECONDS``: paused or cut off, not yet declared so).
        ``required`` (a client, whose write dies with it): past ``wait`` one must have, else
        ``BackendUnavailable``."""
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            targets = [t for t in targets if self.status_of(t) in LIVE]
            held = {t for t in targets if self._pushed[t].ack(self._accounted) >= cursor}
            # A worker that missed an earlier entry (pushed while it was lost, as in a network cut) acks nothing
            # past it until anti-entropy repairs it: waiting for it would hold every write for ``wait``. Nor is a
            # stalled one waited for: every write would wait for it until it is declared dead.
            awaited = [t for t in targets if t not in held and (self._pushed[t].blocked or cursor + 1) > cursor
                       and not self._pushed[t].stalled(now)]
            left = deadline - now
            if targets and held and (left <= 0 or not awaited):
                if len(held) < len(targets):
                    self.counters["memory_writes_past_slow_peers"] += 1
                return
            if left <= 0 or not targets:
                if not required:
                    self.counters["memory_primary_writes_unheld"] += 1
                    return
                self.counters["memory_client_writes_unheld"] += 1
                raise BackendUnavailable("no live worker of the mesh acknowledged this client's memory write"
                                         if targets else "this client knows no live worker to hand its memory write")
            # woken by the next ack, or when the first awaited peer would count as stalled
            owed = [self._pushed[t].owed_since for t in awaited]
            stall_at = min((o + PEER_STALLED_SECONDS for o in owed if o is not None), default=math.inf)
            self._ack_heard.clear()
            await wait_event(self._ack_heard, max(0.001, min(left, stall_at - now + 0.001)))

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
        self._confirm_blocked()
        return sent

    def _gap_seen(self, peer_id: str) -> None:
        """Entries ``peer_id`` pushed here went missing on the way: anti-entropy rounds come soon for a while (the
        catch-up part starts one with it at once too)."""
        self._missed_until = time.monotonic() + MISSED_REPAIR_SECONDS

    def _confirm_blocked(self) -> None:
        """Check the active peers that missed pushes for holding them since (the anti-entropy part does)."""

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
            pushed.owe(time.monotonic())
        else:
            self.counters["memory_push_dropped"] += len(parts)
            pushed.block(first)
        return sent

    def _memory_received(self, peer: Peer, env: pb.MemoryMessage) -> None:
        if not peer.node_id:
            return
        if env.HasField("ack"):
            self._acked(peer, env.ack)
        if env.HasField("primary"):
            claim = env.primary
            lease = claim.lease_seconds
            if claim.node_id != peer.node_id or not 0 < claim.epoch < MAX_EPOCH \
                    or not (math.isfinite(lease) and 0 <= lease <= MAX_CLAIM_SECONDS):
                # a claim is announced (or released: for no time) by the claimant itself, at an epoch and for a time
                # that make sense
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
                self._gap_seen(peer.node_id)
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
        # A push that added nothing here (each entry held already: gossip, a writer's check) is acked once the node
        # applied what the log holds, where those entries are; one that added entries, once it applied them.
        held = landed if landed is not None else self._recent_head
        for state, _, last_seq in units:
            needed = max(held, state.waiting[-1][1] if state.waiting else 0)
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
        pushed.acked_through(ack.through_seq)
        self._ack_heard.set()
