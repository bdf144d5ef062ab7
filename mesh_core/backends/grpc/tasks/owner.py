"""``grpc_mesh`` tasks: what an owner does with the tasks it owns.

**Owner.** The worker node that accepts a submission owns the task: it stores it in its private SQLite file (a
restarted owner still knows its tasks) and copies it to one backup peer (the next live worker after it by node id)
before the submission is acknowledged. The owner applies every fenced move on its own store (the same statements as
``sqlite_local``), and its sweeper sweeps only what it owns (every node sweeps: ``sweeps_own_tasks``).

**Results.** How each task ended reaches its submitter when that is another node (``FinishedTask``): a
client's ``finished_for`` reads those. The outcome counts once the backup holds its copy, and that copy
carries the submitter's entry: the backup forwards it as soon as it has stored it (naming the owner), so the
submitter hears only of outcomes two nodes hold, one hop sooner than from the owner after the ack. The owner
tells the submitter itself when the backup could not; when no backup answered, it asks the submitter to
acknowledge, and that acknowledgement is the second copy. A worker's own submissions end in its own store's
feed. An owner keeps its unfinished tasks in memory as stored through their first attempt, so an outcome's
copy is built from that and the completion with no read of the store (anything else that moves a task drops
it from memory, and its outcome is read back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from .... import codec
from ....model import LIVE, Attempt, NodeStatus, Task, TaskStatus
from ...contracts import Assignment, Completion, Enqueued, Reassignment, Topic
from ...shared import shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .records import _FINAL, _NOBODY, _STATUSES, BACKUP_TIMEOUT, DONE_KEPT, _Ended, _move_of, _Sent, task_fields
from .takeover import TasksTakeover

REOFFER_SECONDS = 2.0  # an offer not accepted this long is offered again
# A client's submission that this node runs itself at once waits this long for its outcome, whose copy is then the
# task's first (one copy and one write on the backup, where a provisional copy, its confirmation and the outcome's
# took two or three); one not ended by then is copied as stored. Its submitter hears of the outcome from the backup
# as soon as the backup holds it, which answers the submission too (``TasksSubmit._take_finished``).
FIRST_COPY_WINDOW = 0.005
# … and this long when its submitter waits for the outcome anyway (``run_task``): the submission's answer then costs
# the caller nothing, and a task queued here behind others (a busy node) still gets one copy instead of two. Well
# below the client's SUBMIT_TIMEOUT; until the copy, the client keeps the task and hands it on if this node goes.
AWAITED_COPY_WINDOW = 1.0
OWNED_KEPT = 20_000  # unfinished own tasks kept in memory as stored, so their outcome needs no read of the store


def _as_stored(assignments: Sequence[Assignment]) -> list[Task]:
    """The records of ``assignments`` as ``enqueue`` stores them (what ``_enqueue_batch`` writes of each)."""
    return [replace(a.task, status=TaskStatus.ASSIGNED if a.node_id else TaskStatus.PENDING, node_id=a.node_id,
                    node_name=a.node_name, why=a.why, attempt=1, failures=0, started_at=None, finished_at=None,
                    lease_expires=None, not_before=0.0, result=None, error=None, attempts=[])
            for a in assignments]


class TasksOwner(TasksTakeover):
    """The tasks this node owns: storing them (``_enqueue_owned``), offering them to the workers they are
    routed to (again until accepted), starting the accepted attempts, recording outcomes fenced by attempt
    (``_complete_owned``, ``_record_results``) and copying them before the submitter hears
    (``_after_final``), and the fenced moves, cancels and replays applied on its own store."""

    async def _enqueue_owned(self, assignments: Sequence[Assignment], *, ahead: bool = False) -> list[Enqueued]:
        """Store tasks this node owns from now on and copy them to the backup before answering.

        With ``ahead`` (a client's submissions: the client keeps each task it is told is stored, and hands it on
        if this node goes, ``_rehome``), the copies go out as provisional while this node stores the tasks, so the
        two writes overlap; then each copy is confirmed (stored here) or dropped (refused here: ``EXISTS`` or
        ``FULL``). A provisional copy is never taken over, so a refused submission never gets a second owner.
        A task routed to this node itself with no hold-back gets no provisional copy: its first copy is its
        outcome's, when it ends within ``FIRST_COPY_WINDOW`` (``AWAITED_COPY_WINDOW`` when its submitter waits for
        the outcome), else the task as stored (``_first_copies``)."""
        # the records as the store will hold them (what ``_enqueue_batch`` writes of each), kept before the write:
        # this node's claim loop may take one as soon as it is committed
        routed = _as_stored(assignments)
        kept = [t for t in routed if len(self._owned) < OWNED_KEPT and self._owned.setdefault(t.task_id, t) is t]
        if ahead:  # decoded from the submission here: this node's own records
            for task in kept:
                if task.node_id == self.node_id:
                    self._claimable[task.task_id] = None
            while len(self._claimable) > OWNED_KEPT:
                self._claimable.popitem(last=False)
        unbacked: set[str] = set()
        # registered before the write: this node may run the task and record its outcome before the write returns
        quick = {t.task_id: asyncio.get_running_loop().create_future() for a, t in zip(assignments, routed, strict=True)
                 if ahead and a.node_id == self.node_id and not a.delay and t.task_id not in self._first_copy}
        self._first_copy.update(quick)
        copying = self._send_copies([t for t in routed if t.task_id not in quick], unbacked,
                                    provisional=True) if ahead else None
        try:
            outcomes = await self.store.enqueue(assignments)
        except BaseException:
            self._forget_kept(kept)
            self._forget_first_copies(quick)
            if copying is not None:
                self._settle_provisional(copying, set())
            raise
        stored = [(a, t) for a, t, o in zip(assignments, routed, outcomes, strict=True) if o is Enqueued.STORED]
        self._forget_kept([t for t, o in zip(routed, outcomes, strict=True) if o is not Enqueued.STORED])
        self._forget_first_copies({t.task_id: quick[t.task_id] for t, o in zip(routed, outcomes, strict=True)
                                   if o is not Enqueued.STORED and t.task_id in quick})
        if copying is not None:
            self._settle_provisional(copying, {t.task_id for _, t in stored})
        if stored:
            if copying is not None:
                await asyncio.gather(self._copied(copying, unbacked),
                                     self._first_copies([a for a, _ in stored if a.task.task_id in quick], quick,
                                                        unbacked))
            else:
                await self._back_up([t for _, t in stored])
            for a, task in stored:
                if a.node_id and a.node_id != self.node_id:
                    self._offer(a.node_id, task, a.delay)
        return outcomes

    async def _first_copies(self, stored: Sequence[Assignment], waits: dict[str, asyncio.Future[None]],
                            unbacked: set[str]) -> None:
        """The first copies of tasks this node runs itself (see ``_enqueue_owned``): their outcomes', copied by
        ``_after_final``, for those that end within the window (``AWAITED_COPY_WINDOW`` when every submitter
        waits for its outcome: ``TasksSubmit._take_submissions`` stores those apart; else ``FIRST_COPY_WINDOW``);
        the others as the enqueue stored them (as a provisional copy would have been). Returns once the backup
        answered for each (or the copy timed out, counted as for any copy)."""
        if not stored:
            return
        ids = [a.task.task_id for a in stored]
        window = AWAITED_COPY_WINDOW if all(a.awaited for a in stored) else FIRST_COPY_WINDOW
        await asyncio.wait([waits[task_id] for task_id in ids], timeout=window)
        late = [a for a in stored if self._first_copy.get(a.task.task_id) is waits[a.task.task_id]]
        if late:  # not ended yet (any later copy, the outcome's too, has a higher revision)
            self._forget_first_copies({a.task.task_id: waits[a.task.task_id] for a in late})
            self.counters["first_copies_as_stored"] += len(late)
            await self._back_up(_as_stored(late), unbacked=unbacked)
        under_way = [waits[task_id] for task_id in ids if not waits[task_id].done()]
        if under_way:  # the outcome's copy is on its way: ``_after_final`` resolves these once it is answered
            await asyncio.wait(under_way)

    def _forget_first_copies(self, waits: dict[str, asyncio.Future[None]]) -> None:
        """No first copy is awaited for these any more (resolved, so nothing waits on them for ever)."""
        for task_id, future in waits.items():
            if self._first_copy.get(task_id) is future:
                del self._first_copy[task_id]
            if not future.done():
                future.set_result(None)

    def _forget_kept(self, tasks: Iterable[Task]) -> None:
        """Forget these records kept in memory (only these: another record of the same id stays)."""
        for task in tasks:
            if self._owned.get(task.task_id) is task:
                del self._owned[task.task_id]

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
            if self._taken_from:
                self._tell_superseded_again()
            now = time.monotonic()
            if self._submit_deadlines:
                self._expire_submissions(now)
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
        # the submissions waiting for this copy as their first (``_first_copies``) are answered once it is
        firsts = {e.task_id: self._first_copy[e.task_id] for e in ended if e.task_id in self._first_copy}
        for task_id in firsts:
            del self._first_copy[task_id]
        try:
            lost = await self._back_up(ended, unbacked=unbacked, forwarded=forwarded)
        finally:
            self._forget_first_copies(firsts)
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
                entry = pb.FinishedTask(entry=codec.encode(e.entry(), self.limits))
                by_submitter.setdefault(e.submitter_id, []).append(entry)
                if e.task_id in unbacked and self.status_of(e.submitter_id) not in (None, NodeStatus.LEFT):
                    # no backup holds it: the submitter's copy is the other one (one held dead here may be alive
                    # and have handed it on; one that left, or that this node cannot reach, holds none)
                    asked[e.task_id] = self._expect(("finished", e.task_id), e.submitter_id)
                    entry.ack = True
        for submitter, entries in by_submitter.items():
            self._send_to(submitter, pb.TaskMessage(finished=entries))
        if asked:
            answers = await self._wait_all(asked, BACKUP_TIMEOUT)
            refused = {task_id for task_id, took in answers.items() if took is False}
            if refused:
                await self._drop_owned(refused)
                lost |= refused
        return lost

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

    async def _replay_owned(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        self._owned.pop(task_id, None)
        ok = await self.store.replay(task_id, node_id, node_name, why)
        if ok and node_id and node_id != self.node_id:
            await self._offer_moved([task_id], {})
        if ok:
            await self._back_up(await self.store.get_tasks([task_id], with_attempts=True), wait=False)
        return ok

    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        return await self.store.stranded(dead_nodes, now)
