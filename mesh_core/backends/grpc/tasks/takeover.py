"""``grpc_mesh`` tasks: taking a dead owner's tasks over.

**Takeover.** When SWIM declares an owner dead (or it leaves), each node that holds copies of its tasks
adopts them (a dead owner's once this node reaches half or more of the workers directly, so a node cut off
takes nothing over): unfinished ones come in on its pending list at their attempt number, and its sweeper routes
them again with a new attempt (so a result of the old attempt is refused); finished ones keep their
outcome, so a waiter asking the mesh is answered by the backup.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .... import codec
from ....membership import Change
from ....model import LIVE, NodeRole, NodeStatus, TaskStatus
from ...contracts import Topic
from ...shared import CorruptRecord, shortened
from .._generated import mesh_pb2 as pb
from ..core import log
from ..wire import Peer
from .backup import TasksCopies
from .records import _FINAL, _GONE, FEED_KEPT, IN_CHUNK

MAJORITY_TIMEOUT = 1.0  # seconds a worker has to answer this node before a takeover (``_reaches_majority``)
SUPERSEDED_RETELL_SECONDS = 2.0  # an owner back from the dead is told again of its taken-over tasks this often


class TasksTakeover(TasksCopies):
    """Membership changes and what they do to tasks: the takeover of a dead or departed owner's tasks from
    the copies held here (``_take_over``, ``_adopt``; a client's copies, ``_adopt_copies``), deferred until
    this node reaches a majority of the workers and not the owner (``_defer``, ``_settle_deferred``,
    ``_take_over_with_majority``); a client handing its submissions on (``_rehome``); copying again when the
    backup changes (``_rebackup``) or this node was declared dead (``_confirm_ownership``); telling an owner
    back from the dead which tasks are no longer its own."""

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
        worker_came = change.new is NodeStatus.ACTIVE and node.role is NodeRole.WORKER
        if worker_came or node.node_id in self._backup_of.values():
            # a new worker may be the backup now; a backup that went has to be replaced (a client is never one: each
            # one-shot command joining made every running task without a copy yet be copied, for nothing)
            self._rebackup_soon()
        if change.new not in (NodeStatus.DEAD, NodeStatus.LEFT):
            self._settle_deferred()
            if change.new is NodeStatus.ACTIVE:
                self._tell_superseded(node.node_id)
            return
        for key in [k for k, offer in self._inbox.items() if offer.owner_id == node.node_id]:
            del self._inbox[key]  # its tasks will be routed again by whoever takes them over
        if change.new is NodeStatus.DEAD and node.node_id not in self._deferred:
            # This side may be the one cut off: taking over here would give the task a second owner that the
            # rest of the mesh (which still hears the owner) never learns of. The takeover waits until this node
            # reaches a majority of the workers (``_settle_deferred``).
            self._deferred[node.node_id] = (node.name, 0)
            self.spawn(self._defer(node.node_id), "takeover-deferred")
        elif node.node_id not in self._deferred:  # it left: it said so itself
            self._start_take_over(node.node_id, node.name)
        self._settle_deferred()

    def _start_take_over(self, owner_id: str, owner_name: str) -> None:
        if owner_id not in self._adopted_from and not self._client_role:
            self._adopted_from.add(owner_id)
            self.spawn(self._take_over(owner_id, owner_name), "takeover")

    async def _reaches_majority(self) -> bool:
        """Whether this node reaches half or more of the workers it knows of (itself included, the ones that left
        not) now: each one held alive is asked directly (``_answers``), and only those that answer count.
        Its own view is not enough: cut off, it sees its peers go suspect and dead one by one, and while the
        one probed first is already dead the others may still be held alive."""
        swim_node = getattr(self, "swim", None)
        if swim_node is None:
            return True
        known, asked = 1, []
        for m in swim_node.members():
            if m.node_id == self.node_id or m.info.role is not NodeRole.WORKER:
                continue
            if m.status in LIVE:
                known += 1
                asked.append(m.node_id)
            elif m.status is NodeStatus.DEAD:
                known += 1
        if 2 * (1 + len(asked)) < known:
            return False
        answers = await asyncio.gather(*(self._answers(node_id) for node_id in asked))
        return 2 * (1 + sum(answers)) >= known

    async def _defer(self, owner_id: str) -> None:
        """Note how far the copies held from a dead owner go when its takeover is deferred (``_settle_deferred``)."""
        row = await self.store._read(lambda c: c.execute(
            "SELECT max(revision) FROM grpc_backups WHERE owner_id=?", (owner_id,)).fetchone())
        if owner_id in self._deferred:
            self._deferred[owner_id] = (self._deferred[owner_id][0], int(row[0] or 0))

    async def _drop_copies(self, owner_id: str, revision: int) -> None:
        await self.store._write(lambda c: c.execute(
            "DELETE FROM grpc_backups WHERE owner_id=? AND revision<=?", (owner_id, revision)))
        await self._count_copies()

    def _settle_deferred(self) -> None:
        """Deferred takeovers, looked at again: an owner alive again keeps its tasks (the copies it sent before
        it was lost are dropped here: it copied its work elsewhere meanwhile, and sends it again to its
        successor); one forgotten is taken over; those still dead are taken over once this node reaches a
        majority of the workers (``_take_over_with_majority``)."""
        dead = False
        for owner_id, (name, revision) in list(self._deferred.items()):
            status = self.status_of(owner_id)
            if status in LIVE:
                self._undefer(owner_id)
                self.counters["tasks_takeover_cancelled"] += 1
                self.spawn(self._drop_copies(owner_id, revision), "stale-copies")
            elif status is not NodeStatus.DEAD:
                self._undefer(owner_id)
                self._start_take_over(owner_id, name)
            else:
                dead = True
        if dead and not self._asking_majority:
            self._asking_majority = True
            self.spawn(self._take_over_with_majority(), "takeover-majority")

    async def _take_over_with_majority(self) -> None:
        """Take the deferred dead owners' tasks over if this node reaches a majority now and the owner itself does
        not answer it (a cut just healed: this node reaches the others again before SWIM holds the owner alive);
        else they wait (asked again on the next membership change, and every ``REOFFER_SECONDS / 2``)."""
        owners = [(owner_id, name) for owner_id, (name, _) in self._deferred.items()
                  if self.status_of(owner_id) is NodeStatus.DEAD]
        try:
            reached = await self._reaches_majority()
            # the owners are asked only then: a node in a minority asks nothing of the dead every pass
            answered = await asyncio.gather(*(self._answers(owner_id) for owner_id, _ in owners)) if reached \
                else [False] * len(owners)
        finally:
            self._asking_majority = False
        for (owner_id, name), alive in zip(owners, answered, strict=True):
            if owner_id not in self._deferred or self.status_of(owner_id) is not NodeStatus.DEAD or alive:
                continue  # alive again or forgotten meanwhile: ``_settle_deferred`` sees to it
            if reached:
                self._undefer(owner_id)
                self._start_take_over(owner_id, name)
            elif owner_id not in self._deferral_warned:
                self._deferral_warned.add(owner_id)
                self.counters["tasks_takeover_deferred"] += 1
                log.warning("%s declared dead while this node reaches a minority of the workers: its tasks are not "
                            "taken over here", name)

    def _undefer(self, owner_id: str) -> None:
        del self._deferred[owner_id]
        self._deferral_warned.discard(owner_id)

    async def _answers(self, node_id: str) -> bool:
        """Whether ``node_id`` answers this node directly within ``MAJORITY_TIMEOUT``."""
        address = self.address_of(node_id)
        return bool(address) and await self.wire.answers(address, MAJORITY_TIMEOUT)  # type: ignore[attr-defined]

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
        for start in range(0, len(ids), IN_CHUNK):
            await self._back_up(await self.store.get_tasks(ids[start:start + IN_CHUNK], with_attempts=True))

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
        for start in range(0, len(ids), IN_CHUNK):
            await self._back_up(await self.store.get_tasks(ids[start:start + IN_CHUNK], with_attempts=True), wait=False)
        # Outcomes recorded while no backup answered (cut off, or alone) go to the backup now, waiting for its
        # answer: one that took the task over while this node was lost refuses, and the task is dropped here.
        finals = self._unbacked_to_confirm()
        if finals:
            for start in range(0, len(finals), IN_CHUNK):
                await self._back_up(await self.store.get_tasks(finals[start:start + IN_CHUNK], with_attempts=True))

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
            for start in range(0, len(task_ids), IN_CHUNK):
                chunk = task_ids[start:start + IN_CHUNK]
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
        this node's now, so it drops its own records of them (finished ones too: one owner answers per task).
        Told again every ``SUPERSEDED_RETELL_SECONDS`` while it is live, until it says it let them go
        (``_released``): a notice lost on the way would leave the task with two owners of record."""
        taken = self._taken_from.get(owner_id)
        if not taken:
            return
        self._superseded_told[owner_id] = time.monotonic()
        self._send_to(owner_id, pb.TaskMessage(handovers=[
            pb.Handover(task_id=task_id, owner_id=self.node_id, previous_owner_id=owner_id,
                        why="taken over while you were declared dead") for task_id in taken]))

    def _tell_superseded_again(self) -> None:
        """Tell each live owner whose tasks this node took over, and that has not said it let them go, again (or
        for the first time: it came back before the takeover was done)."""
        now = time.monotonic()
        for owner_id in list(self._taken_from):
            told = self._superseded_told.get(owner_id)
            if self.status_of(owner_id) in LIVE and (told is None or now - told >= SUPERSEDED_RETELL_SECONDS):
                if told is not None:
                    self.counters["superseded_retold"] += 1
                self._tell_superseded(owner_id)

    def _released(self, peer: Peer, task_ids: Sequence[str]) -> None:
        """A previous owner let these tasks go: it is told of them no more."""
        taken = self._taken_from.get(peer.node_id)
        if taken is None:
            return
        for task_id in task_ids:
            taken.pop(task_id, None)
        if not taken:
            del self._taken_from[peer.node_id]
            self._superseded_told.pop(peer.node_id, None)

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
            taken = self._taken_from.setdefault(owner_id, {})
            taken.update(dict.fromkeys(t.task_id for t in tasks[:100_000 - len(taken)]))
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
