"""What the parts of ``grpc_mesh`` memory share: the limits, the records of pushes and claims, this node's state,
and appending to this node's log (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from .... import codec
from ....coalesce import Coalescer
from ....errors import CodecError
from ....memory.digest import BucketDigests
from ....memory.store import item_from_wire
from ....model import MemoryItem
from ...shared import runs_of_bytes
from .._generated import mesh_pb2 as pb
from ..core import GrpcCore, log
from ..wire import Peer, Wire, closed_under_call

T = TypeVar("T")

PRIMARY_LEASE = "memory-primary"  # the lease name node/primary.py holds
IN_FLIGHT_LIMIT = 1024  # pushes to one peer awaiting its ack; past it the peer catches up by anti-entropy
INBOX_LIMIT = 4096  # received envelopes waiting to be appended; past it they are dropped (and reported lost)
INBOX_BATCH = 256  # received envelopes taken into the log in one append at most
INBOX_BYTES = 64 * 1024 * 1024  # … and at most this many bytes of them (an envelope may be max_message_bytes)
SENDERS_KEPT = 4096  # peers whose pushes are tracked for acks at once; a further sender's pushes are dropped
MAX_EPOCH = 2 ** 63  # a primary epoch at or past this is refused (the next one must still fit the wire)
MAX_CLAIM_SECONDS = 3600.0  # a primary claim's lease longer than this (or not a number, or not positive) is refused
PULL_KEYS = 10_000  # keys one Pull may name
READ_REPLICAS = 2  # workers a client's read of keys asks first (the others when their answers differ)
READ_HEDGE_SECONDS = 0.2  # … and the others at once too when those have not both answered by then
# A peer that has owed this node an answer this long (a push not acknowledged, a key read not answered) while others
# answer is stalled (paused, overloaded, cut off, not yet declared so): a client's write does not wait for its ack
# once another worker holds the write, and a client's read asks it last and does not wait for it.
PEER_STALLED_SECONDS = 1.0
RELAYED_KEPT = 16_384  # peer_to_peer: entries remembered as relayed here (one relayed again later: hops bound it)
MISSED_REPAIR_SECONDS = 5.0  # entries missing from a peer's pushes keep anti-entropy rounds frequent this long
REFUSED_KEPT = 256  # refusals per sender waiting for the next ack (further ones are counted only)
PEER_CALL_SECONDS = 2.0  # one Digest or Pull call to one peer
PULL_BUCKETS_SECONDS = 5.0  # one Pull of buckets (all that differed with the peer: up to its whole replica)
PULL_CHUNK_BYTES = 1024 * 1024  # frames per PullChunk, about
# A pull of buckets names the frames the puller holds of them (``have``: 8 bytes each), so only what it lacks moves;
# the answer comes in pages of about PULL_PAGE_BYTES, asked back to back until the peer has nothing more to give
# (at most PULL_PAGES in one go: what is left waits for the next round, which comes at once: ``_missed_until``).
PULL_PAGE_BYTES = 4 * 1024 * 1024
PULL_PAGES = 64
PULL_HAVE_MAX = 200_000  # marks one Pull names at most (1.6 MB); buckets holding more are pulled in several calls
GAP_REPAIR_SECONDS = 1.0  # a gap in a peer's pushes brings a catch-up with it at once, at most this often per peer
# A peer that missed pushes is checked for holding this node's entries since (``_confirm_held``) at most this often,
# over at most CONFIRM_RANGE_MAX cursors of this node's log (a longer absence is left to anti-entropy's digests).
CONFIRM_SECONDS = 1.0
# … and the push that ends a check waits this long for the peer's ack: one lost on the way (and no later push, whose
# ack would do) voids the check, and the next one starts, instead of the peer staying counted behind until this node
# writes again (for good, were that write held back for it by backpressure).
CONFIRM_WAIT_SECONDS = 3.0
CONFIRM_RANGE_MAX = 50_000
# … and pushes again the entries it lacks when they are this many at most: a few pushes lost to a full queue under
# load. More come of a pause or a cut, after which the peer's catch-up pulls them, each once, from any holder.
RESEND_MAX = 512
CLIENT_PULL_FRESH_SECONDS = 2.0  # a client's pull of every bucket serves its bootstrap's 64 bucket reads
OWN_ACK_STORED_SECONDS = 0.5  # this node's own ack is written to its private store at most this often
CLIENT_WRITE_WAIT_SECONDS = 5.0  # a client's write waits this long for every worker it pushed to to apply it
RECENT_KEPT = 4096  # entries this node appended lately, kept for its node's next log read (no read of the store)
RECENT_BYTES = 16 * 1024 * 1024  # … and at most this many bytes of them


@dataclass
class _Pushed:
    """What this node pushed to one peer that the peer has not acknowledged applying."""

    next_seq: int = 1
    in_flight: deque[tuple[int, int, int]] = field(default_factory=deque)  # (last seq, first cursor, last cursor)
    blocked: int | None = None  # lowest local cursor of an entry the peer never got
    blocks: int = 0  # how many times an entry was found not got (``block``): a check older than the last one is void
    checking: bool = False  # a check that the peer holds them since is under way (``_confirm_held``) …
    check_after: float = 0.0  # … and the next one starts no sooner than this (monotonic)
    confirming: tuple[int, int, int] | None = None  # (seq, cursor, blocks): that seq's ack clears up to cursor
    confirm_by: float = 0.0  # … when it comes before this (monotonic); else the check is void (``confirm_lapsed``)
    owed_since: float | None = None  # monotonic time since when the peer owes an ack of pushes (None: owes none)

    def owe(self, now: float) -> None:
        """Pushes were sent that the peer has to acknowledge."""
        if self.owed_since is None:
            self.owed_since = now

    def answered(self, now: float) -> None:
        """The peer acknowledged pushes: what it still owes is owed from now on."""
        self.owed_since = now if self.in_flight else None

    def stalled(self, now: float) -> bool:
        """It has owed an ack for longer than ``PEER_STALLED_SECONDS``."""
        return self.owed_since is not None and now - self.owed_since > PEER_STALLED_SECONDS

    def block(self, cursor: int) -> None:
        self.blocked = cursor if self.blocked is None else min(self.blocked, cursor)
        self.blocks += 1

    def confirm_at(self, seq: int, cursor: int, blocks: int) -> None:
        """The peer was found holding what this node pushed it up to ``cursor`` (when ``blocks`` entries had been
        found not got), and the entry of ``seq`` is pushed after that: its ack says the peer's node applied them."""
        self.confirming = (seq, cursor, blocks)
        self.confirm_by = time.monotonic() + CONFIRM_WAIT_SECONDS

    def confirm_lapsed(self, now: float) -> bool:
        """The push that ended the check was not acknowledged by ``confirm_by``: lost on the way, with no later push
        to bring an ack past it. The check is void (True), and the next one may start."""
        if self.confirming is None or now < self.confirm_by:
            return False
        self.confirming = None
        return True

    def acked_through(self, seq: int) -> None:
        """The peer's node applied every push up to ``seq`` (refusals were ``block``-ed first)."""
        while self.in_flight and self.in_flight[0][0] <= seq:
            self.in_flight.popleft()
        self.answered(time.monotonic())
        if self.confirming is not None and self.confirming[0] <= seq:
            _, cursor, blocks = self.confirming
            self.confirming = None
            if blocks == self.blocks:  # nothing found not got since the check: it still holds
                self.clear_through(cursor)

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
        if not self.in_flight:
            self.owed_since = None


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


class MemoryState(GrpcCore):
    """This node's memory state (set in ``GrpcMemory.__init__``) and its log's appends, for every part."""

    wire: Wire | None  # set by the membership part when it opens
    _worker: bool
    _pushed: dict[str, _Pushed]
    _confirm_timer: asyncio.TimerHandle | None
    _from_peers: dict[str, _Received]
    _accounted: int
    _own_ack: int
    _own_ack_stored: int
    _own_ack_stored_at: float
    _own_written: int
    _memory_inbox: asyncio.Queue[tuple[Peer, list[pb.MemoryEntry], int]]
    _inbox_bytes: int
    _digests: dict[int, str] | None
    _digests_cursor: int
    _differs: dict[str, set[int]]
    _log_sums: BucketDigests
    _log_marks: dict[int, set[int]]
    _log_entries: dict[tuple[str, str], dict[str, int]]
    _digesting: asyncio.Lock
    _stale_keys: set[tuple[str, str]] | None
    _client_pulled_at: float
    _claim: _Claim
    _missed_until: float
    _pull_locks: dict[str, asyncio.Lock]
    _appending_pulled: asyncio.Lock
    _catching_up: asyncio.Lock
    _catch_ups_due: dict[str, int]  # peer → catch-ups and pull-backs queued or under way that will pull from it
    _gap_repaired_at: dict[str, float]
    _caught_up_all_at: float  # monotonic time of the last catch-up with every active worker (``_catch_up_with_all``)
    _ack_heard: asyncio.Event
    _relayed_marks: set[int]
    _relayed_order: deque[int]
    _key_pulls: Coalescer[tuple[str | None, str, bool], list[bytes]]
    _read_missed: dict[str, float]  # peer → monotonic time a key read asked of it went unanswered or was cut short
    _recent: dict[int, bytes]
    _recent_bytes: int
    _recent_head: int

    def _slow_to_answer(self, peer_id: str, now: float) -> bool:
        """Whether ``peer_id`` has owed this node an ack of pushes for ``PEER_STALLED_SECONDS``, or left a key read
        unanswered within that time: paused, overloaded or cut off, not yet declared so."""
        pushed = self._pushed.get(peer_id)
        return (pushed is not None and pushed.stalled(now)) \
            or now - self._read_missed.get(peer_id, -PEER_STALLED_SECONDS) < PEER_STALLED_SECONDS

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
        for frames, cursor in zip(by_origin.values(), cursors, strict=True):
            self._stale(frames)
            self._remember(cursor, frames)
        return max(int(c or 0) for c in cursors)

    def _remember(self, cursor: Any, entries: Sequence[tuple[str, str, bytes]]) -> None:
        """Keep what one append stored (the cursors up to ``cursor``: one publish is contiguous in the log) for
        this node's next ``read_memory``, which then needs no read of the store; the oldest go past the bounds.
        A frame the store's read would quarantine (``frame_checked``) is not kept: that read gets it."""
        if cursor is None or not entries:
            return
        first = int(cursor) - len(entries) + 1
        for i, (_, _, frame) in enumerate(entries):
            try:
                codec.verify(frame, self.limits)
            except CodecError:
                continue
            old = self._recent.pop(first + i, None)
            self._recent_bytes += len(frame) - (len(old) if old is not None else 0)
            self._recent[first + i] = frame
        self._recent_head = max(self._recent_head, int(cursor))
        while self._recent and (len(self._recent) > RECENT_KEPT or self._recent_bytes > RECENT_BYTES):
            self._recent_bytes -= len(self._recent.pop(next(iter(self._recent))))

    async def _read_recent(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        """``read_memory``: the entries after ``after`` from those kept by ``_remember`` while they run on without
        a gap, the rest (a gap, or nothing kept) from the store."""
        seq = int(after or 0)
        frames: list[bytes] = []
        while len(frames) < limit and (frame := self._recent.get(seq + 1)) is not None:
            frames.append(frame)
            seq += 1
        if len(frames) < limit and (not frames or seq < self._recent_head):
            more, seq = await self.store.read_memory(seq, limit - len(frames))
            frames += more
        return frames, seq

    def _stale(self, entries: Iterable[tuple[str, str, bytes]]) -> None:
        if self._stale_keys is not None:
            self._stale_keys.update((mt, key) for mt, key, _ in entries)


def _unique(frames: Iterable[bytes]) -> list[bytes]:
    return list(dict.fromkeys(frames))


def frame_mark(frame: bytes) -> int:
    """What a Pull's ``have`` names a frame by: the first 8 bytes of its SHA-1, as a big-endian number."""
    return int.from_bytes(hashlib.sha1(frame).digest()[:8], "big")


def _chunks(frames: list[bytes], bucket: int | None) -> list[pb.PullChunk]:
    return [pb.PullChunk(bucket=bucket, frames=run) for run in runs_of_bytes(frames, len, PULL_CHUNK_BYTES)]


def peer_call_failed(counters: Any, method: str, address: str, exc: grpc.aio.AioRpcError | asyncio.CancelledError
                     ) -> None:
    """A memory call to a peer that failed: an RPC error, or cancelled because the peer was declared dead mid-call
    (counted and logged); any other cancellation is this node's own and is raised again."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        if not closed_under_call():
            raise exc
    else:
        log.debug("grpc memory: %s to %s failed: %s %s", method, address, exc.code(), exc.details())
    counters["memory_peer_calls_failed"] += 1
