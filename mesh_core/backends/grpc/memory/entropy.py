"""``grpc_mesh`` memory: anti-entropy over ``Digest``/``Pull`` and the catch-up of a peer that came alive
(package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from .... import codec
from ....errors import CodecError
from ....memory.digest import BUCKETS, BucketDigests, Line, bucket_of, differing
from ....memory.store import item_from_wire, key_chunks
from ....model import LIVE, MemoryItem, NodeStatus
from ...contracts import TOPIC_MEMORY
from ...shared import runs_of_bytes
from .._generated import mesh_pb2 as pb
from .base import (
    CLIENT_PULL_FRESH_SECONDS,
    CONFIRM_RANGE_MAX,
    CONFIRM_SECONDS,
    GAP_REPAIR_SECONDS,
    MISSED_REPAIR_SECONDS,
    PEER_CALL_SECONDS,
    PULL_BUCKETS_SECONDS,
    PULL_HAVE_MAX,
    PULL_KEYS,
    PULL_PAGE_BYTES,
    PULL_PAGES,
    RECENT_KEPT,
    RESEND_MAX,
    _chunks,
    _unique,
    frame_mark,
    peer_call_failed,
)
from .reads import MemoryReads


class MemoryEntropy(MemoryReads):
    """Digest/Pull anti-entropy, catch-ups, and the Digest and Pull calls this node serves."""

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
            # peer (its differing buckets), so a round costs one call per peer, not one per bucket and peer. A peer
            # that a catch-up or pull-back will pull from (queued or under way) is left to it: a catch-up goes to the
            # workers in turn, each pull naming what the ones before brought, where a round pulling from b while it
            # pulled from a named what the log held before either, and each entry moved twice. The others are
            # pulled: a catch-up with one slow peer does not hold up the repair from the rest. A peer this node is
            # pulling from already (a round's unawaited pull) is left to that pull, which brings what it lacks. The
            # round (and the node's reading of its log, which waits for it) does not queue behind them; the next
            # round comes soon and pulls what may be left. Nor does the round wait for its pulls while the log holds
            # entries this node has not read yet (a catch-up just brought them): the node reads them between the
            # round's buckets, and the pulls' own entries when they land (a wake-up), not after the slowest peer.
            # While the log is small enough that one Pull names all it holds (``PULL_HAVE_MAX``), a peer whose digests
            # differ is asked for everything this log lacks, not only the buckets that differed when it last
            # published (that can be a round old): it costs the same, as only what is missing moves.
            held = sum(len(marks) for marks in self._log_marks.values())
            wanted = {p: list(range(BUCKETS)) if held <= PULL_HAVE_MAX else sorted(buckets)
                      for p, buckets in self._differs.items() if buckets and self.status_of(p) in LIVE}
            self._differs = {}
            busy = [p for p in wanted if self._pulling(p) or p in self._catch_ups_due]
            pulls = self._pull_into_log_from({p: b for p, b in wanted.items() if p not in busy})
            if busy:
                self.counters["memory_round_pulls_left_to_catch_up"] += len(busy)
                self._missed_until = time.monotonic() + MISSED_REPAIR_SECONDS
            if self._recent_head > self._own_ack:
                # Not awaited, not followed up either: a pull that fails or stops short brings the next round soon
                # itself (``_pull_gap``). One that works needs no other round: under steady writes the log always
                # holds unread entries, and every round would have asked for the next a second later.
                self.counters["memory_round_pulls_unawaited"] += 1
                self.spawn(pulls, "memory-round-pull")
            else:
                await pulls
        return await self.store.memory_bucket(bucket)

    async def _catch_up(self, peer_id: str) -> bool:
        """Compare this log with a peer that came alive and pull what differs (then wake this node); False when
        the peer did not answer. One catch-up or pull-back at a time (``_catching_up``): a node back from away
        catches up with each worker while each of them, seeing it back, asks it to pull back, and each after the
        first names what the ones before brought."""
        with self._catching_up_with([peer_id]):
            async with self._catching_up:
                reply = await self._call_digest(peer_id, await self._log_digests_now(), log=True)
                if reply is None:
                    return False
                if reply.differing and await self._pull_into_log([peer_id], sorted(reply.differing)):
                    self.counters["memory_caught_up"] += 1
                    self._deliver(TOPIC_MEMORY)
        return True

    @contextlib.contextmanager
    def _catching_up_with(self, peers: Sequence[str]) -> Iterator[None]:
        """While a catch-up or pull-back will pull from ``peers`` (queued behind another, or under way): a round
        leaves them to it (``memory_bucket``)."""
        due = self._catch_ups_due
        for peer_id in peers:
            due[peer_id] = due.get(peer_id, 0) + 1
        try:
            yield
        finally:
            for peer_id in peers:
                due[peer_id] -= 1
                if not due[peer_id]:
                    del due[peer_id]

    async def _catch_up_with_each(self, peers: Sequence[str]) -> None:
        """Catch up with each of ``peers`` in turn. One may be dead and not yet known so (a primary killed while
        this node was away): it is counted and the next asked. One may have missed entries too (pushes to it
        dropped, its queue full under load), which the next one holds. Each catch-up after the first names what this
        log holds by then, so only what is still missing moves."""
        with self._catching_up_with(peers):
            for peer_id in peers:
                if self._closed:
                    return
                if self.status_of(peer_id) not in LIVE or not await self._catch_up(peer_id):
                    self.counters["memory_catch_ups_unanswered"] += 1

    async def _pull_back(self, peer_id: str, buckets: list[int]) -> None:
        """Pull the buckets a catching-up peer found different from it (the other half of ``_catch_up``)."""
        with self._catching_up_with([peer_id]):
            async with self._catching_up:
                if await self._pull_into_log([peer_id], buckets):
                    self.counters["memory_caught_up"] += 1
                    self._deliver(TOPIC_MEMORY)

    async def _pull_into_log(self, peers: Sequence[str], buckets: list[int]) -> int:
        """Pull ``buckets`` from ``peers`` and append to this log what is newer than it holds; how many."""
        return await self._pull_into_log_from(dict.fromkeys(peers, buckets))

    async def _pull_into_log_from(self, wanted: dict[str, list[int]]) -> int:
        """Pull from each peer its buckets in ``wanted`` and append what is newer here; how many.

        One peer after the other, active and prompt ones first: each pull names what this log holds when it begins,
        so what the first brought does not move again from the next. Pulled at once, a node that missed what every
        peer holds was sent it by each of them."""
        now = time.monotonic()
        order = sorted((p for p, buckets in wanted.items() if buckets),
                       key=lambda p: (self.status_of(p) is not NodeStatus.ACTIVE, self._slow_to_answer(p, now)))
        appended = 0
        for peer_id in order:
            appended += await self._pull_gap(peer_id, wanted[peer_id])
        return appended

    async def _pull_gap(self, peer_id: str, buckets: list[int]) -> int:
        """Pull from ``peer_id`` the frames of ``buckets`` this log lacks, page after page, and append what is newer
        here; how many. The request names what this log holds of the buckets (``have``), so what moves is the gap,
        not the buckets: a node back from a pause gets its thousands of missed entries, not the whole replica
        again. One pull from a peer at a time (a catch-up, the peer's pull-back and a round may ask at once: the
        later ones then name what the first brought). A pull that failed or stopped short brings the next round
        soon (``_missed_until``)."""
        lock = self._pull_locks.setdefault(peer_id, asyncio.Lock())
        async with lock:
            appended = 0
            for group, have in await self._held_marks(buckets):
                for _ in range(PULL_PAGES):
                    request = pb.PullRequest(buckets=group, have=sorted(have), page_bytes=PULL_PAGE_BYTES)
                    page = await self._pull_call(peer_id, request, PULL_BUCKETS_SECONDS)
                    if page is None:  # not answered: the next round comes soon, not in sync_interval_seconds
                        self._missed_until = time.monotonic() + MISSED_REPAIR_SECONDS
                        return appended
                    frames, more = page
                    self.counters["memory_pull_pages"] += 1
                    self.counters["memory_pulled_frames"] += len(frames)
                    fresh = await self._append_pulled(frames)
                    if fresh:
                        appended += fresh
                        self._deliver(TOPIC_MEMORY)  # read as it lands, page by page
                    if not more or not frames:
                        break
                    have.update(frame_mark(f) for f in frames)
                else:
                    self._missed_until = time.monotonic() + MISSED_REPAIR_SECONDS
            return appended

    async def _held_marks(self, buckets: list[int]) -> list[tuple[list[int], set[int]]]:
        """``buckets`` in groups of at most ``PULL_HAVE_MAX`` frames held here, each with the marks of those frames
        (``frame_mark``, from ``_log_marks``)."""
        await self._log_digests_now()
        groups: list[tuple[list[int], set[int]]] = []
        for bucket in buckets:
            marks = self._log_marks.get(bucket, set())
            if groups and len(groups[-1][1]) + len(marks) <= PULL_HAVE_MAX:
                groups[-1][0].append(bucket)
                groups[-1][1].update(marks)
            else:  # one bucket holding more than PULL_HAVE_MAX names some only (the rest is sent, and found known)
                groups.append(([bucket], set(itertools.islice(marks, PULL_HAVE_MAX))))
        return groups

    async def _append_pulled(self, frames: Sequence[bytes]) -> int:
        """Append the pulled frames newer than this log holds (one pull at a time: two pulls never both append one
        entry); how many.

        The frames this log holds already, byte for byte, are dropped first by their marks, undecoded: two pulls
        from two peers (a catch-up and a peer's pull-back, when a node comes back) name the same ``have`` and bring
        the same frames, and the second one's were decoded, then read back and decoded from the log to be found
        known: 0.35 s of the loop for 10,000 entries, while the node waited to apply the first one's."""
        async with self._appending_pulled:
            await self._log_digests_now()  # the marks follow the log: what another pull just appended is in them
            held: set[int] = set().union(*self._log_marks.values())
            found: list[tuple[Any, MemoryItem]] = []
            known = 0
            for frame in _unique(frames):
                if frame_mark(frame) in held:
                    known += 1
                    continue
                try:
                    found.append((frame, item_from_wire(codec.decode(frame, self.limits))))
                except CodecError as exc:
                    self.found_problem("memory_frames_refused", f"pulled memory frame refused: {exc}")
            if known:
                self.counters["memory_pulled_frames_held"] += known
            if not found:
                return 0
            fresh = await self._newer(found)
            if await self._append(fresh) is None:
                return 0
        return len(fresh)

    def _pulling(self, peer_id: str) -> bool:
        lock = self._pull_locks.get(peer_id)
        return lock is not None and lock.locked()

    def _back_from_away(self) -> None:
        """This node was away (others held it suspect or dead, or its loop stood still), and entries pushed
        meanwhile may have been dropped on the way (a full queue to it) with no later push to show the gap.
        Catch up now with each active worker in turn, not at the next round, which may be
        ``sync_interval_seconds`` away. Not with the first alone: that one may lack entries too, and the rounds
        that come every second for a while (``_missed_until``) compare the digests peers last published, which
        may be older than the writes."""
        super()._back_from_away()
        self._catch_up_with_all("memory_catch_ups_after_away")

    def _writer_gone(self, peer_id: str) -> None:
        """``peer_id``, which pushed entries here, is dead or has left. A last push of its that this node lost (its
        queue here full, the stream broken) shows no gap here, as no later push comes; the workers it reached
        hold it (a client's write returns once one has applied it). Catch up with each of them now, not at the
        next round, which may be ``sync_interval_seconds`` away (a killed master_slave primary's last writes)."""
        self._catch_up_with_all("memory_catch_ups_after_writer_gone")

    def _catch_up_with_all(self, counter: str) -> None:
        """Catch up with each active worker that answers promptly, in turn (``_catch_up_with_each``), at once and
        soon again by rounds (``_missed_until``); not while a pull is under way, and at most every
        ``GAP_REPAIR_SECONDS``. Counted under ``counter``."""
        if not self._worker or self._closed:
            return
        now = time.monotonic()
        self._missed_until = now + MISSED_REPAIR_SECONDS
        peers = [info.node_id for info in self.live_peers(workers_only=True)
                 if self.status_of(info.node_id) is NodeStatus.ACTIVE and not self._slow_to_answer(info.node_id, now)]
        if not peers or any(self._pulling(p) for p in peers) \
                or now - self._caught_up_all_at < GAP_REPAIR_SECONDS:
            return
        self._caught_up_all_at = now
        self.counters[counter] += 1
        self.spawn(self._catch_up_with_each(peers), "memory-catch-up")

    def _primary_taken(self) -> None:
        """This node took the memory primary role: it catches up with every active worker at once. Its predecessor
        acknowledged a write once a worker held it, not this one perhaps (it was paused, or its push was lost
        when the predecessor died), and the writes it orders from now on should follow those, not wait for
        the next anti-entropy round to meet them."""
        super()._primary_taken()
        if not self._worker or self._closed:
            return
        peers = [info.node_id for info in self.live_peers(workers_only=True)
                 if self.status_of(info.node_id) is NodeStatus.ACTIVE and not self._pulling(info.node_id)]
        for peer_id in peers:
            self.spawn(self._catch_up(peer_id), "memory-catch-up")
        self.counters["memory_catch_ups_as_primary"] += len(peers)

    def _gap_seen(self, peer_id: str) -> None:
        """A gap in ``peer_id``'s pushes: the next rounds come soon, and a catch-up with it starts now (at most every
        ``GAP_REPAIR_SECONDS``, and not while one is pulling from it)."""
        super()._gap_seen(peer_id)
        now = time.monotonic()
        if not self._worker or self._closed or self.status_of(peer_id) not in LIVE or self._pulling(peer_id) \
                or now - self._gap_repaired_at.get(peer_id, -GAP_REPAIR_SECONDS) < GAP_REPAIR_SECONDS:
            return
        self._gap_repaired_at[peer_id] = now
        self.counters["memory_gap_repairs"] += 1
        self.spawn(self._catch_up(peer_id), "memory-catch-up")

    def _confirm_blocked(self) -> None:
        """Start ``_confirm_held`` for each active peer whose ack a push it missed holds back (one at a time per peer,
        at most every ``CONFIRM_SECONDS``). Called as this node pushes and as its acks are read (a writer held back
        by backpressure reads them and pushes nothing meanwhile)."""
        if self._closed:
            return
        now = time.monotonic()
        lapses: list[float] = []  # when the checks whose last push is not acknowledged yet lapse
        for node_id, pushed in self._pushed.items():
            if pushed.confirm_lapsed(now):
                self.counters["memory_push_confirm_lapsed"] += 1
            if pushed.blocked is not None and not pushed.checking and pushed.confirming is None \
                    and now >= pushed.check_after and self.status_of(node_id) is NodeStatus.ACTIVE:
                pushed.checking, pushed.check_after = True, now + CONFIRM_SECONDS
                self.spawn(self._confirm_held(node_id), "memory-confirm")
            elif pushed.blocked is not None and pushed.confirming is not None:
                lapses.append(pushed.confirm_by)
        if lapses:  # looked at again then, with or without a push or an ack to start it (one timer at a time)
            loop = asyncio.get_running_loop()
            due, timer = loop.time() + max(0.0, min(lapses) - now), self._confirm_timer
            if timer is None or timer.when() > due + 0.01:
                if timer is not None:
                    timer.cancel()
                self._confirm_timer = loop.call_at(due, self._confirm_again)

    def _confirm_again(self) -> None:
        self._confirm_timer = None
        self._confirm_blocked()

    async def _confirm_held(self, peer_id: str) -> None:
        """Whether ``peer_id``, which missed pushes from ``blocked`` on (a full queue, a pause, a cut), holds this
        node's own entries since then (each, or a newer one of the key from this node), asked by their keys as a
        client reads. The ones it lacks are pushed to it again (up to ``RESEND_MAX``, in envelopes of a quarter of the
        largest message), or, when it lacks none, the newest; named as held (``seen_by``), they are appended there
        only where its log lacks them, and relayed nowhere. The ack of that push means the peer's node applied what
        its log held then, these included, and so the ack goes past them (``_Pushed.confirm_at``). A push refused on
        the way, a
        check during which a push went missing again, more than ``RESEND_MAX`` entries lacking (a long absence: the
        peer's own catch-up pulls them), a log compacted past ``blocked`` or a range past
        ``CONFIRM_RANGE_MAX`` are left to the next check (every ``CONFIRM_SECONDS`` while the peer lacks some) and to
        anti-entropy; so are master_slave's entries (their fencing epoch is not kept in the log). This is how a writer
        that runs no anti-entropy round (a client) gets a peer repaired, and one that does need not wait for its
        rounds or for equal digests, which steady writes seldom give; the entries of others it relayed are left to
        their writers' accounting."""
        pushed = self._pushed.get(peer_id)
        if pushed is None:
            return
        try:
            start, head, blocks = pushed.blocked, self._accounted, pushed.blocks
            if start is None:
                return
            horizon = await self.store.memory_horizon()
            if (horizon is not None and int(horizon) >= start) or head - start >= CONFIRM_RANGE_MAX:
                self.counters["memory_push_unconfirmable"] += 1
                return
            own = await self._own_entries(start, head)
            lacking = await self._lacking(peer_id, own)
            if lacking is None or pushed.blocks != blocks or self.status_of(peer_id) is not NodeStatus.ACTIVE:
                return  # not answered, or a push missed meanwhile: the next check
            if lacking:
                self.counters["memory_push_unconfirmed"] += 1
                if len(lacking) > RESEND_MAX:
                    self.counters["memory_push_resends_left_to_entropy"] += 1
                    return  # a long absence: the peer's catch-up pulls only what it lacks, once, from any holder
                if self.config.memory_sync.strategy == "master_slave":
                    return  # an entry's fencing epoch is not in the log: anti-entropy brings them
            else:
                self.counters["memory_push_confirmed"] += 1
                if not own:
                    pushed.clear_through(head)
                    return
            # Named as held by both, the peer appends only what its log lacks (``_newer``: an older frame appended
            # again would stand as the key's newest there) and relays nothing; its ack of the last envelope means its
            # node applied what its log then held, these included. So the entries it lacks are pushed again (the
            # writer knows them: no wait for anti-entropy rounds, which a client does not run), or, when it lacks
            # none, the newest one only.
            wire = self.wire
            if wire is None:
                return  # closing
            again = [own[name] for name in lacking] or [max(own.values(), key=lambda found: found[0].hlc)]
            self.counters["memory_push_resent"] += len(lacking)
            for batch in runs_of_bytes(again, lambda found: len(found[1]), wire.max_message_bytes // 4):
                parts = [pb.MemoryEntry(origin_id=item.origin, memory_type=item.memory_type, key=item.key,
                                        frame=frame, seen_by=[self.node_id, peer_id]) for item, frame in batch]
                if not self._send_entries(peer_id, parts, start, head):
                    return  # counted and blocked again: the next check
            pushed.confirm_at(pushed.next_seq - 1, head, blocks)
        finally:
            pushed.checking = False
            if pushed.blocked is not None and not self._closed:  # checked again, with or without a push to start it
                asyncio.get_running_loop().call_later(CONFIRM_SECONDS, self._confirm_blocked)

    async def _own_entries(self, start: int, head: int) -> dict[tuple[str, str], tuple[MemoryItem, bytes]]:
        """This node's own newest entry per key among its log's cursors ``start``..``head``."""
        own: dict[tuple[str, str], tuple[MemoryItem, bytes]] = {}
        after = start - 1
        while after < head:
            frames, cursor = await self.store.read_memory(after, min(RECENT_KEPT, head - after))
            for frame in frames:
                try:
                    item = item_from_wire(codec.decode(frame, self.limits))
                except CodecError:
                    continue  # the node's own read of its log refuses and counts it
                name = (item.memory_type, item.key)
                if item.origin == self.node_id and (name not in own or own[name][0].hlc < item.hlc):
                    own[name] = (item, frame)
            if int(cursor or 0) <= after:
                break
            after = int(cursor)
        return own

    async def _lacking(self, peer_id: str, own: dict[tuple[str, str], tuple[MemoryItem, bytes]]
                       ) -> list[tuple[str, str]] | None:
        """The keys of ``own`` whose entry (or a newer one from this node) ``peer_id``'s log does not hold; None when
        it did not answer."""
        if not own:
            return []
        (answer,) = await self._ask_keys([peer_id], [(mt, key, False) for mt, key in own])
        if answer is None:
            return None
        lacking = []
        for name, (item, frame) in own.items():
            held = answer.get(name, ())
            if frame in held:
                continue
            newest = -1
            for other in held:
                try:
                    found = item_from_wire(codec.decode(other, self.limits))
                except CodecError:
                    continue
                if found.origin == item.origin:
                    newest = max(newest, found.hlc)
            if newest < item.hlc:
                lacking.append(name)
        return lacking

    async def _log_digests_now(self) -> dict[int, str]:
        """Per bucket, a digest (``digest.BucketDigests``) of this log's newest entry per key and origin, each line
        ``(memory_type, key, origin, frame_mark)``. They follow the log: only the keys appended to since the last
        computation are read again (``_stale_keys``), their old lines taken out and the new ones added, so a
        computation costs what changed, not the log. The marks are kept per bucket on the way (``_log_marks``: what a
        Pull's ``have`` names, and what a served Pull checks before reading a bucket). One computation at a time: a
        caller meanwhile waits for it, not answering with the digests of before."""
        async with self._digesting:
            return await self._log_digests_locked()

    async def _log_digests_locked(self) -> dict[int, str]:
        stale = self._stale_keys
        if stale is not None and not stale:
            return self._log_sums.as_dict()
        self._stale_keys = set()

        def read(conn: Any) -> list[Any]:
            if stale is None:
                return conn.execute("SELECT memory_type, key, origin, frame FROM memory_latest").fetchall()
            rows = []
            for memory_type, chunk in key_chunks(stale):
                rows += conn.execute("SELECT memory_type, key, origin, frame FROM memory_latest WHERE memory_type=?"
                                     f" AND key IN ({','.join('?' * len(chunk))})", (memory_type, *chunk))
            return rows
        rows = await self.store._read(read)
        if stale is None:
            self._log_sums, self._log_marks, self._log_entries = BucketDigests(kept=0), {}, {}
        sums, marks, entries = self._log_sums, self._log_marks, self._log_entries
        gone: list[Line] = []
        for memory_type, key in stale or ():
            for origin, mark in entries.pop((memory_type, key), {}).items():
                gone.append((memory_type, key, origin, mark))
                marks[bucket_of(memory_type, key)].discard(mark)
        sums.remove(gone)
        came: list[Line] = []
        for memory_type, key, origin, frame in rows:
            mark = frame_mark(frame if isinstance(frame, bytes) else str(frame).encode())
            entries.setdefault((memory_type, key), {})[origin] = mark
            marks.setdefault(bucket_of(memory_type, key), set()).add(mark)
            came.append((memory_type, key, origin, mark))
        sums.add(came)
        return sums.as_dict()

    async def _call_digest(self, peer_id: str, digests: dict[int, str], *, log: bool) -> pb.DigestReply | None:
        address, wire = self.address_of(peer_id), self.wire
        if not address or wire is None:
            return None
        try:
            reply: pb.DigestReply = await wire.stub(address).Digest(
                pb.DigestRequest(caller=wire.hello(), digests=digests, log=log), timeout=PEER_CALL_SECONDS,
                metadata=wire.metadata())
            return reply
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            peer_call_failed(self.counters, "Digest", address, exc)
            return None

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
        have, left = set(request.have), request.page_bytes or None
        if have:
            await self._log_digests_now()
        for bucket in buckets:
            if have and self._log_marks.get(bucket, set()) <= have:
                continue  # the caller holds all of it: not read at all
            frames = await self.store.memory_bucket(bucket)
            if have:  # the caller holds these already
                frames = [f for f in frames if frame_mark(f) not in have]
            if left is not None:
                taken = 0
                while taken < len(frames) and left > 0:
                    left -= len(frames[taken])
                    taken += 1
                if taken < len(frames) or (left <= 0 and bucket != buckets[-1]):
                    chunks += _chunks(frames[:taken], bucket)
                    if chunks:
                        chunks[-1].more = True
                    break
            chunks += _chunks(frames, bucket)
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

