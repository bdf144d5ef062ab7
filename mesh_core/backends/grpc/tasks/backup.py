"""``grpc_mesh`` tasks: an owner's copies of its tasks on its backup peer, and the backup's side.

Every task an owner stores, and every outcome it records, is copied to one backup peer (the next live
worker after it by node id) before it counts.

A client's submission is copied while the owner stores it (the two writes overlap): that copy is provisional, kept
apart by the backup and never taken over, until the owner confirms it (it stored the task) or drops it (it answered
``EXISTS`` or ``FULL``), both posted as soon as its own write is done, so the confirmation is queued to the backup
no later than the submitter's answer (which also waits for the backup's acks of the provisional copies): a one-shot
client that exits at once leaves its task with two holders unless the owner dies between those two writes and never
comes back. A submission the owner runs itself at once gets no provisional copy: its first copy is its outcome's when
it ends within ``owner.FIRST_COPY_WINDOW`` (``AWAITED_COPY_WINDOW`` when its submitter waits for the outcome anyway:
``run_task``), one copy and one write here instead of two or three, else the task as stored; the submitter is answered
only after that copy either way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from .... import codec
from ....model import LIVE, NodeStatus, Task
from ...shared import CorruptRecord, shortened
from .._generated import mesh_pb2 as pb
from ..wire import Peer
from .base import TasksBase
from .records import _FINAL, BACKUP_TIMEOUT, IN_CHUNK, CopyRow, _Copying, _Ended, _final_value, copy_header, plan_copies


class TasksCopies(TasksBase):
    """Copies: the owner sends them (``_back_up``, ``_send_copies``: posted with the other copies of the
    loop pass), settles provisional ones (``_settle_provisional``), waits for the answers (``_copied``) and
    drops the tasks another node owns now (``_drop_owned``); the backup keeps them in ``grpc_backups`` (and
    ``grpc_provisional``) and forwards outcomes to their submitters (``_keep_backups``)."""

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
        backup = self._backup_peer()  # this node's backup peer now, for every task without a live one
        for task in tasks:
            peer = self._backup_of.get(task.task_id)
            if peer is None or self.status_of(peer) not in LIVE:
                peer = backup
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
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start:start + IN_CHUNK]
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
                    task_id, status = copy_header(r.record, self.limits)
                    if task_id != r.task_id:
                        raise ValueError(f"a copy of task {r.task_id[:40]!r} holding task {task_id[:40]!r}")
                    finals[r.task_id] = _final_value(status)
            except (codec.CodecError, CorruptRecord, ValueError) as exc:
                self.refuse("refused_records", peer.node_id, f"a task copy from {peer.name}: {shortened(str(exc))}")
                continue
            good.append(r)
        records = good
        if not records:
            return
        owner = peer.node_id
        rows: list[CopyRow] = [(r.task_id, r.revision, r.record, r.deleted, r.provisional, r.confirmed,
                                finals.get(r.task_id, -1)) for r in records]
        ids = sorted({r.task_id for r in records})

        def keep(conn: sqlite3.Connection) -> tuple[set[str], int]:
            """One transaction: what the backup holds of these tasks, read in one query per table, and the writes
            ``plan_copies`` makes of the copies (a task this node owns now is refused; a provisional copy is kept
            apart in ``grpc_provisional`` until its owner confirms or drops it); returns the refused ids and how
            many copies were added (negative: removed)."""
            owned: set[str] = set()
            provisional: dict[str, dict[int, bytes]] = {}
            held: dict[str, int] = {}
            for chunk in (ids[i:i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)):
                marks = ",".join("?" * len(chunk))
                owned.update(r[0] for r in conn.execute(f"SELECT task_id FROM tasks WHERE task_id IN ({marks})",
                                                        chunk))
                for task_id, revision, record in conn.execute(
                        f"SELECT task_id, revision, record FROM grpc_provisional WHERE owner_id=? AND task_id IN "
                        f"({marks})", (owner, *chunk)):
                    provisional.setdefault(task_id, {})[revision] = record
                held.update(conn.execute(f"SELECT task_id, revision FROM grpc_backups WHERE owner_id=? AND task_id IN "
                                         f"({marks})", (owner, *chunk)).fetchall())
            plan = plan_copies(rows, owned, provisional, held)
            conn.executemany("DELETE FROM grpc_provisional WHERE owner_id=? AND task_id=? AND revision=?",
                             [(owner, t, r) for t, r in plan.provisional_drop])
            conn.executemany("INSERT OR REPLACE INTO grpc_provisional (owner_id, task_id, revision, record) "
                             "VALUES (?,?,?,?)", [(owner, *p) for p in plan.provisional_put])
            conn.executemany("DELETE FROM grpc_backups WHERE owner_id=? AND task_id=?",
                             [(owner, t) for t in plan.backups_drop])
            conn.executemany("INSERT OR REPLACE INTO grpc_backups (owner_id, task_id, revision, record, final) "
                             "VALUES (?,?,?,?,?)", [(owner, *b) for b in plan.backups_put])
            return plan.refused, plan.added
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
        acks = [pb.BackupAck(task_id=r.task_id, revision=r.revision, refused=r.task_id in owned,
                             forwarded=bool(r.finished) and r.submitter_id in sent)
                for r in records if not (r.provisional and (r.confirmed or r.deleted))]  # nobody waits for those
        if acks:  # a batch of confirmations alone is answered by nothing (an empty envelope cost a send per task)
            self._send_to(peer.node_id, pb.TaskMessage(backup_acks=acks))
