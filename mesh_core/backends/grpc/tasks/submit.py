"""``grpc_mesh`` tasks: submitting, and a client's side of it.

A worker's own submissions are its own; a client owns nothing: it hands each routed task to the worker it routed it
to (``Submission``), which owns it and usually runs it itself, so that path costs no offer at all.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .... import codec
from ....errors import BackendUnavailable
from ....model import LIVE, NodeStatus, TaskStatus
from ...contracts import Assignment, Enqueued, Finished, Topic
from ...shared import FINISHED_FIELDS, CorruptRecord, shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .owner import TasksOwner
from .records import _GONE, INBOUND_LIMIT, _delay_ok

SUBMIT_TIMEOUT = 10.0  # a client waits this long for a worker to store its submission


class TasksSubmit(TasksOwner):
    """``enqueue``: a worker stores its own submissions (``_enqueue_owned``); a client hands each to the
    worker it was routed to (``_hand_to_workers``, sent again to the successor of one that went before it
    answered), which takes it (``_take_submissions``). The client keeps the outcomes pushed to it
    (``_take_finished``) for ``finished_for``."""

    async def enqueue(self, assignments: Sequence[Assignment]) -> list[Enqueued]:
        if self._client_role:
            return await self._hand_to_workers(assignments)
        return await self._enqueue_owned(assignments)

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
        task_ids = {index: a.task.task_id for index, a in enumerate(assignments)}
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
                capacity=a.capacity, delay_seconds=a.delay, awaited=a.awaited)
            futures[index] = self._submit_to(target, submissions[index], a.task.task_id)
            targets[index] = target
        try:
            answers = await self._wait_all_or_resubmit(futures, targets, submissions, task_ids)
        finally:
            ended = {task_id for task_id in task_ids.values() if task_id in self._ended_unanswered}
            self._ended_unanswered -= ended
            for task_id in task_ids.values():
                self._answering.pop(task_id, None)
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
            # kept until it ends (unless its outcome came first): handed on if its owner goes before it has a copy
            if outcome == Enqueued.STORED and a.task.task_id not in ended:
                self._submitted[a.task.task_id] = (targets[index], frames[index])
            out.append(Enqueued(outcome))
        return out

    def _submit_to(self, target: str, submission: pb.Submission, task_id: str) -> asyncio.Future[Any]:
        submission.request_id = next(self._requests)
        future = self._expect(("submit", submission.request_id), target)
        self._submit_deadlines[submission.request_id] = time.monotonic() + SUBMIT_TIMEOUT
        self._answering[task_id] = (submission.request_id, target)  # its outcome, should it come first, answers it
        self._post(target, "submits", (submission,))  # with the other submissions of this loop pass
        return future

    async def _wait_all_or_resubmit(self, futures: dict[int, asyncio.Future[Any]], targets: dict[int, str],
                                    submissions: dict[int, pb.Submission], task_ids: dict[int, str]
                                    ) -> dict[int, Any]:
        while True:
            pending = [f for f in futures.values() if not f.done()]
            if pending:
                # an answer, ``_GONE`` from ``_member_change`` when the target dies or leaves, or None from
                # ``_expire_submissions`` past SUBMIT_TIMEOUT: no polling, and no timer per submission (one each, at
                # thousands a second, filled the loop's timer heap with cancelled ones for ten seconds)
                await asyncio.wait(pending)
            if not self._resubmit_gone(futures, targets, submissions, task_ids):
                break
        return await self._wait_all(futures, 0)

    def _resubmit_gone(self, futures: dict[int, asyncio.Future[Any]], targets: dict[int, str],
                       submissions: dict[int, pb.Submission], task_ids: dict[int, str]) -> int:
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
            futures[index] = self._submit_to(successor, submission, task_ids[index])
            targets[index] = successor
            self.counters["tasks_resubmitted"] += 1
            resent += 1
        return resent

    def _any_worker(self) -> str | None:
        """The worker to hold a task for the pending list: the least loaded active one (a suspect one, which
        may not answer, only when no other is left)."""
        peers = self.live_peers(workers_only=True)
        if not peers:
            return None
        return min(peers, key=lambda n: (self.status_of(n.node_id) is not NodeStatus.ACTIVE,
                                         (n.running + n.queued) / max(1, n.capacity))).node_id

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
        assignments: list[tuple[int, Assignment]] = []
        answers: list[pb.SubmissionResult] = []
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
                                                           sub.capacity, max(0.0, sub.delay_seconds), sub.awaited)))
        if answers:
            self._send_to(peer.node_id, pb.TaskMessage(submit_results=answers))
        # Answered apart: a submission its client waits on may be answered up to AWAITED_COPY_WINDOW later
        # (with its outcome), and must not hold up the others that came in the same envelope.
        await asyncio.gather(*(self._store_submissions(peer, group) for group in (
            [(r, a) for r, a in assignments if not a.awaited], [(r, a) for r, a in assignments if a.awaited]) if group))

    async def _store_submissions(self, peer: Peer, assignments: Sequence[tuple[int, Assignment]]) -> None:
        """Store and copy a client's submissions (``_enqueue_owned``), then answer each."""
        try:
            outcomes = await self._enqueue_owned([a for _, a in assignments], ahead=True)
            answers = [pb.SubmissionResult(request_id=r, outcome=int(o))
                       for (r, _), o in zip(assignments, outcomes, strict=True)]
        except Exception as exc:
            answers = [pb.SubmissionResult(request_id=r, outcome=0, error=str(exc) or type(exc).__name__)
                       for r, _ in assignments]
        self._send_to(peer.node_id, pb.TaskMessage(submit_results=answers))

    def _take_finished(self, peer: Peer, entries: Sequence[pb.FinishedTask]) -> None:
        """Client: outcomes pushed by owners (or forwarded by their backups, naming the owner), kept for
        ``finished_for``; one from an owner this client handed the task away from (``_rehome``) is refused, before
        or after the task ended, so a task ends once for its submitter. Only an owner that asked (``ack``: no
        backup holds the outcome) is answered; nobody waits for the others' acks, and each would cost a send."""
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
                if entry.ack:
                    acks.append(pb.FinishedAck(task_id=finished.task_id, refused=True))
                continue
            if entry.ack:
                acks.append(pb.FinishedAck(task_id=finished.task_id))
            self._answered_by_outcome(finished.task_id, entry.owner_id or peer.node_id)
            self._feed_seq += 1
            self._feed.append((self._feed_seq, finished))
            self._submitted.pop(finished.task_id, None)
        if acks:
            self._send_to(peer.node_id, pb.TaskMessage(finished_acks=acks))
        self._deliver(Topic.RESULTS)

    def _answered_by_outcome(self, task_id: str, owner_id: str) -> None:
        """An outcome of a task whose submission the client still waits to hear of, from the owner it was handed
        to (or that owner's backup, which forwards only what it holds a copy of): the task was stored, by two
        nodes, so that is the answer (``STORED``), one hop sooner than the owner's own (ignored when it comes)."""
        asked = self._answering.pop(task_id, None)
        if asked is None:  # not waited for
            return
        self._ended_unanswered.add(task_id)  # whoever answers: the submission ended (``_hand_to_workers``)
        if asked[1] != owner_id:  # handed to another owner since: that one answers
            return
        key = ("submit", asked[0])
        self._waiting_on.pop(key, None)
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result((int(Enqueued.STORED), ""))
            self.counters["submissions_answered_by_outcome"] += 1

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
