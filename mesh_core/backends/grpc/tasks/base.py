"""What every part of ``grpc_mesh`` tasks shares: this node's task state (all of it made in
``TasksBase.__init__``), the send side of the Tasks stream (envelopes posted per event-loop pass, answers
expected from one peer), and task frames.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from .... import codec
from ....model import Attempt, NodeRole, Task
from ...contracts import Finished
from ...shared import TASK_FIELDS, CorruptRecord
from .._generated import mesh_pb2 as pb
from ..core import GrpcCore
from ..wire import Peer
from .records import FEED_KEPT, _envelope, _Offer, _Sent, task_fields

MAX_LEASE = 86400.0  # a lease asked for in a renewal is cut to this; not a number or not positive: the owner's


class TasksBase(GrpcCore):
    """This node's task state, for every part (each attribute is made and commented in ``__init__``, the one
    place that lists it), and what every part uses to talk: ``_send_to`` and ``_post`` an envelope, ``_expect``
    an answer from one peer, ``_resolve`` it when it comes, ``_wait_all`` for several; the lease an owner
    grants; a task's frame (``_task_frame``, ``_task_of``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox: dict[tuple[str, int], _Offer] = {}
        self._held: dict[str, tuple[str, int]] = {}  # remote-owned attempts this node runs: task id → (owner, attempt)
        self._cancels: set[tuple[str, int]] = set()
        self._finished_attempts: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._unaccepted: dict[tuple[str, int], _Sent] = {}
        self._waiting: dict[tuple[str, Any], asyncio.Future[Any]] = {}
        self._waiting_on: dict[tuple[str, Any], str] = {}  # the peer each answer is expected from
        self._requests = itertools.count(1)
        self._arrivals = itertools.count()
        self._feed: deque[tuple[int, Finished]] = deque(maxlen=FEED_KEPT)
        self._feed_seq = 0
        self._backup_of: dict[str, str] = {}
        self._revision = time.time_ns()
        self._inbound: dict[str, asyncio.Queue[pb.TaskMessage]] = {}
        # where a peer that wrote to this node said it listens: a reply goes there while SWIM has not told this
        # node of it yet (a client that just joined through another seed submits before gossip reaches here)
        self._heard_at: dict[str, str] = {}
        # attempts whose outcome this node is recording now (``complete`` under way): still held, so a lease
        # renewal that overtakes the recording does not call them lost (the worker would cancel the recording,
        # and with it the backup copy and the push of the result to the submitter)
        self._adopted_from: set[str] = set()
        self._submitted: dict[str, tuple[str, bytes]] = {}  # client: unfinished submissions → (owner, task frame)
        self._answering: dict[str, tuple[int, str]] = {}  # client: task → (request id, owner) of its submission asked
        # client: of those, the ones whose outcome came before the owner's answer (the backup forwards an outcome as
        # soon as it holds it, which can be sooner): that answer must not make them unfinished again, or they would
        # stay in ``_submitted`` for ever and be handed on (run again) when their owner goes
        self._ended_unanswered: set[str] = set()
        # client: request id of each submission asked → when its answer is late (monotonic; ``_expire_submissions``)
        self._submit_deadlines: dict[int, float] = {}
        # client: task → the owner it was handed away from; kept after the task ended (the old owner's late outcome
        # is refused then too: a task handed on ends once for its submitter), the oldest forgotten past FEED_KEPT
        self._rehomed: OrderedDict[str, str] = OrderedDict()
        self._renewals: OrderedDict[int, dict[str, int]] = OrderedDict()  # renewal asked → the attempts it named
        self._renewals_to: dict[int, str] = {}  # renewal asked → the owner asked
        self._copies_held = 0  # copies of other owners' tasks in grpc_backups, as of the last change
        # owner → the tasks this node took over from it, until the owner, back, says it let them go (``released``)
        self._taken_from: dict[str, dict[str, None]] = {}
        self._superseded_told: dict[str, float] = {}  # owner → when it was last told of them (monotonic)
        self._own_depth = 0  # tasks assigned to or running on this node in its own store, as of its last heartbeat
        self._rebackup_due = False
        self._recording: set[tuple[str, int]] = set()  # attempts whose outcome or move is being recorded now
        self._unbacked_final: OrderedDict[str, None] = OrderedDict()  # ended here, no backup holds the outcome yet
        self._deferred: dict[str, tuple[str, int]] = {}  # dead owner not taken over yet → (name, copies' rev)
        self._asking_majority = False  # a check that this node reaches a majority before a takeover is under way
        self._deferral_warned: set[str] = set()  # deferred owners whose deferral was logged and counted
        # Unfinished tasks this node owns, as its store holds them, from their enqueue through their first attempt
        # (claimed here or accepted by a worker): their outcome's copy and push are built from this and the
        # completion, with no read of the store. Anything else that moves a task (a move, cancel, replay, takeover,
        # drop) forgets it here, and its outcome is read back from the store as before.
        self._owned: dict[str, Task] = {}
        # Of those, the ones decoded from a client's submission (records no other code holds): a claim here takes
        # them as they are instead of decoding their rows again (a local submitter's record holds its caller's
        # payload object, which a handler must not share: those are read back). The oldest forgotten past
        # OWNED_KEPT (one never claimed here: moved, offered to another worker).
        self._claimable: OrderedDict[str, None] = OrderedDict()
        self._early_copies = 0  # clients' copies waiting for this node to hold their owner gone too
        # clients' submissions this node runs itself, waiting for their first copy: the outcome's when the task
        # ends soon enough (``TasksOwner._first_copies``); resolved once the backup answered for it
        self._first_copy: dict[str, asyncio.Future[None]] = {}
        # Envelope parts posted to a peer during this event-loop pass (``_post``): sent as one envelope at its end,
        # so concurrent submissions and copies travel together (one protobuf message, one queue entry per peer).
        self._posts: dict[str, dict[str, list[Any]]] = {}
        self._posts_due = False
        self._provisional_seen: dict[tuple[str, str, int], float] = {}  # provisional copy → first seen by prune

    async def _count_copies(self) -> None:
        rows = await self.store._read(lambda c: c.execute("SELECT COUNT(*) FROM grpc_backups").fetchall())
        self._copies_held = int(rows[0][0])

    def _is_worker(self, node_id: str) -> bool:
        info = self.member_info(node_id)
        return info is not None and info.role is NodeRole.WORKER

    @property
    def _client_role(self) -> bool:
        swim_node = getattr(self, "swim", None)
        return swim_node is not None and swim_node.me.info.role is not NodeRole.WORKER

    def _send_to(self, node_id: str, envelope: pb.TaskMessage) -> bool:
        if node_id in self._posts:  # what was posted to this peer goes first: the peer sees this node's order
            self._send_now(node_id, _envelope(self._posts.pop(node_id)))
        return self._send_now(node_id, envelope)

    def _send_now(self, node_id: str, envelope: pb.TaskMessage) -> bool:
        address = self.address_of(node_id) or self._heard_at.get(node_id)
        if not address:
            return False
        return bool(self.wire.send(address, "tasks", envelope))  # type: ignore[attr-defined]

    def _post(self, node_id: str, field: str, items: Iterable[Any]) -> None:
        """Add ``items`` to the ``field`` of the envelope this node sends ``node_id`` at the end of this event-loop
        pass (a lost one is recovered as a lost message is: by the caller's timeout and resend)."""
        parts = self._posts.get(node_id)
        if parts is None:
            parts = self._posts[node_id] = {}
            if not self._posts_due:
                self._posts_due = True
                asyncio.get_running_loop().call_soon(self._flush_posts)
        parts.setdefault(field, []).extend(items)

    def _flush_posts(self) -> None:
        self._posts_due = False
        posts, self._posts = self._posts, {}
        for node_id, parts in posts.items():
            self._send_now(node_id, _envelope(parts))

    def _expect(self, key: tuple[str, Any], peer_id: str) -> asyncio.Future[Any]:
        """A future for the answer ``key`` that only ``peer_id`` may give."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        self._waiting_on[key] = peer_id
        return future

    def _resolve(self, peer: Peer, key: tuple[str, Any], value: Any) -> None:
        """An answer from ``peer``; one nobody waits for, or from another peer than the one asked, is ignored
        (counted when it came from the wrong peer: a stale or forged answer never settles another's request)."""
        expected = self._waiting_on.get(key)
        if expected is None:
            return
        if expected != peer.node_id:
            self.refuse("tasks_refused", peer.node_id, f"grpc tasks: {peer.name or peer.node_id[:12]} answered "
                                                       f"{key[0]} {str(key[1])[:60]} asked of {expected[:12]}")
            return
        self._waiting_on.pop(key, None)
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def _expire_submissions(self, now: float) -> None:
        """Answer None (not stored: "no worker answered") each submission asked past its deadline
        (``TasksSubmit._submit_to``) and not answered yet; forget the deadlines of those answered or given up.
        Run about once a second (``_reoffer_loop``)."""
        for request_id, deadline in list(self._submit_deadlines.items()):
            key = ("submit", request_id)
            future = self._waiting.get(key)
            if future is None or future.done():
                del self._submit_deadlines[request_id]
            elif now >= deadline:
                del self._submit_deadlines[request_id]
                self._waiting.pop(key, None)
                self._waiting_on.pop(key, None)
                future.set_result(None)

    async def _wait_all(self, futures: dict[Any, asyncio.Future[Any]], timeout: float) -> dict[Any, Any]:
        """The answers that came within ``timeout`` (the others are forgotten)."""
        if futures and not all(f.done() for f in futures.values()):
            await asyncio.wait(futures.values(), timeout=timeout)
        out = {}
        gave_up = False
        for key, future in futures.items():
            if future.done() and not future.cancelled():
                out[key] = future.result()
            else:
                future.cancel()
                gave_up = True
        if gave_up:  # answered ones left ``_waiting`` when answered: only these are looked for (rare)
            for key in [k for k, f in self._waiting.items() if f.done()]:
                self._waiting.pop(key, None)
                self._waiting_on.pop(key, None)
        return out

    @property
    def _lease_seconds(self) -> float:
        """A lease an owner grants: renewed by the worker's heartbeats, it lapses about when the worker would be
        declared dead."""
        return max(1.0, self.config.node_timeout_seconds)

    def _asked_lease(self, seconds: float) -> float:
        """A lease length a peer asks for, kept within reason (not a number, or not positive: the owner's own)."""
        if not math.isfinite(seconds) or seconds <= 0:
            return self._lease_seconds
        return min(seconds, MAX_LEASE)

    def _task_frame(self, task: Task) -> bytes:
        return codec.encode(task_fields(task, self.limits), self.limits)

    def _task_of(self, frame: bytes) -> Task:
        fields = codec.decode(frame, self.limits)
        if not isinstance(fields, dict):
            raise CorruptRecord("a task record that is not a map")
        task = self.store.task_from_fields({f: fields.get(f) for f in TASK_FIELDS})
        attempts = fields.get("attempts") or []
        try:
            task.attempts = [Attempt(int(a[0]), str(a[1] or ""), str(a[2] or ""), a[3], a[4], a[5])
                             for a in attempts]
        except (TypeError, ValueError, IndexError) as exc:
            raise CorruptRecord(f"task {task.task_id!r}: attempts unreadable: {exc}") from None
        return task
