"""``grpc_mesh`` tasks: running tasks offered by their owners.

**Worker.** A task routed to another worker is offered to it over the Tasks stream (``TaskOffer``, the
task with its attempt number, held back by any retry delay). The worker keeps offers in a bounded inbox
(a full one refuses, and the owner puts the task back on its pending list for the sweeper to route
again); ``claim`` takes due offers by priority and accepts them (``TaskAccept``), which starts the lease at
the owner. Leases are renewed with the worker's heartbeats (``LeaseRenewal``: the answer names the tasks
still held; any other was taken away). The result goes back to the owner with the attempt number as
fencing token; the owner records it only while that attempt holds the task (exactly once) and says so
(``ResultAck``). An offer not accepted within a few seconds is offered again (a lost message is not a lost
task).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .... import codec
from ....coalesce import Coalescer
from ....model import LIVE, Task, TaskProgress, TaskStatus
from ...contracts import Completion, Reassignment, Topic
from ...shared import CorruptRecord, shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .reads import TasksReads
from .records import _OUTCOMES, DONE_KEPT, _delay_ok, _move_fields, _Offer

RESULT_TIMEOUT = 10.0  # a worker waits this long for the owner to record a result
RENEW_TIMEOUT = 2.0  # … and to answer a lease renewal (no answer: the tasks are kept, not abandoned)
RENEWALS_KEPT = 1000  # renewals whose answer may still come


class TasksWorker(TasksReads):
    """The worker's side: the inbox of offers (``_take_offers``), ``claim`` and ``next_due`` over its own
    tasks and the offers, lease renewals with the owners (``renew``), and ``complete``, ``move`` and
    ``cancel_requests``, which act here for its own tasks and ask the owner for the attempts it runs for
    another."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The outcomes recorded in one event-loop pass (each finished task records its own) are recorded as one
        # batch: of own tasks, one store write, one copy to the backup and one wait for it, instead of one of each
        # per task; of attempts run for other owners, one message to each and one wait for the answers.
        self._completing_owned: Coalescer[Completion, bool] = Coalescer(self._complete_owned, overlap=True)
        self._completing_held: Coalescer[Completion, bool] = Coalescer(self._complete_held, overlap=True)

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

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        def known(task_id: str) -> Task | None:
            return self._owned.get(task_id) if task_id in self._claimable else None
        tasks = await self.store.claim(node_id, limit, lease_seconds, known if self._claimable else None) \
            if limit > 0 else []
        for task in tasks:
            self._claimable.pop(task.task_id, None)
        for task in tasks:
            if task.started_at is not None:
                self._started(task.task_id, task.attempt, node_id, task.started_at)
        room = limit - len(tasks)
        if room > 0 and self._inbox:
            tasks += self._accept_due(node_id, room)
        self.store.own_slots(max(0, limit - len(tasks)), lease_seconds)  # what an enqueue may start here
        return tasks

    def _accept_due(self, node_id: str, room: int) -> list[Task]:
        """Up to ``room`` due offers, by priority, accepted (their owners told, their leases start there)."""
        now = time.monotonic()
        due = sorted((o for o in self._inbox.values() if o.due_at <= now),
                     key=lambda o: (-int(o.task.priority), o.arrival))[:room]
        accepts: dict[str, list[pb.TaskAccept]] = {}
        wall = time.time()
        tasks = []
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

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float,
                    progress: Mapping[str, TaskProgress] | None = None) -> set[str]:
        reports = progress or {}
        local = [(t, a) for t, a in held if t not in self._held]
        remote: dict[str, list[pb.HeldAttempt]] = {}
        for task_id, attempt in held:
            holder = self._held.get(task_id)
            if holder is not None and holder[1] == attempt:
                part = pb.HeldAttempt(task_id=task_id, attempt=attempt)
                report = reports.get(task_id)
                if report is not None:
                    part.progress, part.progress_message = report.fraction, report.message
                remote.setdefault(holder[0], []).append(part)
        kept = await self.store.renew(node_id, local, lease_seconds, reports) if local else set()
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
            # own tasks are recorded here; attempts run for another owner are sent to it
            own = [c for c in completions if c.task_id not in self._held]
            held = [c for c in completions if c.task_id in self._held]
            parts = [(part, batch) for part, batch in ((own, self._completing_owned), (held, self._completing_held))
                     if part]
            # both end before ``_recording`` lets go of their attempts, even when one fails (one part, as nearly
            # always: a worker records one outcome per call, awaited as it is, with no task made to gather it)
            if len(parts) == 1:
                part, batch = parts[0]
                answers: list[Any] = [await batch(part)]
            else:
                answers = await asyncio.gather(*(batch(part) for part, batch in parts), return_exceptions=True)
            recorded: dict[tuple[str, int], bool] = {}
            for (part, _), answer in zip(parts, answers, strict=True):
                if isinstance(answer, BaseException):
                    raise answer
                recorded.update(((c.task_id, c.attempt), ok) for c, ok in zip(part, answer, strict=True))
            return [recorded.get((c.task_id, c.attempt), False) for c in completions]
        finally:
            self._recording -= keys

    async def _complete_held(self, completions: Sequence[Completion]) -> list[bool]:
        """Send outcomes of attempts run for other owners to them; each is True once its owner recorded it."""
        recorded: dict[tuple[str, int], bool] = {}
        futures: dict[tuple[str, int], asyncio.Future[Any]] = {}
        by_owner: dict[str, list[pb.TaskResult]] = {}
        for c in completions:
            held = self._held.get(c.task_id)
            key = (c.task_id, c.attempt)
            if held is None:  # handed back meanwhile (a move): not this node's to say
                recorded[key] = False
                continue
            owner, attempt = held
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

    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        out = await self.store.cancel_requests(node_id)
        out += [key for key in self._cancels if self._held.get(key[0], ("", -1))[1] == key[1]]
        return out

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
