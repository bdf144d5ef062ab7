"""``grpc_mesh`` tasks: every task has an owner, which keeps it in its own store and answers for it.

**Owner.** The worker node that accepts a submission owns the task: it stores it in its private SQLite
file (a restarted owner still knows its tasks) and copies it to one backup peer (the next live worker
after it by node id) before the submission is acknowledged. A worker's own submissions are its own; a
client owns nothing: it hands each routed task to the worker it routed it to (``Submission``), which owns
it and usually runs it itself, so that path costs no offer at all. The owner applies every fenced move on
its own store (the same statements as ``sqlite_local``), and its sweeper sweeps only what it owns (every
node sweeps: ``sweeps_own_tasks``). A client's submission is copied while the owner stores it (the two writes
overlap): that copy is provisional, kept apart by the backup and never taken over, until the owner confirms it
(it stored the task) or drops it (it answered ``EXISTS`` or ``FULL``), both posted as soon as its own write is
done, so the confirmation is queued to the backup no later than the submitter's answer (which also waits for
the backup's acks of the provisional copies): a one-shot client that exits at once leaves its task with two
holders unless the owner dies between those two writes and never comes back.

**Worker.** A task routed to another worker is offered to it over the Tasks stream (``TaskOffer``, the
task with its attempt number, held back by any retry delay). The worker keeps offers in a bounded inbox
(a full one refuses, and the owner puts the task back on its pending list for the sweeper to route
again); ``claim`` takes due offers by priority and accepts them (``TaskAccept``), which starts the lease at
the owner. Leases are renewed with the worker's heartbeats (``LeaseRenewal``: the answer names the tasks
still held; any other was taken away). The result goes back to the owner with the attempt number as
fencing token; the owner records it only while that attempt holds the task (exactly once) and says so
(``ResultAck``). An offer not accepted within a few seconds is offered again (a lost message is not a lost
task).

**Results.** How each task ended reaches its submitter when that is another node (``FinishedTask``): a
client's ``finished_for`` reads those. The outcome counts once the backup holds its copy, and that copy
carries the submitter's entry: the backup forwards it as soon as it has stored it (naming the owner), so the
submitter hears only of outcomes two nodes hold, one hop sooner than from the owner after the ack. The owner
tells the submitter itself when the backup could not; when no backup answered, it asks the submitter to
acknowledge, and that acknowledgement is the second copy. A worker's own submissions end in its own store's
feed. An owner keeps its unfinished tasks in memory as stored through their first attempt, so an outcome's
copy is built from that and the completion with no read of the store (anything else that moves a task drops
it from memory, and its outcome is read back).

**Takeover.** When SWIM declares an owner dead (or it leaves), each node that holds copies of its tasks
adopts them: unfinished ones come in on its pending list at their attempt number, and its sweeper routes
them again with a new attempt (so a result of the old attempt is refused); finished ones keep their
outcome, so a waiter asking the mesh is answered by the backup.

**Reads.** ``get_tasks``, ``task_states``, ``list_tasks`` and ``task_counts`` answer from this node's store
and ask every live peer for the rest (``GetTasks`` with ``local_only``), so any node can answer for any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from ... import codec
from ...errors import BackendUnavailable
from ...membership import Change
from ...model import Attempt, NodeRole, NodeStatus, Task, TaskStatus
from ..contracts import Assignment, Completion, Enqueued, Finished, Reassignment, Topic
from ..shared import FINISHED_FIELDS, TASK_FIELDS, CorruptRecord, shortened
from ._generated import mesh_pb2 as pb
from .core import LIVE, GrpcCore, log
from .wire import Peer, closed_under_call

SUBMIT_TIMEOUT = 10.0  # a client waits this long for a worker to store its submission
BACKUP_TIMEOUT = 2.0  # an owner waits this long for its backup's copy before acknowledging anyway (counted)
RESULT_TIMEOUT = 10.0  # a worker waits this long for the owner to record a result
RENEW_TIMEOUT = 2.0  # … and to answer a lease renewal (no answer: the tasks are kept, not abandoned)
READ_TIMEOUT = 3.0  # a peer asked for its tasks answers within this or is left out
READ_LIMIT = 10_000  # tasks one GetTasks lists at most
REOFFER_SECONDS = 2.0  # an offer not accepted this long is offered again
FEED_KEPT = 100_000  # result feed entries a client keeps for its cursors
RENEWALS_KEPT = 1000  # renewals whose answer may still come
DONE_KEPT = 50_000  # attempts a worker remembers having finished (re-offers of them are ignored)
INBOUND_LIMIT = 1024  # envelopes from one peer waiting to be handled; past it they are dropped (counted)
INBOUND_PEERS = 1024  # peers with envelopes waiting at once; a further one's envelopes are dropped (counted)
MAX_DELAY = 7 * 86400.0  # a hold-back (offer, submission, move) longer than this, or not a number, is refused
MAX_LEASE = 86400.0  # a lease asked for in a renewal is cut to this; not a number or not positive: the owner's
OWNED_KEPT = 20_000  # unfinished own tasks kept in memory as stored, so their outcome needs no read of the store
PROVISIONAL_KEPT = 60.0  # a provisional copy neither confirmed nor dropped this long (monotonic s) is dropped
# ``final`` of a copy: 0 the task is unfinished, 1 it ended (succeeded, failed, cancelled), 2 a dead letter;
# -1 not known yet (a copy kept before the column was added: read from its record when retention needs it)
BACKUPS_SQL = """
CREATE TABLE IF NOT EXISTS grpc_backups (
    owner_id TEXT NOT NULL, task_id TEXT NOT NULL, revision INTEGER NOT NULL, record BLOB NOT NULL,
    final INTEGER NOT NULL DEFAULT -1,
    PRIMARY KEY (owner_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grpc_provisional (
    owner_id TEXT NOT NULL, task_id TEXT NOT NULL, revision INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (owner_id, task_id, revision)
) WITHOUT ROWID;
"""
_OUTCOMES = {TaskStatus.SUCCEEDED: pb.TASK_OUTCOME_SUCCEEDED, TaskStatus.FAILED: pb.TASK_OUTCOME_FAILED,
             TaskStatus.CANCELLED: pb.TASK_OUTCOME_CANCELLED}
_STATUSES = {v: k for k, v in _OUTCOMES.items()}
_FINAL = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED}


@dataclass
class _Offer:
    owner_id: str
    owner_addr: str
    task: Task
    due_at: float  # on this process's monotonic clock
    arrival: int


@dataclass
class _Ended:
    """A task that just ended on this owner: its whole record as ``task_fields`` gives it (the result a frame)."""

    task_id: str
    submitter_id: str | None
    fields: dict[str, Any]

    @classmethod
    def of(cls, task: Task, limits: codec.CodecLimits) -> _Ended:
        return cls(task.task_id, task.submitter_id, task_fields(task, limits))

    def entry(self) -> dict[str, Any]:
        """The submitter's result feed entry (``FinishedTask``)."""
        f = self.fields
        return {"task_id": self.task_id, "status": f["status"], "attempt": f["attempt"], "node_id": f["node_id"],
                "node_name": f["node_name"], "finished_at": f["finished_at"], "result": f["result"],
                "error": f["error"]}


@dataclass
class _Copying:
    """Copies sent to backups and not yet answered (``GrpcTasks._send_copies``)."""

    futures: dict[str, asyncio.Future[Any]]  # task id → the backup's answer
    finals: set[str]  # the ids whose copy is an outcome
    sent: dict[str, tuple[str, int]]  # task id → (backup peer, revision)


@dataclass
class _Sent:
    worker_id: str
    offer: pb.TaskOffer
    sent_at: float


def task_fields(task: Task, limits: codec.CodecLimits) -> dict[str, Any]:
    """A task as the plain fields ``shared.task_from_fields`` reads (``TASK_FIELDS``), plus its attempts."""
    return {"task_id": task.task_id, "task_type": task.task_type, "payload": task.encoded_payload(limits),
            "priority": int(task.priority), "status": task.status.value, "node_id": task.node_id,
            "node_name": task.node_name, "attempt": task.attempt, "failures": task.failures,
            "max_retries": task.max_retries, "timeout_s": task.timeout_s,
            "preferred": [p.value for p in task.preferred_node_types],
            "required": sorted(task.required_capabilities), "context": task.context,
            "submitter_id": task.submitter_id, "why": task.why, "submitted_at": task.submitted_at,
            "started_at": task.started_at, "finished_at": task.finished_at, "lease_expires": None,
            "not_before": 0.0,
            "result": codec.encode(task.result, limits) if task.result is not None else None,
            "error": task.error, "signature": task.signature,
            "attempts": [[a.attempt, a.node_id, a.node_name, a.started_at, a.finished_at, a.error]
                         for a in task.attempts]}


_NOBODY = _Sent("", pb.TaskOffer(), 0.0)
_GONE = object()  # the answer to a submission whose target died or left before it answered


def _envelope(parts: dict[str, list[Any]]) -> pb.TaskMessage:
    """One envelope holding every part posted (``GrpcTasks._post``): field name → the items of that field."""
    envelope = pb.TaskMessage()
    for name, items in parts.items():
        getattr(envelope, name).extend(items)
    return envelope


def _final_value(status: TaskStatus) -> int:
    """``final`` of a copy of a task in ``status`` (see ``BACKUPS_SQL``)."""
    if status is TaskStatus.DEAD_LETTER:
        return 2
    return 1 if status in _FINAL else 0


def _final_of(frame: bytes, limits: codec.CodecLimits) -> int:
    """``final`` of a copy kept before the column was: read from its record (unreadable: kept, as unfinished)."""
    try:
        fields = codec.decode(frame, limits)
        return _final_value(TaskStatus(fields["status"])) if isinstance(fields, dict) else 0
    except (codec.CodecError, KeyError, ValueError, TypeError):
        return 0


def _delay_ok(seconds: float) -> bool:
    """A hold-back a peer sends: a number of seconds, at most ``MAX_DELAY`` (negative means none)."""
    return math.isfinite(seconds) and seconds <= MAX_DELAY


def _move_fields(m: Reassignment) -> dict[str, Any]:
    return {"task_id": m.task_id, "expected_attempt": m.expected_attempt, "expected_node": m.expected_node,
            "node_id": m.node_id, "node_name": m.node_name, "why": m.why, "delay": m.delay,
            "bump_attempt": m.bump_attempt, "error": m.error, "count_failure": m.count_failure,
            "final_status": m.final_status.value}


def _move_of(f: Any) -> Reassignment:
    if not isinstance(f, dict):
        raise TypeError("a move that is not a map")
    text = (str, type(None))
    if not (isinstance(f["task_id"], str) and isinstance(f["expected_node"], text) and isinstance(f["node_id"], text)
            and isinstance(f["node_name"], text) and isinstance(f["error"], text) and isinstance(f["why"], str)):
        raise TypeError("a move with a field of the wrong type")
    if not _delay_ok(float(f["delay"])):
        raise ValueError(f"a move with a hold-back of {f['delay']!r} s")
    return Reassignment(f["task_id"], int(f["expected_attempt"]), f["expected_node"], f["node_id"], f["node_name"],
                        f["why"], delay=max(0.0, float(f["delay"])), bump_attempt=bool(f["bump_attempt"]),
                        error=f["error"], count_failure=bool(f["count_failure"]),
                        final_status=TaskStatus(f["final_status"]))


class GrpcTasks(GrpcCore):
    """TaskTransport with an owner per task."""

    blocking_results = False
    sweeps_own_tasks = True

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
        # client: task → the owner it was handed away from; kept after the task ended (the old owner's late outcome
        # is refused then too: a task handed on ends once for its submitter), the oldest forgotten past FEED_KEPT
        self._rehomed: OrderedDict[str, str] = OrderedDict()
        self._renewals: OrderedDict[int, dict[str, int]] = OrderedDict()  # renewal asked → the attempts it named
        self._renewals_to: dict[int, str] = {}  # renewal asked → the owner asked
        self._copies_held = 0  # copies of other owners' tasks in grpc_backups, as of the last change
        self._taken_from: dict[str, list[str]] = {}  # owner → the tasks this node took over from it (told on return)
        self._own_depth = 0  # tasks assigned to or running on this node in its own store, as of its last heartbeat
        self._rebackup_due = False
        self._recording: set[tuple[str, int]] = set()  # attempts whose outcome or move is being recorded now
        self._unbacked_final: OrderedDict[str, None] = OrderedDict()  # ended here, no backup holds the outcome yet
        self._deferred: dict[str, tuple[str, int]] = {}  # dead owner not taken over (minority) → (name, copies' rev)
        # Unfinished tasks this node owns, as its store holds them, from their enqueue through their first attempt
        # (claimed here or accepted by a worker): their outcome's copy and push are built from this and the
        # completion, with no read of the store. Anything else that moves a task (a move, cancel, replay, takeover,
        # drop) forgets it here, and its outcome is read back from the store as before.
        self._owned: dict[str, Task] = {}
        self._early_copies = 0  # clients' copies waiting for this node to hold their owner gone too
        # Envelope parts posted to a peer during this event-loop pass (``_post``): sent as one envelope at its end,
        # so concurrent submissions and copies travel together (one protobuf message, one queue entry per peer).
        self._posts: dict[str, dict[str, list[Any]]] = {}
        self._posts_due = False
        self._provisional_seen: dict[tuple[str, str, int], float] = {}  # provisional copy → first seen by prune

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def _open_parts(self) -> None:
        await super()._open_parts()
        assert self.wire is not None  # type: ignore[attr-defined]
        wire = self.wire  # type: ignore[attr-defined]
        wire.on_stream("tasks", self._on_tasks)
        wire.on_unary("GetTasks", self._serve_get_tasks)
        wire.on_unary("Cancel", self._serve_cancel)
        wire.on_unary("Replay", self._serve_replay)
        def create(conn: sqlite3.Connection) -> None:
            for statement in BACKUPS_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(grpc_backups)")}
            if "final" not in columns:  # a store from before copies were pruned
                conn.execute("ALTER TABLE grpc_backups ADD COLUMN final INTEGER NOT NULL DEFAULT -1")
            conn.execute("CREATE INDEX IF NOT EXISTS grpc_backups_by_revision ON grpc_backups (owner_id, revision)")
        await self.store._write(create)
        await self._count_copies()
        self.on_member_change(self._member_change)
        self.spawn(self._reoffer_loop(), "reoffer")
        await self._offer_unaccepted_after_restart()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["task_copies_held"] = self._copies_held  # what this node would take over if their owners died
        return out

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

    # -- the wire -------------------------------------------------------------------------------------------
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

    def _on_tasks(self, peer: Peer, env: pb.TaskMessage) -> None:
        """Envelopes from one peer are handled in the order they came (an accept before its result)."""
        queue = self._inbound.get(peer.node_id)
        if queue is None:
            if len(self._inbound) >= INBOUND_PEERS:
                self.refuse("tasks_inbound_dropped", peer.node_id,
                            f"grpc tasks: an envelope from {peer.name or '?'} dropped: {INBOUND_PEERS} peers wait")
                return
            if peer.address:
                self._heard_at.pop(peer.node_id, None)
                self._heard_at[peer.node_id] = peer.address
                while len(self._heard_at) > INBOUND_PEERS:  # the oldest first
                    del self._heard_at[next(iter(self._heard_at))]
            queue = self._inbound[peer.node_id] = asyncio.Queue(INBOUND_LIMIT)
            self.spawn(self._drain(peer, queue), f"tasks-from-{peer.name}")
        try:
            queue.put_nowait(env)
        except asyncio.QueueFull:  # the peer's leases, re-offers and resends recover what was dropped
            self.refuse("tasks_inbound_dropped", peer.node_id,
                        f"grpc tasks: an envelope from {peer.name or '?'} dropped: {INBOUND_LIMIT} of its wait already")

    async def _drain(self, peer: Peer, queue: asyncio.Queue[pb.TaskMessage]) -> None:
        try:
            while True:
                try:
                    env = await asyncio.wait_for(queue.get(), 60.0)
                except TimeoutError:
                    if queue.empty():
                        return
                    continue
                try:
                    await self._handle(peer, env)
                except Exception as exc:  # one bad envelope never stops the peer's stream
                    self.refuse("backend_errors", peer.node_id,
                                f"grpc tasks from {peer.name or peer.address}: {shortened(repr(exc))}")
        finally:
            if self._inbound.get(peer.node_id) is queue:
                del self._inbound[peer.node_id]

    async def _handle(self, peer: Peer, env: pb.TaskMessage) -> None:
        if env.offers:
            self._take_offers(peer, env.offers)
        if env.accepts:
            await self._accepted(peer, env.accepts)
        if env.renewals:
            for renewal in env.renewals:
                kept = await self.store.renew(peer.node_id, [(h.task_id, h.attempt) for h in renewal.held],
                                              self._asked_lease(renewal.lease_seconds))
                if len(kept) < len(renewal.held):  # not its attempts (unknown, another attempt or worker)
                    self.counters["tasks_stale_renewals"] += len(renewal.held) - len(kept)
                self._send_to(peer.node_id, pb.TaskMessage(renewed=[pb.LeaseRenewed(
                    request_id=renewal.request_id, task_ids=sorted(kept))]))
        for renewed in env.renewed:
            self._renewal_answered(peer, renewed.request_id, set(renewed.task_ids))
        if env.results:
            # Recording waits for the backup's copy (up to BACKUP_TIMEOUT when the backup just died): off this
            # peer's ordered queue, so the lease renewals behind it are answered before the leases lapse.
            self.spawn(self._record_results(peer, env.results), f"results-from-{peer.name}")
        for ack in env.result_acks:
            self._resolve(peer, ("result", (ack.task_id, ack.attempt)), ack.recorded)
        if env.cancels:
            for cancel in env.cancels:  # only the owner that offered or handed the attempt may stop it
                key = (cancel.task_id, cancel.attempt)
                if self._held.get(cancel.task_id) == (peer.node_id, cancel.attempt):
                    self._cancels.add(key)
                offer = self._inbox.get(key)
                if offer is not None and offer.owner_id == peer.node_id:
                    del self._inbox[key]
            self._deliver(Topic.CANCEL)
        if env.backups:
            await self._keep_backups(peer, env.backups)
        for ack in env.backup_acks:
            self._resolve(peer, ("backup", (ack.task_id, ack.revision)), (not ack.refused, ack.forwarded))
        superseded: list[str] = []
        for handover in env.handovers:  # told by the new owner itself (it names itself or no one)
            held = self._held.get(handover.task_id)
            if handover.owner_id not in ("", peer.node_id):
                self.refuse("tasks_refused", peer.node_id, f"grpc tasks: {peer.name or '?'} handed task "
                                                           f"{handover.task_id[:40]!r} to another node")
            elif handover.previous_owner_id == self.node_id:
                superseded.append(handover.task_id)  # taken over while this node was held dead: not ours now
            elif held is not None and held[0] == handover.previous_owner_id:
                self._held[handover.task_id] = (peer.node_id, held[1])
        if superseded:
            mine = set(await self.store.task_states(superseded))
            if mine:
                await self._drop_owned(mine)
        if env.submits:  # storing waits for the backup's copy too
            self.spawn(self._take_submissions(peer, env.submits), f"submits-from-{peer.name}")
        for result in env.submit_results:
            self._resolve(peer, ("submit", result.request_id), (result.outcome, result.error))
        if env.finished:
            self._take_finished(peer, env.finished)
        for ack in env.finished_acks:
            self._resolve(peer, ("finished", ack.task_id), not ack.refused)
        if env.moves:  # a move that ends a task waits for the backup's copy too
            self.spawn(self._moves_from(peer, env.moves), f"moves-from-{peer.name}")
        for result in env.move_results:
            self._resolve(peer, ("move", result.request_id), result.applied)

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

    # -- submitting -----------------------------------------------------------------------------------------
    async def enqueue(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        if self._client_role:
            return await self._hand_to_workers(assignments)
        return await self._enqueue_owned(assignments)

    async def _enqueue_owned(self, assignments: Sequence[Assignment], *, ahead: bool = False) -> list[Enqueued]:
        """Store tasks this node owns from now on and copy them to the backup before answering.

        With ``ahead`` (a client's submissions: the client keeps each task it is told is stored, and hands it on
        if this node goes, ``_rehome``), the copies go out as provisional while this node stores the tasks, so the
        two writes overlap; then each copy is confirmed (stored here) or dropped (refused here: ``EXISTS`` or
        ``FULL``). A provisional copy is never taken over, so a refused submission never gets a second owner."""
        # the records as the store will hold them (what ``_enqueue_batch`` writes of each), kept before the write:
        # this node's claim loop may take one as soon as it is committed
        routed = [replace(a.task, status=TaskStatus.ASSIGNED if a.node_id else TaskStatus.PENDING,
                          node_id=a.node_id, node_name=a.node_name, why=a.why, attempt=1, failures=0,
                          started_at=None, finished_at=None, lease_expires=None, not_before=0.0, result=None,
                          error=None, attempts=[]) for a in assignments]
        kept = [t for t in routed if len(self._owned) < OWNED_KEPT and self._owned.setdefault(t.task_id, t) is t]
        unbacked: set[str] = set()
        copying = self._send_copies(routed, unbacked, provisional=True) if ahead else None
        try:
            outcomes = await self.store.enqueue(assignments)
        except BaseException:
            self._forget_kept(kept)
            if copying is not None:
                self._settle_provisional(copying, set())
            raise
        stored = [(a, t) for a, t, o in zip(assignments, routed, outcomes, strict=True) if o is Enqueued.STORED]
        self._forget_kept([t for t, o in zip(routed, outcomes, strict=True) if o is not Enqueued.STORED])
        if copying is not None:
            self._settle_provisional(copying, {t.task_id for _, t in stored})
        if stored:
            if copying is not None:
                await self._copied(copying, unbacked)
            else:
                await self._back_up([t for _, t in stored])
            for a, task in stored:
                if a.node_id and a.node_id != self.node_id:
                    self._offer(a.node_id, task, a.delay)
        return outcomes

    def _forget_kept(self, tasks: Iterable[Task]) -> None:
        """Forget these records kept in memory (only these: another record of the same id stays)."""
        for task in tasks:
            if self._owned.get(task.task_id) is task:
                del self._owned[task.task_id]

    async def _hand_to_workers(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        """A client owns nothing: each task goes to the worker it was routed to (the pending list: any worker).

        A target declared dead before it answered may have stored the task and copied it to its backup, or not:
        the submission goes again, to the worker that holds (or would hold) that target's copies (as ``_rehome``
        does), which answers ``EXISTS`` when it took the task over already, else stores and runs it (or answers
        ``FULL``, and the router picks another)."""
        futures: dict[int, asyncio.Future[Any]] = {}
        targets: dict[int, str] = {}
        submissions: dict[int, pb.Submission] = {}
        frames: dict[int, bytes] = {}
        for index, a in enumerate(assignments):
            target = a.node_id or self._any_worker()
            if target is None:
                continue
            # the task as routed: the worker stores it from the submission's fields (as ``enqueue`` does), and
            # this client keeps the same frame to hand on if that worker goes before the task has a copy
            frames[index] = self._task_frame(replace(
                a.task, status=TaskStatus.ASSIGNED if a.node_id else TaskStatus.PENDING, node_id=a.node_id,
                node_name=a.node_name, why=a.why, attempt=1))
            submissions[index] = pb.Submission(
                task=frames[index], node_id=a.node_id or "", node_name=a.node_name or "", why=a.why,
                capacity=a.capacity, delay_seconds=a.delay)
            futures[index] = self._submit_to(target, submissions[index])
            targets[index] = target
        answers = await self._wait_all_or_resubmit(futures, targets, submissions)
        out = []
        for index, a in enumerate(assignments):
            answer = answers.get(index)
            if answer is _GONE:
                raise BackendUnavailable(f"grpc_mesh: the worker asked to store a task ({targets[index][:12]}) went "
                                         "before it answered, and no live worker is left to ask")
            if answer is None:
                raise BackendUnavailable(f"grpc_mesh: no worker answered a submission within {SUBMIT_TIMEOUT:g} s "
                                         f"(asked {targets.get(index, 'none: no live worker')})")
            outcome, error = answer
            if error:
                raise BackendUnavailable(f"grpc_mesh: the worker did not store the task: {error}")
            if outcome == Enqueued.STORED:  # kept until it ends: handed on if its owner goes before it has a copy
                self._submitted[a.task.task_id] = (targets[index], frames[index])
            out.append(Enqueued(outcome))
        return out

    def _submit_to(self, target: str, submission: pb.Submission) -> asyncio.Future[Any]:
        submission.request_id = next(self._requests)
        future = self._expect(("submit", submission.request_id), target)
        self._post(target, "submits", (submission,))  # with the other submissions of this loop pass
        return future

    async def _wait_all_or_resubmit(self, futures: dict[int, asyncio.Future[Any]], targets: dict[int, str],
                                    submissions: dict[int, pb.Submission]) -> dict[int, Any]:
        deadline = time.monotonic() + SUBMIT_TIMEOUT
        while True:
            pending = [f for f in futures.values() if not f.done()]
            remaining = deadline - time.monotonic()
            if pending and remaining > 0:
                # an answer, or ``_GONE`` from ``_member_change`` when the target dies or leaves: no polling
                await asyncio.wait(pending, timeout=remaining)
            if not self._resubmit_gone(futures, targets, submissions):
                break
            deadline = max(deadline, time.monotonic() + SUBMIT_TIMEOUT)
        return await self._wait_all(futures, 0)

    def _resubmit_gone(self, futures: dict[int, asyncio.Future[Any]], targets: dict[int, str],
                       submissions: dict[int, pb.Submission]) -> int:
        """Send again, to the target's successor, each unanswered submission whose target is no live member
        (answered ``_GONE``, or not answered and gone); returns how many were sent again."""
        resent = 0
        for index, future in list(futures.items()):
            target = targets[index]
            if future.done() and (future.cancelled() or future.result() is not _GONE):
                continue
            if not future.done() and self.status_of(target) in LIVE:
                continue
            ids = sorted(n.node_id for n in self.live_peers(workers_only=True))
            if not ids:
                continue
            successor = next((i for i in ids if i > target), ids[0])
            future.cancel()
            self._waiting.pop(("submit", submissions[index].request_id), None)
            self._waiting_on.pop(("submit", submissions[index].request_id), None)
            submission = submissions[index]
            info = self.member_info(successor)
            submission.node_id, submission.node_name = successor, info.name if info else ""
            submission.capacity = info.capacity if info else submission.capacity
            submission.why = f"resubmitted: {target[:12]} went before it answered"
            futures[index], targets[index] = self._submit_to(successor, submission), successor
            self.counters["tasks_resubmitted"] += 1
            resent += 1
        return resent

    def _rehome(self, owner_id: str) -> None:
        """Client: the owner of some of this client's unfinished submissions is gone; hand this client's copies
        to the worker that would hold the owner's backups (the next live one after it by id), which takes them
        over as the backup does (so a task copied to both is taken over once)."""
        orphans = [(task_id, frame) for task_id, (owner, frame) in self._submitted.items() if owner == owner_id]
        ids = sorted(n.node_id for n in self.live_peers(workers_only=True) if n.node_id != owner_id)
        if not orphans or not ids:
            return
        successor = next((i for i in ids if i > owner_id), ids[0])
        subs = []
        for task_id, frame in orphans:
            self._submitted[task_id] = (successor, frame)
            self._rehomed[task_id] = owner_id
            self._rehomed.move_to_end(task_id)
            subs.append(pb.Submission(request_id=next(self._requests), task=frame, adopt=True,
                                      previous_owner_id=owner_id))
        while len(self._rehomed) > FEED_KEPT:
            self._rehomed.popitem(last=False)
        self.counters["tasks_rehomed"] += len(subs)
        self._send_to(successor, pb.TaskMessage(submits=subs))

    def _any_worker(self) -> str | None:
        peers = self.live_peers(workers_only=True)
        if not peers:
            return None
        return min(peers, key=lambda n: (n.running + n.queued) / max(1, n.capacity)).node_id

    async def _take_submissions(self, peer: Peer, submits: Sequence[pb.Submission]) -> None:
        adopted = [s for s in submits if s.adopt]
        early = [s for s in adopted if s.previous_owner_id and s.previous_owner_id != self.node_id
                 and self.status_of(s.previous_owner_id) in LIVE and self._is_worker(s.previous_owner_id)]
        if early and self._early_copies + len(early) <= INBOUND_LIMIT:
            # The client's verdict came first (this node's own, or the gossip of it, is on its way): the copies
            # wait for it here rather than being refused and lost (the client has handed the task on already).
            self.spawn(self._adopt_when_gone(peer, early), f"early-copies-from-{peer.name}")
            submits = [s for s in submits if s not in early]
            adopted = [s for s in adopted if s not in early]
            if not submits:
                return
        premature = [s for s in adopted if not s.previous_owner_id or s.previous_owner_id == self.node_id
                     or self.status_of(s.previous_owner_id) in LIVE]
        if premature:  # copies are taken over only from an owner this node holds dead or gone
            self.refuse("tasks_refused", peer.node_id, f"grpc tasks: {peer.name or '?'} asked this node to take over "
                                                       f"{len(premature)} task(s) of an owner it does not hold gone")
            adopted = [s for s in adopted if s not in premature]
            submits = [s for s in submits if s not in premature]
            if not submits:
                return
        if adopted:
            await self._adopt_copies(peer, adopted)
            submits = [s for s in submits if not s.adopt]
            if not submits:
                return
        assignments, answers = [], []
        for sub in submits:
            try:
                task = self._task_of(sub.task)
                if not _delay_ok(sub.delay_seconds):
                    raise ValueError(f"a hold-back of {sub.delay_seconds} s")
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"a submission from {peer.name}: {shortened(str(exc))}")
                answers.append(pb.SubmissionResult(request_id=sub.request_id, outcome=0, error=shortened(str(exc))))
                continue
            assignments.append((sub.request_id, Assignment(task, sub.node_id or None, sub.node_name or None, sub.why,
                                                           sub.capacity, max(0.0, sub.delay_seconds))))
        if assignments:
            try:
                outcomes = await self._enqueue_owned([a for _, a in assignments], ahead=True)
                answers += [pb.SubmissionResult(request_id=r, outcome=int(o))
                            for (r, _), o in zip(assignments, outcomes, strict=True)]
            except Exception as exc:
                answers += [pb.SubmissionResult(request_id=r, outcome=0, error=str(exc) or type(exc).__name__)
                            for r, _ in assignments]
        self._send_to(peer.node_id, pb.TaskMessage(submit_results=answers))

    # -- backups --------------------------------------------------------------------------------------------
    def _backup_peer(self) -> str | None:
        """The next live worker after this node by id (wrapping round): the one that holds copies of its tasks."""
        ids = sorted(n.node_id for n in self.live_peers(workers_only=True)
                     if self.status_of(n.node_id) is NodeStatus.ACTIVE)
        if not ids:
            return None
        after = [i for i in ids if i > self.node_id]
        return after[0] if after else ids[0]

    async def _back_up(self, tasks: Sequence[Task | _Ended], *, wait: bool = True,
                       unbacked: set[str] | None = None, forwarded: set[str] | None = None) -> set[str]:
        """Copy task records to their backup peer; with ``wait``, until it has stored them (or the timeout).

        Returns the ids the backup refused because it owns them now (it took them over when this node was
        declared dead): those are dropped here, and this node answers for them no more. The ids no backup
        holds (no live peer, or no answer in time) are added to ``unbacked``. An outcome (``_Ended``) whose
        submitter is another node carries the submitter's entry, which the backup forwards once it holds the
        copy: the ids it forwarded are added to ``forwarded``."""
        unbacked = unbacked if unbacked is not None else set()
        copying = self._send_copies(tasks, unbacked, wait=wait)
        if not (wait and copying.futures):
            return set()
        return await self._copied(copying, unbacked, forwarded)

    def _send_copies(self, tasks: Sequence[Task | _Ended], unbacked: set[str], *, wait: bool = True,
                     provisional: bool = False) -> _Copying:
        """Post copies of ``tasks`` to their backup peers (see ``_back_up``); with ``wait``, expect their answers.
        The ids with no backup peer are added to ``unbacked``."""
        futures: dict[str, asyncio.Future[Any]] = {}
        by_peer: dict[str, list[pb.BackupRecord]] = {}
        finals = set()
        sent: dict[str, tuple[str, int]] = {}
        for task in tasks:
            peer = self._backup_of.get(task.task_id)
            if peer is None or self.status_of(peer) not in LIVE:
                peer = self._backup_peer()
                if peer is None:  # the last holder stays noted: it is the one asked again (it may own it now)
                    unbacked.add(task.task_id)
                    continue
                self._backup_of[task.task_id] = peer
            self._revision += 1
            record = pb.BackupRecord(owner_id=self.node_id, task_id=task.task_id, revision=self._revision,
                                     provisional=provisional)
            sent[task.task_id] = (peer, self._revision)
            if isinstance(task, _Ended):
                finals.add(task.task_id)
                record.record = codec.encode(task.fields, self.limits)
                if task.submitter_id and task.submitter_id not in (self.node_id, peer):
                    record.finished = codec.encode(task.entry(), self.limits)
                    record.submitter_id = task.submitter_id
            else:
                if task.status in _FINAL:
                    finals.add(task.task_id)
                record.record = self._task_frame(task)
            by_peer.setdefault(peer, []).append(record)
            if wait:
                futures[task.task_id] = self._expect(("backup", (task.task_id, self._revision)), peer)
        for peer, records in by_peer.items():
            if wait:  # with the other copies of this loop pass: one write there
                self._post(peer, "backups", records)
            else:  # a re-copy (a new backup, a takeover): on its way at once, as the owner may go any moment
                self._send_to(peer, pb.TaskMessage(backups=records))
        return _Copying(futures, finals, sent)

    def _settle_provisional(self, copying: _Copying, stored: set[str]) -> None:
        """Provisional copies, once this node's own write is done: confirmed where it stored the task, dropped
        (and no longer waited for) where it did not."""
        by_peer: dict[str, list[pb.BackupRecord]] = {}
        for task_id, (peer, revision) in copying.sent.items():
            ok = task_id in stored
            record = pb.BackupRecord(owner_id=self.node_id, task_id=task_id, revision=revision, provisional=True,
                                     confirmed=ok, deleted=not ok)
            by_peer.setdefault(peer, []).append(record)  # confirmed or dropped at once
            if not ok:
                self._backup_of.pop(task_id, None)
                key = ("backup", (task_id, revision))
                self._waiting.pop(key, None)
                self._waiting_on.pop(key, None)
                future = copying.futures.pop(task_id, None)
                if future is not None:
                    future.cancel()
        for peer, records in by_peer.items():
            self._post(peer, "backups", records)

    async def _copied(self, copying: _Copying, unbacked: set[str], forwarded: set[str] | None = None) -> set[str]:
        """Wait for the backups' answers to ``copying`` (see ``_back_up``)."""
        futures, finals = copying.futures, copying.finals
        answers = await self._wait_all(futures, BACKUP_TIMEOUT)
        missed = len(futures) - len(answers)
        unbacked.update(task_id for task_id in futures if task_id not in answers)
        if missed:
            self.found_problem("backup_missed", f"{missed} task cop{'y' if missed == 1 else 'ies'} not confirmed "
                                                f"by the backup peer within {BACKUP_TIMEOUT:g} s")
        refused = {task_id for task_id, (stored, _) in answers.items() if not stored}
        for task_id, (stored, sent_on) in answers.items():
            if stored and task_id in finals:  # an outcome the backup holds: nothing more to copy
                self._unbacked_final.pop(task_id, None)
                self._backup_of.pop(task_id, None)
                if sent_on and forwarded is not None:
                    forwarded.add(task_id)
        if refused:
            await self._drop_owned(refused)
        return refused

    async def _drop_owned(self, task_ids: set[str]) -> None:
        """Forget tasks another node has taken over (this node was declared dead meanwhile)."""
        ids = sorted(task_ids)

        def drop(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM attempts WHERE task_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM tasks WHERE task_id IN ({marks})", chunk)
        await self.store._write(drop)
        for task_id in ids:
            self._backup_of.pop(task_id, None)
            self._unbacked_final.pop(task_id, None)
            self._owned.pop(task_id, None)
        self.found_problem("tasks_ownership_lost", f"{len(ids)} task(s) were taken over by another node while this "
                                                   "one was declared dead: dropped here, their results refused")

    async def _keep_backups(self, peer: Peer, records: Sequence[pb.BackupRecord]) -> None:
        """Keep the copies an owner sends of its own tasks; a copy that is not readable, names another task or
        another owner is refused (counted, not stored, not acknowledged: its owner counts it missed)."""
        good = []
        finals: dict[str, int] = {}  # task id → ``final`` of its copy
        for r in records:
            try:
                if r.owner_id not in ("", peer.node_id):
                    raise ValueError(f"a copy of {r.owner_id[:12]!r}'s task sent by another node")
                if r.revision >= 2**63:  # an SQLite integer: a larger one is no revision this mesh gives
                    raise ValueError(f"a copy at revision {r.revision}")
                if r.confirmed or r.deleted:
                    if not r.task_id:
                        raise ValueError("a confirmed or deleted copy without a task id")
                else:
                    task = self._task_of(r.record)
                    if task.task_id != r.task_id:
                        raise ValueError(f"a copy of task {r.task_id[:40]!r} holding task {task.task_id[:40]!r}")
                    finals[r.task_id] = _final_value(task.status)
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"a task copy from {peer.name}: {shortened(str(exc))}")
                continue
            good.append(r)
        records = good
        if not records:
            return
        rows = [(peer.node_id, r.task_id, r.revision, r.record, r.deleted, r.provisional, r.confirmed,
                 finals.get(r.task_id, -1)) for r in records]

        def keep(conn: sqlite3.Connection) -> tuple[set[str], int]:
            """One transaction: a task this node owns now (it took it over) is refused, the rest kept; returns
            the refused ids and how many copies were added (negative: removed). A provisional copy is kept
            apart (``grpc_provisional``) until its owner confirms it (then it is a copy) or drops it."""
            owned: set[str] = set()
            added = 0
            for owner, task_id, revision, record, deleted, provisional, confirmed, final in rows:
                if provisional and deleted:
                    conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?",
                                 (owner, task_id, revision))
                    continue
                if confirmed:
                    row = conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=? "
                                       "RETURNING record", (owner, task_id, revision)).fetchone()
                    if row is None:  # refused when it came, or replaced by a later copy already
                        continue
                    record, final = row[0], 0  # a task just submitted: unfinished
                if conn.execute("SELECT 1 FROM tasks WHERE task_id=?", (task_id,)).fetchone() is not None:
                    owned.add(task_id)
                    continue
                if provisional and not confirmed:
                    conn.execute("INSERT OR REPLACE INTO grpc_provisional (owner_id, task_id, revision, record) "
                                 "VALUES (?,?,?,?)", (owner, task_id, revision, record))
                    continue
                # a copy supersedes any provisional one still waiting for its confirmation (one lost on the way)
                conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision<?",
                             (owner, task_id, revision))
                held = conn.execute("SELECT revision FROM grpc_backups WHERE owner_id=? AND task_id=?",
                                    (owner, task_id)).fetchone()
                if deleted:
                    if held is not None:
                        conn.execute("DELETE FROM grpc_backups WHERE owner_id=? AND task_id=?", (owner, task_id))
                        added -= 1
                elif held is None:
                    conn.execute("INSERT INTO grpc_backups (owner_id, task_id, revision, record, final) "
                                 "VALUES (?,?,?,?,?)", (owner, task_id, revision, record, final))
                    added += 1
                elif revision > held[0]:
                    conn.execute("UPDATE grpc_backups SET revision=?, record=?, final=? WHERE owner_id=? AND task_id=?",
                                 (revision, record, final, owner, task_id))
            return owned, added
        owned, added = await self.store._write(keep)
        self._copies_held += added
        if owned:
            self.counters["backups_refused"] += len(owned)
        # Outcomes held here now: their submitters hear of them from here, one hop sooner than from the owner.
        by_submitter: dict[str, list[pb.FinishedTask]] = {}
        for r in records:
            if r.finished and r.submitter_id and not r.deleted and r.task_id not in owned \
                    and r.submitter_id != peer.node_id:
                by_submitter.setdefault(r.submitter_id, []).append(pb.FinishedTask(entry=r.finished,
                                                                                   owner_id=peer.node_id))
        sent: set[str] = set()
        for submitter, entries in by_submitter.items():
            if self._send_to(submitter, pb.TaskMessage(finished=entries)):
                sent.add(submitter)
                self.counters["task_outcomes_forwarded"] += len(entries)
        self._send_to(peer.node_id, pb.TaskMessage(backup_acks=[
            pb.BackupAck(task_id=r.task_id, revision=r.revision, refused=r.task_id in owned,
                         forwarded=bool(r.finished) and r.submitter_id in sent)
            for r in records if not (r.provisional and (r.confirmed or r.deleted))]))  # nobody waits for those

    def _member_change(self, change: Change) -> None:
        node = change.node
        if node.node_id == self.node_id:
            return
        if change.new in (NodeStatus.DEAD, NodeStatus.LEFT):  # its submissions are sent again to its successor
            for key in [k for k, peer in self._waiting_on.items() if peer == node.node_id and k[0] == "submit"]:
                del self._waiting_on[key]
                future = self._waiting.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(_GONE)
        if self._client_role:
            if change.new in (NodeStatus.DEAD, NodeStatus.LEFT):
                self._rehome(node.node_id)
            return
        if change.new is NodeStatus.ACTIVE or node.node_id in self._backup_of.values():
            self._rebackup_soon()  # a new peer may be the backup now; a backup that went has to be replaced
        if change.new not in (NodeStatus.DEAD, NodeStatus.LEFT):
            self._settle_deferred()
            if change.new is NodeStatus.ACTIVE:
                self._tell_superseded(node.node_id)
            return
        for key in [k for k, offer in self._inbox.items() if offer.owner_id == node.node_id]:
            del self._inbox[key]  # its tasks will be routed again by whoever takes them over
        if change.new is NodeStatus.DEAD and node.node_id not in self._deferred and self._in_minority():
            # This side may be the one cut off: taking over here would give the task a second owner that the
            # rest of the mesh (which still hears the owner) never learns of. Wait until a majority is seen.
            self._deferred[node.node_id] = (node.name, 0)
            self.spawn(self._defer(node.node_id), "takeover-deferred")
        elif node.node_id not in self._deferred:
            self._start_take_over(node.node_id, node.name)
        self._settle_deferred()

    def _start_take_over(self, owner_id: str, owner_name: str) -> None:
        if owner_id not in self._adopted_from and not self._client_role:
            self._adopted_from.add(owner_id)
            self.spawn(self._take_over(owner_id, owner_name), "takeover")

    def _in_minority(self) -> bool:
        """This node holds fewer than half of the workers it knows of (itself included, the ones that left not)
        alive: it may be the side of a cut that was cut off, so it takes no dead owner's tasks over. Two nodes
        that lose each other each hold half: both take over (a stopped process cannot be told from a cut)."""
        swim_node = getattr(self, "swim", None)
        if swim_node is None:
            return False
        live, dead = 1, 0
        for m in swim_node.members():
            if m.node_id == self.node_id or m.info.role is not NodeRole.WORKER:
                continue
            if m.status in LIVE:
                live += 1
            elif m.status is NodeStatus.DEAD:
                dead += 1
        return 2 * live < live + dead

    async def _defer(self, owner_id: str) -> None:
        """Note how far the copies held from a dead owner go when its takeover is deferred (``_settle_deferred``)."""
        row = await self.store._read(lambda c: c.execute(
            "SELECT max(revision) FROM grpc_backups WHERE owner_id=?", (owner_id,)).fetchone())
        if owner_id in self._deferred:
            self._deferred[owner_id] = (self._deferred[owner_id][0], int(row[0] or 0))
        self.counters["tasks_takeover_deferred"] += 1
        log.warning("%s declared dead while this node sees a minority of the workers: its tasks are not taken "
                    "over here", self._deferred.get(owner_id, ("?", 0))[0])

    async def _drop_copies(self, owner_id: str, revision: int) -> None:
        await self.store._write(lambda c: c.execute(
            "DELETE FROM grpc_backups WHERE owner_id=? AND revision<=?", (owner_id, revision)))
        await self._count_copies()

    def _settle_deferred(self) -> None:
        """Deferred takeovers, looked at again: an owner alive again keeps its tasks (the copies it sent before
        it was lost are dropped here: it copied its work elsewhere meanwhile, and sends it again to its
        successor); one still dead is taken over once this node sees a majority (or the dead are forgotten)."""
        for owner_id, (name, revision) in list(self._deferred.items()):
            status = self.status_of(owner_id)
            if status in LIVE:
                del self._deferred[owner_id]
                self.counters["tasks_takeover_cancelled"] += 1
                self.spawn(self._drop_copies(owner_id, revision), "stale-copies")
            elif status is not NodeStatus.DEAD or not self._in_minority():
                del self._deferred[owner_id]
                self._start_take_over(owner_id, name)

    def _declared_dead(self) -> None:
        """SWIM says others declared this node dead: its backup may have taken its tasks over. Copy every
        unfinished one again at once; those the backup refuses (it owns them now) are dropped here."""
        if not self._client_role:
            self.spawn(self._confirm_ownership(), "confirm-ownership")

    async def _confirm_ownership(self) -> None:
        """Copy every unfinished task, and every outcome no backup held yet (recorded while cut off), to the
        backup again, waiting for its answer: what it refuses (it owns the task now) is dropped here."""
        rows = await self.store._read(lambda c: c.execute(
            "SELECT task_id FROM tasks WHERE status IN ('pending','assigned','running')").fetchall())
        ids = [r[0] for r in rows] + self._unbacked_to_confirm()
        for start in range(0, len(ids), 500):
            await self._back_up(await self.store.get_tasks(ids[start:start + 500], with_attempts=True))

    def _rebackup_soon(self) -> None:
        if not self._rebackup_due:
            self._rebackup_due = True
            self.spawn(self._rebackup(), "rebackup")

    async def _rebackup(self) -> None:
        """Copy every unfinished task this node owns whose copy is missing or held by a peer that is gone."""
        await asyncio.sleep(0.05)  # one pass for a burst of membership changes
        self._rebackup_due = False
        rows = await self.store._read(lambda c: c.execute(
            "SELECT task_id FROM tasks WHERE status IN ('pending','assigned','running')").fetchall())
        ids = [r[0] for r in rows if self.status_of(self._backup_of.get(r[0], "")) not in LIVE
               or self._backup_of.get(r[0]) != self._backup_peer()]
        for start in range(0, len(ids), 500):
            await self._back_up(await self.store.get_tasks(ids[start:start + 500], with_attempts=True), wait=False)
        # Outcomes recorded while no backup answered (cut off, or alone) go to the backup now, waiting for its
        # answer: one that took the task over while this node was lost refuses, and the task is dropped here.
        finals = self._unbacked_to_confirm()
        if finals:
            for start in range(0, len(finals), 500):
                await self._back_up(await self.store.get_tasks(finals[start:start + 500], with_attempts=True))

    def _unbacked_to_confirm(self) -> list[str]:
        """Outcomes no backup held that can be put to their last holder now: the node that held the task's copies
        is the one that took it over if any did, so it is asked again once live (never a stand-in that would just
        accept it); one with no holder, or a holder gone for good, goes to the backup there is."""
        out = []
        for task_id in self._unbacked_final:
            holder = self._backup_of.get(task_id)
            status = self.status_of(holder) if holder else None
            if status in LIVE or (status is not NodeStatus.DEAD and self._backup_peer() is not None):
                out.append(task_id)
        return out

    async def _copies_of(self, owner_id: str, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The copies of ``owner_id``'s tasks this node holds (backups), by task id, of those asked for."""
        def read(conn: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for start in range(0, len(task_ids), 500):
                chunk = task_ids[start:start + 500]
                out.update((str(r[0]), bytes(r[1])) for r in conn.execute(
                    f"SELECT task_id, record FROM grpc_backups WHERE owner_id=? AND task_id IN "
                    f"({','.join('?' * len(chunk))})", (owner_id, *chunk)))
            return out
        return await self.store._read(read)

    async def _adopt_when_gone(self, peer: Peer, subs: Sequence[pb.Submission]) -> None:
        """A client's copies of tasks whose owner this node still holds live: taken over once it holds it gone too
        (its own probes or the client's gossip tell it within about a node timeout), else refused (counted)."""
        self._early_copies += len(subs)
        try:
            deadline = time.monotonic() + max(1.0, 2 * self.config.node_timeout_seconds)
            owners = {s.previous_owner_id for s in subs}
            while (any(self.status_of(o) in LIVE for o in owners) and time.monotonic() < deadline
                   and not self._closed):
                await asyncio.sleep(0.05)
        finally:
            self._early_copies -= len(subs)
        gone = [s for s in subs if self.status_of(s.previous_owner_id) not in LIVE]
        if len(gone) < len(subs):
            self.refuse("tasks_refused", peer.node_id, f"grpc tasks: {peer.name or '?'} asked this node to take over "
                                                       f"{len(subs) - len(gone)} task(s) of an owner it does not hold "
                                                       "gone")
        if gone and not self._closed:
            await self._adopt_copies(peer, gone)

    async def _adopt_copies(self, peer: Peer, subs: Sequence[pb.Submission]) -> None:
        """A client's copies of tasks whose owner is gone: taken over as backups are. The client's copy is the task
        as submitted: where this node holds the owner's own copy (a backup), that one is taken over instead (a
        task handed back or moved on since is taken over as it stands, whichever of the two arrives first)."""
        by_owner: dict[str, dict[str, bytes]] = {}
        for sub in subs:
            try:
                task_id = self._task_of(sub.task).task_id
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"a task copy from {peer.name}: {shortened(str(exc))}")
                continue
            by_owner.setdefault(sub.previous_owner_id, {})[task_id] = sub.task
        for owner_id, frames in by_owner.items():
            frames.update(await self._copies_of(owner_id, list(frames)))
            await self._adopt(owner_id, f"{owner_id[:12]} (copies from {peer.name})", list(frames.items()))

    async def _take_over(self, owner_id: str, owner_name: str) -> None:
        """Adopt the dead (or departed) owner's tasks this node holds copies of."""
        rows = await self.store._read(lambda c: c.execute(
            "SELECT task_id, record FROM grpc_backups WHERE owner_id=?", (owner_id,)).fetchall())
        await self._adopt(owner_id, owner_name, rows)

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM grpc_backups WHERE owner_id=?", (owner_id,))
            # never confirmed: the owner may have refused them; their clients hand on what they were told is stored
            conn.execute("DELETE FROM grpc_provisional WHERE owner_id=?", (owner_id,))
        await self.store._write(forget)
        await self._count_copies()
        self._adopted_from.discard(owner_id)

    def _tell_superseded(self, owner_id: str) -> None:
        """An owner whose tasks this node took over is back (it was only cut off or stopped): tell it which are
        this node's now, so it drops its own records of them (finished ones too: one owner answers per task)."""
        taken = self._taken_from.pop(owner_id, None)
        if taken:
            self._send_to(owner_id, pb.TaskMessage(handovers=[
                pb.Handover(task_id=task_id, owner_id=self.node_id, previous_owner_id=owner_id,
                            why="taken over while you were declared dead") for task_id in taken]))

    async def _adopt(self, owner_id: str, owner_name: str, rows: Sequence[tuple[Any, bytes]]) -> None:
        tasks = []
        for task_id, record in rows:
            try:
                tasks.append(self._task_of(record))
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.found_problem("refused_records", f"copy of task {task_id} from {owner_name}: {exc}")
        live = {n.node_id for n in self.live_peers(workers_only=True)}
        for t in tasks:
            if t.status in _FINAL or not t.node_id:
                continue
            if t.node_id == self.node_id:
                # This node ran it (or was offered it) for the old owner: from now on it is its own.
                held = self._held.pop(t.task_id, None)
                self._inbox = {k: o for k, o in self._inbox.items() if k[0] != t.task_id}
                t.status = TaskStatus.RUNNING if held is not None and held[1] == t.attempt else TaskStatus.ASSIGNED
            else:
                # A live worker renews the lease here from now on (handover below); a dead one's attempt may have
                # started, so the sweeper moves it on with a new attempt, fencing out the old.
                t.status = TaskStatus.RUNNING
        for t in tasks:
            self._owned.pop(t.task_id, None)
        added = await self.store.adopt(tasks, self._lease_seconds)
        if tasks and len(self._taken_from) < 4096:
            taken = self._taken_from.setdefault(owner_id, [])
            taken.extend(t.task_id for t in tasks[:100_000 - len(taken)])
        if tasks:
            log.info("took over %d task(s) of %s (%d new here)", len(tasks), owner_name, added)
            self.counters["tasks_taken_over"] += added
            await self._back_up([t for t in tasks if t.status not in _FINAL], wait=False)
            # Workers running them for the old owner report to this one from now on.
            by_worker: dict[str, list[pb.Handover]] = {}
            for t in tasks:
                if t.status not in _FINAL and t.node_id in live:
                    by_worker.setdefault(t.node_id, []).append(pb.Handover(
                        task_id=t.task_id, owner_id=self.node_id, previous_owner_id=owner_id,
                        owner_epoch=t.attempt, why=f"owner {owner_name} is gone"))
            for worker, handovers in by_worker.items():
                self._send_to(worker, pb.TaskMessage(handovers=handovers))
            self._deliver(Topic.MEMBERS)
            self._deliver(Topic.RESULTS)

    # -- offering (owner) -----------------------------------------------------------------------------------
    def _offer(self, worker_id: str, task: Task, delay: float = 0.0) -> None:
        lease = self._lease_seconds
        offer = pb.TaskOffer(task_id=task.task_id, attempt=task.attempt, lease_seconds=lease,
                             task=self._task_frame(task), delay_seconds=max(0.0, delay))
        self._unaccepted[(task.task_id, task.attempt)] = _Sent(worker_id, offer, time.monotonic())
        self._send_to(worker_id, pb.TaskMessage(offers=[offer]))

    async def _offer_moved(self, task_ids: Iterable[str], delays: dict[str, float]) -> None:
        """Offer tasks just routed to other workers (a move, a replay) to them."""
        ids = list(task_ids)
        if not ids:
            return
        for task in await self.store.get_tasks(ids, with_attempts=False):
            if task.status is TaskStatus.ASSIGNED and task.node_id and task.node_id != self.node_id:
                self._offer(task.node_id, task, delays.get(task.task_id, 0.0))

    async def _reoffer_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(REOFFER_SECONDS / 2)
            if self._deferred:
                self._settle_deferred()
            now = time.monotonic()
            for sent in list(self._unaccepted.values()):
                if self.status_of(sent.worker_id) not in LIVE:
                    continue  # the sweeper routes it elsewhere when the worker is declared dead
                if now - sent.sent_at >= REOFFER_SECONDS:
                    sent.sent_at = now
                    self.counters["task_reoffers"] += 1
                    self._send_to(sent.worker_id, pb.TaskMessage(offers=[sent.offer]))

    async def _offer_unaccepted_after_restart(self) -> None:
        if self._client_role:
            return
        rows = await self.store._read(lambda c: c.execute(
            "SELECT task_id FROM tasks WHERE status='assigned' AND node_id IS NOT NULL AND node_id != ?",
            (self.node_id,)).fetchall())
        await self._offer_moved([r[0] for r in rows], {})

    async def _accepted(self, peer: Peer, accepts: Sequence[pb.TaskAccept]) -> None:
        taken = [(a.task_id, a.attempt) for a in accepts if a.accepted]
        refused = [a for a in accepts if not a.accepted]
        for a in accepts:  # only the worker offered the attempt answers for it
            sent = self._unaccepted.get((a.task_id, a.attempt))
            if sent is not None and sent.worker_id == peer.node_id:
                del self._unaccepted[(a.task_id, a.attempt)]
        if taken:
            started = await self._start_offered(peer.node_id, taken)
            if len(started) < len(taken):  # not offered to it (or no more): fenced, nothing started
                self.counters["tasks_stale_accepts"] += len(taken) - len(started)
        if refused:
            for a in refused:
                self._owned.pop(a.task_id, None)
            await self.store.move([Reassignment(a.task_id, a.attempt, peer.node_id, None, None,
                                                f"waiting: {peer.name} refused it ({a.reason or 'no reason'})",
                                                bump_attempt=False, final_status=TaskStatus.PENDING)
                                   for a in refused])
            self._deliver(Topic.MEMBERS)  # the sweeper routes the pending list

    # -- running (worker) -----------------------------------------------------------------------------------
    def _take_offers(self, peer: Peer, offers: Sequence[pb.TaskOffer]) -> None:
        capacity = self.config.max_capacity
        answers = []
        now = time.monotonic()
        for offer in offers:
            key = (offer.task_id, offer.attempt)
            if key in self._inbox or self._held.get(offer.task_id) == (peer.node_id, offer.attempt):
                continue  # offered again: already here
            if key in self._finished_attempts:
                continue
            if self._client_role:
                answers.append(pb.TaskAccept(task_id=offer.task_id, attempt=offer.attempt, reason="a client"))
                continue
            if len(self._inbox) + len(self._held) >= capacity:
                answers.append(pb.TaskAccept(task_id=offer.task_id, attempt=offer.attempt, reason="full"))
                continue
            try:
                task = self._task_of(offer.task)
                if task.task_id != offer.task_id:
                    raise ValueError(f"an offer of {offer.task_id[:40]!r} holding task {task.task_id[:40]!r}")
                if offer.attempt < 1 or not _delay_ok(offer.delay_seconds):
                    raise ValueError(f"attempt {offer.attempt}, hold-back {offer.delay_seconds} s")
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"an offer from {peer.name}: {shortened(str(exc))}")
                answers.append(pb.TaskAccept(task_id=offer.task_id, attempt=offer.attempt, reason="unreadable"))
                continue
            task.attempt = offer.attempt
            self._inbox[key] = _Offer(peer.node_id, peer.address, task, now + max(0.0, offer.delay_seconds),
                                      next(self._arrivals))
        if answers:
            self._send_to(peer.node_id, pb.TaskMessage(accepts=answers))
        self._deliver(Topic.TASKS)

    async def _start_offered(self, worker_id: str, held: Sequence[tuple[str, int]]) -> set[str]:
        """Start the attempts ``worker_id`` accepted (fenced, in the store), and in the records kept in memory."""
        now = time.time()
        started = await self.store.start_offered(worker_id, held, self._lease_seconds, now)
        for task_id, attempt in held:
            if task_id in started:
                self._started(task_id, attempt, worker_id, now)
        return started

    def _started(self, task_id: str, attempt: int, worker_id: str, now: float) -> None:
        """An attempt of an own task started (as ``claim`` and ``start_offered`` store it): so in memory too."""
        kept = self._owned.get(task_id)
        if kept is None:
            return
        if kept.status is not TaskStatus.ASSIGNED or kept.attempt != attempt or kept.node_id != worker_id:
            del self._owned[task_id]  # not as the store had it: read back when it ends
            return
        kept.status, kept.started_at = TaskStatus.RUNNING, now
        kept.attempts = [Attempt(attempt, worker_id, kept.node_name or "", now, None, None)]

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        tasks = await self.store.claim(node_id, limit, lease_seconds) if limit > 0 else []
        for task in tasks:
            if task.started_at is not None:
                self._started(task.task_id, task.attempt, node_id, task.started_at)
        room = limit - len(tasks)
        if room <= 0 or not self._inbox:
            return tasks
        now = time.monotonic()
        due = sorted((o for o in self._inbox.values() if o.due_at <= now),
                     key=lambda o: (-int(o.task.priority), o.arrival))[:room]
        accepts: dict[str, list[pb.TaskAccept]] = {}
        wall = time.time()
        for offer in due:
            task = offer.task
            del self._inbox[(task.task_id, task.attempt)]
            self._held[task.task_id] = (offer.owner_id, task.attempt)
            task.status, task.node_id, task.started_at = TaskStatus.RUNNING, node_id, wall
            accepts.setdefault(offer.owner_id, []).append(
                pb.TaskAccept(task_id=task.task_id, attempt=task.attempt, accepted=True))
            tasks.append(task)
        for owner, parts in accepts.items():
            self._send_to(owner, pb.TaskMessage(accepts=parts))
        return tasks

    async def next_due(self, node_id: str) -> float | None:
        due = await self.store.next_due(node_id)
        if self._inbox:
            now = time.monotonic()
            soonest = max(0.0, min(o.due_at for o in self._inbox.values()) - now)
            due = soonest if due is None else min(due, soonest)
        return due

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float) -> set[str]:
        local = [(t, a) for t, a in held if t not in self._held]
        remote: dict[str, list[pb.HeldAttempt]] = {}
        for task_id, attempt in held:
            holder = self._held.get(task_id)
            if holder is not None and holder[1] == attempt:
                remote.setdefault(holder[0], []).append(pb.HeldAttempt(task_id=task_id, attempt=attempt))
        kept = await self.store.renew(node_id, local, lease_seconds) if local else set()
        futures: dict[str, asyncio.Future[Any]] = {}
        for owner, parts in remote.items():
            if self.status_of(owner) not in LIVE:
                continue  # its tasks are being taken over; a result to it would be refused anyway
            request = next(self._requests)
            futures[owner] = self._expect(("renew", request), owner)
            self._renewals[request] = {p.task_id: p.attempt for p in parts}
            self._renewals_to[request] = owner
            while len(self._renewals) > RENEWALS_KEPT:
                old, _ = self._renewals.popitem(last=False)
                self._renewals_to.pop(old, None)
            self._send_to(owner, pb.TaskMessage(renewals=[pb.LeaseRenewal(request_id=request, held=parts,
                                                                       lease_seconds=lease_seconds)]))
        # The heartbeat waits on this: a short wait, so an owner that is slow (or dead and not yet declared so)
        # does not hold up this node's heartbeats; an answer that comes later is applied when it comes.
        answers = await self._wait_all(futures, min(RENEW_TIMEOUT, self.config.suspect_after_seconds / 4))
        for owner, parts in remote.items():
            answer = answers.get(owner)
            ids = {p.task_id for p in parts}
            if answer is None:
                if self.status_of(owner) in LIVE:
                    kept |= ids  # no answer yet: keep running, the owner fences the result
                continue
            kept |= ids & answer
        # An attempt whose outcome is being recorded (the owner waits for its backup's copy meanwhile) has ended,
        # not lost its lease: the worker is told so when ``complete`` or ``move`` returns.
        return kept | {task_id for task_id, attempt in held if (task_id, attempt) in self._recording}

    def _renewal_answered(self, peer: Peer, request_id: int, kept: set[str]) -> None:
        """An owner's answer to a lease renewal: the attempts it no longer grants are not held here any more
        (in time, ``renew`` reports them taken away; late, the next ``renew`` does). Only the owner asked counts."""
        self._resolve(peer, ("renew", request_id), kept)
        asked = self._renewals.get(request_id)
        if asked is None or self._renewals_to.get(request_id) != peer.node_id:
            return
        del self._renewals[request_id]
        for task_id, attempt in asked.items():
            if task_id not in kept and self._held.get(task_id) == (peer.node_id, attempt) \
                    and (task_id, attempt) not in self._recording:
                self._held.pop(task_id, None)

    async def complete(self, completions: Sequence[Completion]) -> list[bool]:
        for c in completions:
            if c.status not in _OUTCOMES:
                raise ValueError(f"a completion cannot end a task {c.status.value}")
        keys = {(c.task_id, c.attempt) for c in completions} - self._recording
        self._recording |= keys
        try:
            return await self._complete(completions)
        finally:
            self._recording -= keys

    async def _complete(self, completions: Sequence[Completion]) -> list[bool]:
        local = [c for c in completions if c.task_id not in self._held]
        recorded: dict[tuple[str, int], bool] = {}
        if local:
            for c, ok in zip(local, await self._complete_owned(local), strict=True):
                recorded[(c.task_id, c.attempt)] = ok
        futures: dict[tuple[str, int], asyncio.Future[Any]] = {}
        by_owner: dict[str, list[pb.TaskResult]] = {}
        for c in completions:
            held = self._held.get(c.task_id)
            if held is None:
                continue
            owner, attempt = held
            key = (c.task_id, c.attempt)
            self._finished_attempts[key] = None
            while len(self._finished_attempts) > DONE_KEPT:
                self._finished_attempts.popitem(last=False)
            self._cancels.discard(key)
            if attempt != c.attempt or self.status_of(owner) not in LIVE:
                recorded[key] = False
                self._held.pop(c.task_id, None)
                continue
            futures[key] = self._expect(("result", key), owner)
            by_owner.setdefault(owner, []).append(pb.TaskResult(
                task_id=c.task_id, attempt=c.attempt, outcome=_OUTCOMES[c.status], result=c.result_frame or b"",
                error=c.error or ""))
        for owner, results in by_owner.items():
            self._send_to(owner, pb.TaskMessage(results=results))
        answers = await self._wait_all(futures, RESULT_TIMEOUT)
        for key in futures:
            recorded[key] = bool(answers.get(key, False))
            if self._held.get(key[0], (None, None))[1] == key[1]:
                self._held.pop(key[0], None)
        return [recorded.get((c.task_id, c.attempt), False) for c in completions]

    async def _complete_owned(self, completions: Sequence[Completion]) -> list[bool]:
        """Record outcomes here; one counts once its backup holds it too (or the backup did not answer in
        time, counted): an outcome whose task another node took over meanwhile is refused (False)."""
        stamps = await self.store.complete_stamped(completions)
        ended: list[str | _Ended] = []
        for c, stamp in zip(completions, stamps, strict=True):
            if stamp is not None:
                ended.append(self._ended_in_memory(c, stamp) or c.task_id)
        lost = await self._after_final(ended)
        return [stamp is not None and c.task_id not in lost for c, stamp in zip(completions, stamps, strict=True)]

    def _ended_in_memory(self, c: Completion, finished_at: float) -> _Ended | None:
        """The record of a task the store just completed (``COMPLETE_SQL``), from the one kept in memory; None
        when none is kept as the store had it (then it is read back)."""
        kept = self._owned.pop(c.task_id, None)
        if (kept is None or kept.status is not TaskStatus.RUNNING or kept.attempt != c.attempt
                or kept.node_id != c.node_id or len(kept.attempts) != 1):
            return None
        fields = task_fields(kept, self.limits)
        fields.update(status=c.status.value, result=c.result_frame, error=c.error, finished_at=finished_at)
        a = kept.attempts[0]
        fields["attempts"] = [[a.attempt, a.node_id, a.node_name, a.started_at, finished_at, c.error]]
        return _Ended(c.task_id, kept.submitter_id, fields)

    async def _record_results(self, peer: Peer, results: Sequence[pb.TaskResult]) -> None:
        """Owner: record results from a worker, fenced by attempt; answer each."""
        completions, refused = [], []
        for r in results:
            status = _STATUSES.get(r.outcome)
            why = "" if status is not None else f"unknown outcome {r.outcome}"
            if r.result and not why:
                try:  # stored as sent and read by every node later: it must be a frame this node can read
                    codec.decode(r.result, self.limits)
                except codec.CodecError as exc:
                    why = f"unreadable result: {shortened(str(exc))}"
            if why or status is None:
                self.refuse("refused_records", peer.node_id, f"a result of task {r.task_id[:40]!r} from "
                                                             f"{peer.name or '?'}: {why}")
                refused.append(pb.ResultAck(task_id=r.task_id, attempt=r.attempt, reason=why))
                continue
            completions.append(Completion(r.task_id, r.attempt, peer.node_id, status, r.result or None,
                                          r.error or None))
        late = [(c.task_id, c.attempt) for c in completions
                if self._unaccepted.get((c.task_id, c.attempt), _NOBODY).worker_id == peer.node_id]
        if late:  # the acceptance was lost on the way: the result says the worker started it
            for key in late:
                self._unaccepted.pop(key, None)
            await self._start_offered(peer.node_id, late)
        done = await self._complete_owned(completions) if completions else []
        if not all(done):  # not this attempt's to end (an unknown task, another attempt or worker): fenced
            self.counters["tasks_stale_results"] += done.count(False)
        acks = [pb.ResultAck(task_id=c.task_id, attempt=c.attempt, recorded=ok,
                             reason="" if ok else "another attempt holds the task, or it has ended")
                for c, ok in zip(completions, done, strict=True)]
        self._send_to(peer.node_id, pb.TaskMessage(result_acks=acks + refused))

    async def _after_final(self, ended_now: Sequence[str | _Ended]) -> set[str]:
        """Tasks that just ended here (their records, or ids to read them by): copy the outcome to the backup, then
        tell a submitter on another node (the backup forwards it as soon as it holds the copy; this node tells
        the submitter itself when the backup could not, or no backup answered). Returns the ids this node turned
        out not to own any more (see ``_back_up``): nothing is said of those."""
        if not ended_now:
            return set()
        ended = [e for e in ended_now if isinstance(e, _Ended)]
        ids = [e for e in ended_now if isinstance(e, str)]
        if ids:
            self.counters["task_outcomes_read_back"] += len(ids)  # not kept in memory as stored (see ``_owned``)
            ended += [_Ended.of(t, self.limits) for t in await self.store.get_tasks(ids, with_attempts=True)
                      if t.status in _FINAL]
        for e in ended:
            self._owned.pop(e.task_id, None)
        unbacked: set[str] = set()
        forwarded: set[str] = set()
        lost = await self._back_up(ended, unbacked=unbacked, forwarded=forwarded)
        by_submitter: dict[str, list[pb.FinishedTask]] = {}
        asked: dict[str, asyncio.Future[Any]] = {}
        for e in ended:
            if e.task_id in lost or e.task_id in forwarded:  # the backup told the submitter once it held it
                continue
            if e.task_id in unbacked:  # re-confirmed with its last holder when it is back (``_unbacked_to_confirm``)
                self._unbacked_final[e.task_id] = None
                while len(self._unbacked_final) > DONE_KEPT:
                    self._backup_of.pop(self._unbacked_final.popitem(last=False)[0], None)
            else:
                self._backup_of.pop(e.task_id, None)
            if e.submitter_id and e.submitter_id != self.node_id:
                by_submitter.setdefault(e.submitter_id, []).append(
                    pb.FinishedTask(entry=codec.encode(e.entry(), self.limits)))
                if e.task_id in unbacked and self.status_of(e.submitter_id) not in (None, NodeStatus.LEFT):
                    # no backup holds it: the submitter's copy is the other one (one held dead here may be alive
                    # and have handed it on; one that left, or that this node cannot reach, holds none)
                    asked[e.task_id] = self._expect(("finished", e.task_id), e.submitter_id)
        for submitter, entries in by_submitter.items():
            self._send_to(submitter, pb.TaskMessage(finished=entries))
        if asked:
            answers = await self._wait_all(asked, BACKUP_TIMEOUT)
            refused = {task_id for task_id, took in answers.items() if took is False}
            if refused:
                await self._drop_owned(refused)
                lost |= refused
        return lost

    def _take_finished(self, peer: Peer, entries: Sequence[pb.FinishedTask]) -> None:
        """Client: outcomes pushed by owners (or forwarded by their backups, naming the owner), kept for
        ``finished_for``; one from an owner this client handed the task away from (``_rehome``) is refused, before
        or after the task ended, so a task ends once for its submitter."""
        acks = []
        for entry in entries:
            try:
                fields = codec.decode(entry.entry, self.limits)
                if not isinstance(fields, dict):
                    raise CorruptRecord("a result entry that is not a map")
                finished = self.store.finished_from_fields({f: fields.get(f) for f in FINISHED_FIELDS})
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"a result entry from {peer.name or '?'}: "
                                                             f"{shortened(str(exc))}")
                continue
            if self._rehomed.get(finished.task_id) == (entry.owner_id or peer.node_id):
                self.counters["stale_results_refused"] += 1
                acks.append(pb.FinishedAck(task_id=finished.task_id, refused=True))
                continue
            acks.append(pb.FinishedAck(task_id=finished.task_id))
            self._feed_seq += 1
            self._feed.append((self._feed_seq, finished))
            self._submitted.pop(finished.task_id, None)
        self._send_to(peer.node_id, pb.TaskMessage(finished_acks=acks))
        self._deliver(Topic.RESULTS)

    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        out = await self.store.cancel_requests(node_id)
        out += [key for key in self._cancels if self._held.get(key[0], ("", -1))[1] == key[1]]
        return out

    # -- moving -------------------------------------------------------------------------------------------
    async def move(self, moves: Sequence[Reassignment]) -> list[bool]:
        """Moves of tasks this node owns are applied here; a move of an attempt this node runs for another
        owner (a retry after a failure, a hand-back) is sent to that owner, which applies it fenced."""
        keys = {(m.task_id, m.expected_attempt) for m in moves if m.expected_node == self.node_id} - self._recording
        self._recording |= keys
        try:
            return await self._move(moves)
        finally:
            self._recording -= keys

    async def _move(self, moves: Sequence[Reassignment]) -> list[bool]:
        remote = {i: m for i, m in enumerate(moves) if m.task_id in self._held}
        local = [m for i, m in enumerate(moves) if i not in remote]
        applied = dict(zip([i for i in range(len(moves)) if i not in remote],
                           await self._move_owned(local) if local else [], strict=True))
        futures: dict[int, asyncio.Future[Any]] = {}
        for index, m in remote.items():
            owner, attempt = self._held[m.task_id]
            if attempt != m.expected_attempt or self.status_of(owner) not in LIVE:
                applied[index] = False
                continue
            request = next(self._requests)
            futures[index] = self._expect(("move", request), owner)
            self._send_to(owner, pb.TaskMessage(moves=[pb.MoveRequest(request_id=request,
                                                                      move=codec.encode(_move_fields(m)))]))
        answers = await self._wait_all(futures, RESULT_TIMEOUT)
        for index in futures:
            applied[index] = bool(answers.get(index, False))
        for m in remote.values():
            if self._held.get(m.task_id, ("", -1))[1] == m.expected_attempt:
                self._held.pop(m.task_id, None)
                self._cancels.discard((m.task_id, m.expected_attempt))
        return [applied.get(i, False) for i in range(len(moves))]

    async def _moves_from(self, peer: Peer, requests: Sequence[pb.MoveRequest]) -> None:
        """Owner: apply the fenced moves a worker asks for (only for attempts that worker holds)."""
        moves, ids = [], []
        results = []
        for request in requests:
            try:
                move = _move_of(codec.decode(request.move, self.limits))
            except (codec.CodecError, ValueError, TypeError, KeyError, OverflowError) as exc:
                self.refuse("refused_records", peer.node_id, f"a task move from {peer.name}: {shortened(str(exc))}")
                results.append(pb.MoveResult(request_id=request.request_id, applied=False))
                continue
            if move.expected_node != peer.node_id:
                results.append(pb.MoveResult(request_id=request.request_id, applied=False))
                continue
            moves.append(move)
            ids.append(request.request_id)
        if moves:
            done = await self._move_owned(moves)
            results += [pb.MoveResult(request_id=r, applied=ok) for r, ok in zip(ids, done, strict=True)]
        self._send_to(peer.node_id, pb.TaskMessage(move_results=results))

    async def _move_owned(self, moves: Sequence[Reassignment]) -> list[bool]:
        for m in moves:
            self._owned.pop(m.task_id, None)
        done = await self.store.move(moves)
        applied = [m for m, ok in zip(moves, done, strict=True) if ok]
        await self._offer_moved([m.task_id for m in applied if m.node_id and m.node_id != self.node_id],
                                {m.task_id: m.delay for m in applied})
        for m in applied:
            self._unaccepted.pop((m.task_id, m.expected_attempt), None)
            if m.expected_node and m.expected_node != self.node_id and self.status_of(m.expected_node) in LIVE:
                # the old holder may still run it: ask it to stop (its result would be refused anyway)
                self._send_to(m.expected_node, pb.TaskMessage(cancels=[pb.CancelAttempt(task_id=m.task_id,
                                                                                     attempt=m.expected_attempt)]))
        await self._after_final([m.task_id for m in applied if m.node_id is None
                                 and m.final_status is not TaskStatus.PENDING])
        # a move of a task whose cancel was asked ends it cancelled: that is final too
        await self._after_final([m.task_id for m in applied if m.node_id is not None])
        return done

    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        out = await self._cancel_owned(task_ids)
        missing = [t for t, o in zip(task_ids, out, strict=True) if o == "missing"]
        if missing:
            found = await self._ask_peers_cancel(missing)
            out = [found.get(t, o) if o == "missing" else o for t, o in zip(task_ids, out, strict=True)]
        return out

    async def _cancel_owned(self, task_ids: Sequence[str]) -> list[str]:
        for task_id in task_ids:
            self._owned.pop(task_id, None)
        out = await self.store.cancel(task_ids)
        cancelling = [t for t, o in zip(task_ids, out, strict=True) if o == "cancelling"]
        if cancelling:
            for task in await self.store.get_tasks(cancelling, with_attempts=False):
                if task.node_id and task.node_id != self.node_id:
                    self._send_to(task.node_id, pb.TaskMessage(cancels=[pb.CancelAttempt(task_id=task.task_id,
                                                                                      attempt=task.attempt)]))
        cancelled = [t for t, o in zip(task_ids, out, strict=True) if o == "cancelled"]
        for task_id in cancelled:
            for key in [k for k in self._unaccepted if k[0] == task_id]:
                sent = self._unaccepted.pop(key)
                stop = pb.CancelAttempt(task_id=key[0], attempt=key[1])
                self._send_to(sent.worker_id, pb.TaskMessage(cancels=[stop]))
        await self._after_final(cancelled)
        return out

    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        if await self.store.task_states([task_id]):
            return await self._replay_owned(task_id, node_id, node_name, why)
        request = pb.ReplayRequest(caller=self.wire.hello(), task_id=task_id, node_id=node_id or "",  # type: ignore[attr-defined]
                                   node_name=node_name or "", why=why)
        replies = await self._gather(lambda stub: stub.Replay(request, timeout=READ_TIMEOUT,
                                                              metadata=self.wire.metadata()))  # type: ignore[attr-defined]
        return any(r.replayed for r in replies)

    async def _replay_owned(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        self._owned.pop(task_id, None)
        ok = await self.store.replay(task_id, node_id, node_name, why)
        if ok and node_id and node_id != self.node_id:
            await self._offer_moved([task_id], {})
        if ok:
            await self._back_up(await self.store.get_tasks([task_id], with_attempts=True), wait=False)
        return ok

    async def _serve_replay(self, request: pb.ReplayRequest, context: grpc.aio.ServicerContext) -> Any:
        if not await self.store.task_states([request.task_id]):
            return pb.ReplayReply(found=False)
        target = request.node_id
        if target and target != self.node_id and self.status_of(target) not in LIVE:
            self.counters["refused_calls_bad_argument"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node {target[:40]!r} is no live member here: replay to a live worker or to none")
        ok = await self._replay_owned(request.task_id, request.node_id or None, request.node_name or None,
                                      request.why)
        return pb.ReplayReply(found=True, replayed=ok)

    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        return await self.store.stranded(dead_nodes, now)

    async def finished_for(self, submitter_id: str, after: Any, wait: float = 0.0) -> tuple[list[Finished], Any]:
        if not self._client_role:
            return await self.store.finished_for(submitter_id, after, wait)
        if after is None:
            return [], self._feed_seq
        # the feed's seqs run consecutively up to ``_feed_seq``: what came after ``after`` is its tail, read
        # from the right (a scan of the whole feed per wake-up cost the client a fifth of its CPU under load)
        newer = min(len(self._feed), max(0, self._feed_seq - int(after)))
        tail = list(itertools.islice(reversed(self._feed), newer))
        tail.reverse()
        return [f for _, f in tail], self._feed_seq

    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        gone = await self.store.prune(tasks_kept, dead_letters_kept, limit)
        if not self._client_role:
            await self._prune_copies(tasks_kept, dead_letters_kept, limit)
        return gone

    async def _prune_copies(self, tasks_kept: int, dead_letters_kept: int, limit: int) -> int:
        """Task retention on the copies this node holds for other owners, as each owner applies it to its own
        store: of each owner's copies, the newest ``tasks_kept`` (by revision) stay whatever their state; older
        ones of ended tasks go (their outcome was held by two nodes and told to its submitter long since);
        dead-letter copies past the newest ``dead_letters_kept`` go. Copies of unfinished tasks always stay.
        A provisional copy that its owner neither confirmed nor dropped within ``PROVISIONAL_KEPT`` goes too
        (its confirmation was lost; the owner copies the task again when it ends). Returns how many went."""
        limits = self.limits
        now = time.monotonic()
        seen = self._provisional_seen

        def prune(conn: sqlite3.Connection) -> tuple[int, dict[tuple[str, str, int], float]]:
            gone = 0
            budget = limit
            owners = [r[0] for r in conn.execute("SELECT DISTINCT owner_id FROM grpc_backups")]
            for owner in owners:
                if budget <= 0:
                    break
                edge = conn.execute("SELECT revision FROM grpc_backups WHERE owner_id=? ORDER BY revision DESC "
                                    "LIMIT 1 OFFSET ?", (owner, tasks_kept)).fetchone()
                ids: list[str] = []
                if edge is not None:
                    unknown = conn.execute("SELECT task_id, record FROM grpc_backups WHERE owner_id=? AND final=-1 "
                                           "AND revision<=? LIMIT ?", (owner, edge[0], budget)).fetchall()
                    for task_id, record in unknown:
                        conn.execute("UPDATE grpc_backups SET final=? WHERE owner_id=? AND task_id=?",
                                     (_final_of(record, limits), owner, task_id))
                    ids = [r[0] for r in conn.execute(
                        "SELECT task_id FROM grpc_backups WHERE owner_id=? AND final=1 AND revision<=? "
                        "ORDER BY revision LIMIT ?", (owner, edge[0], budget))]
                ids += [r[0] for r in conn.execute(
                    "SELECT task_id FROM grpc_backups WHERE owner_id=? AND final=2 ORDER BY revision DESC "
                    "LIMIT ? OFFSET ?", (owner, max(0, budget - len(ids)), dead_letters_kept))]
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    conn.execute(f"DELETE FROM grpc_backups WHERE owner_id=? AND task_id IN "
                                 f"({','.join('?' * len(chunk))})", (owner, *chunk))
                gone += len(ids)
                budget -= len(ids)
            waiting = {(o, t, int(r)): seen.get((o, t, int(r)), now) for o, t, r in conn.execute(
                "SELECT owner_id, task_id, revision FROM grpc_provisional LIMIT 100000")}
            for key, first in list(waiting.items()):
                if now - first >= PROVISIONAL_KEPT:
                    conn.execute("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?", key)
                    del waiting[key]
            return gone, waiting
        gone, self._provisional_seen = await self.store._write(prune)
        if gone:
            self.counters["task_copies_pruned"] += gone
            await self._count_copies()
        return gone

    # -- reading: here first, then every live peer ----------------------------------------------------------
    async def task_states(self, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        states = await self.store.task_states(task_ids)
        missing = [t for t in task_ids if t not in states]
        if missing:
            for task in await self._ask_peers(pb.GetTasksRequest(task_ids=missing, local_only=True)):
                states.setdefault(task.task_id, task.status)
        return states

    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        found = {t.task_id: t for t in await self.store.get_tasks(task_ids, with_attempts)}
        missing = [t for t in dict.fromkeys(task_ids) if t not in found]
        if missing:
            attempts = len(missing) <= 50 if with_attempts is None else with_attempts
            for task in await self._ask_peers(pb.GetTasksRequest(task_ids=missing, local_only=True,
                                                                 with_attempts=attempts)):
                found.setdefault(task.task_id, task)
        return [found[t] for t in task_ids if t in found]

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        mine = await self.store.list_tasks(status, limit, parent_id=parent_id)
        theirs = await self._ask_peers(pb.GetTasksRequest(status=status.value if status else "", limit=limit,
                                                          parent_id=parent_id or "", local_only=True))
        merged = {t.task_id: t for t in theirs}
        merged.update({t.task_id: t for t in mine})
        tasks = list(merged.values())
        if parent_id is not None:
            tasks.sort(key=lambda t: t.submitted_at)
        else:
            tasks.sort(key=lambda t: t.submitted_at, reverse=True)
        return tasks[:limit]

    async def task_counts(self) -> dict[str, int]:
        counts = dict(await self.store.task_counts())
        for reply in await self._gather(lambda stub: stub.GetTasks(
                pb.GetTasksRequest(caller=self.wire.hello(), counts=True, local_only=True),  # type: ignore[attr-defined]
                timeout=READ_TIMEOUT, metadata=self.wire.metadata())):  # type: ignore[attr-defined]
            for status, n in reply.counts.items():
                counts[status] = counts.get(status, 0) + int(n)
        return counts

    async def _gather(self, call: Any) -> list[Any]:
        peers = [p for p in self.live_peers(workers_only=True) if self.address_of(p.node_id)]
        if not peers:
            return []

        async def one(address: str) -> Any:
            try:
                return await call(self.wire.stub(address))  # type: ignore[attr-defined]
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                log.debug("grpc read from %s failed: %s", address, exc)
                return None
            except asyncio.CancelledError:
                if not closed_under_call():
                    raise
                return None  # the peer was declared dead mid-call: its channel closed
        replies = await asyncio.gather(*(one(self.address_of(p.node_id) or "") for p in peers))
        return [r for r in replies if r is not None]

    async def _ask_peers(self, request: pb.GetTasksRequest) -> list[Task]:
        request.caller.CopyFrom(self.wire.hello())  # type: ignore[attr-defined]
        replies = await self._gather(lambda stub: stub.GetTasks(request, timeout=READ_TIMEOUT,
                                                                metadata=self.wire.metadata()))  # type: ignore[attr-defined]
        out = []
        for reply in replies:
            for frame in reply.tasks:
                try:
                    out.append(self._task_of(frame))
                except (codec.CodecError, CorruptRecord, ValueError) as exc:
                    self.found_problem("refused_records", f"a task read from a peer: {exc}")
        return out

    async def _ask_peers_cancel(self, task_ids: Sequence[str]) -> dict[str, str]:
        request = pb.CancelRequest(caller=self.wire.hello(), task_ids=task_ids, local_only=True)  # type: ignore[attr-defined]
        out: dict[str, str] = {}
        for reply in await self._gather(lambda stub: stub.Cancel(request, timeout=READ_TIMEOUT,
                                                                 metadata=self.wire.metadata())):  # type: ignore[attr-defined]
            for task_id, outcome in reply.outcomes.items():
                if outcome != "missing":
                    out[task_id] = outcome
        return out

    async def _serve_get_tasks(self, request: pb.GetTasksRequest, context: grpc.aio.ServicerContext) -> Any:
        store = self.store
        if request.counts:
            counts = await store.task_counts() if request.local_only else await self.task_counts()
            return pb.GetTasksReply(counts={k: int(v) for k, v in counts.items()})
        try:
            status = TaskStatus(request.status) if request.status else None
        except ValueError:
            self.counters["refused_calls_bad_argument"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown task status {request.status[:40]!r} "
                                f"(one of {', '.join(s.value for s in TaskStatus)})")
        if request.task_ids:
            ids = list(request.task_ids)
            tasks = (await store.get_tasks(ids, request.with_attempts) if request.local_only
                     else await self.get_tasks(ids, request.with_attempts))
        else:
            limit = min(request.limit or 100, READ_LIMIT)
            tasks = (await store.list_tasks(status, limit, parent_id=request.parent_id or None) if request.local_only
                     else await self.list_tasks(status, limit, parent_id=request.parent_id or None))
        return pb.GetTasksReply(tasks=[self._task_frame(t) for t in tasks])

    async def _serve_cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> Any:
        ids = list(request.task_ids)
        out = await self._cancel_owned(ids) if request.local_only else await self.cancel(ids)
        return pb.CancelReply(outcomes=dict(zip(ids, out, strict=True)))

    # -- load -----------------------------------------------------------------------------------------------
    def _queued_counts(self) -> dict[str, int]:
        counts = {n.node_id: n.running + n.queued for n in self.live_peers(workers_only=True)}
        counts[self.node_id] = len(self._inbox) + len(self._held) + self._own_depth
        return counts

    async def leave(self, node: Any) -> None:
        """Copy every unfinished task to the backup as it stands now, so the backup takes over the present."""
        if not self._client_role:
            with contextlib.suppress(Exception):
                await self._confirm_ownership()
        await super().leave(node)  # type: ignore[safe-super]

    async def heartbeat(self, node: Any) -> None:
        await self._refresh_own_depth()
        await super().heartbeat(node)  # type: ignore[safe-super]

    async def _refresh_own_depth(self) -> None:
        with contextlib.suppress(Exception):
            row = await self.store._read(lambda c: c.execute(
                "SELECT count(*) FROM tasks WHERE node_id=? AND status IN ('assigned','running')",
                (self.node_id,)).fetchone())
            self._own_depth = int(row[0])
