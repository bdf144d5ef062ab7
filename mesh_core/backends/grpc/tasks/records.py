"""The records the parts of ``grpc_mesh`` tasks share (pure: no I/O): the limits more than one part reads,
the copies' table, a task as the plain fields its frame holds, the in-memory records of offers, outcomes and
copies under way, the Tasks envelope built from posted parts, and a move as it travels to its owner.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from .... import codec
from ....model import Task, TaskStatus
from ...contracts import Reassignment
from ...shared import CorruptRecord
from .._generated import mesh_pb2 as pb

BACKUP_TIMEOUT = 2.0  # an owner waits this long for its backup's copy before acknowledging anyway (counted)
FEED_KEPT = 100_000  # result feed entries a client keeps for its cursors
DONE_KEPT = 50_000  # attempts a worker remembers having finished (re-offers of them are ignored)
INBOUND_LIMIT = 1024  # envelopes from one peer waiting to be handled; past it they are dropped (counted)
IN_CHUNK = 500  # task ids per SQL ``IN (...)`` list (SQLite's limit on variables is far above it)
MAX_DELAY = 7 * 86400.0  # a hold-back (offer, submission, move) longer than this, or not a number, is refused
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
            "progress": task.progress, "progress_message": task.progress_message,
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


def copy_header(frame: bytes, limits: codec.CodecLimits) -> tuple[str, TaskStatus]:
    """(task id, status) of a task copy's frame: what a backup checks and files a copy by. The whole record is
    read only if it is ever taken over (then an unreadable one is refused and counted, as here)."""
    fields = codec.decode(frame, limits)
    if not isinstance(fields, dict):
        raise CorruptRecord("a task record that is not a map")
    task_id, status = fields.get("task_id"), fields.get("status")
    if not isinstance(task_id, str) or not task_id:
        raise CorruptRecord("a task record without a task id")
    try:
        return task_id, TaskStatus(str(status))
    except ValueError:
        raise CorruptRecord(f"task {task_id[:40]!r}: status {str(status)[:20]!r} unknown") from None


def _final_of(frame: bytes, limits: codec.CodecLimits) -> int:
    """``final`` of a copy kept before the column was: read from its record (unreadable: kept, as unfinished)."""
    try:
        return _final_value(copy_header(frame, limits)[1])
    except (codec.CodecError, CorruptRecord):
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



# One copy as a backup received it: (task id, revision, record, deleted, provisional, confirmed, final).
CopyRow = tuple[str, int, bytes, bool, bool, bool, int]


@dataclass
class CopyPlan:
    """What a batch of copies from one owner does to the backup's tables (``plan_copies``)."""

    refused: set[str] = field(default_factory=set)  # tasks this node owns itself (it took them over): not kept
    added: int = 0  # copies added, less those removed
    provisional_put: list[tuple[str, int, bytes]] = field(default_factory=list)  # (task, revision, record)
    provisional_drop: list[tuple[str, int]] = field(default_factory=list)  # (task, revision)
    backups_put: list[tuple[str, int, bytes, int]] = field(default_factory=list)  # (task, revision, record, final)
    backups_drop: list[str] = field(default_factory=list)


def plan_copies(rows: list[CopyRow], owned: set[str], provisional: dict[str, dict[int, bytes]],
                held: dict[str, int]) -> CopyPlan:
    """The writes that keep one owner's copies, in the order they came, given what the backup holds of their
    tasks now: ``owned`` (ids in its own tasks), ``provisional`` (id → revision → record in
    ``grpc_provisional``) and ``held`` (id → revision in ``grpc_backups``). Pure: the caller reads those in one
    query each and applies the plan in the same transaction.

    Per copy: a dropped provisional one is removed; a confirmed one becomes a copy (when its provisional one is
    still there); a task this node owns is refused; a provisional one is kept apart; a copy supersedes older
    provisional ones and is added, replaced by a newer revision, or removed (``deleted``)."""
    plan = CopyPlan()
    prov = {t: dict(revs) for t, revs in provisional.items()}
    backups: dict[str, tuple[int, bytes, int] | None] = {}  # id → its copy as this batch leaves it (None: none)
    for task_id, revision, record, deleted, is_provisional, confirmed, final in rows:
        waiting = prov.setdefault(task_id, {})
        if is_provisional and deleted:
            waiting.pop(revision, None)
            continue
        if confirmed:
            kept = waiting.pop(revision, None)
            if kept is None:  # refused when it came, or replaced by a later copy already
                continue
            record, final = kept, 0  # a task just submitted: unfinished
        if task_id in owned:
            plan.refused.add(task_id)
            continue
        if is_provisional and not confirmed:
            waiting[revision] = record
            continue
        for older in [r for r in waiting if r < revision]:  # superseded by this copy (one lost on the way)
            del waiting[older]
        if task_id in backups:
            current = backups[task_id]
            now = current[0] if current is not None else None
        else:
            now = held.get(task_id)
        if deleted:
            if now is not None:
                backups[task_id] = None
                plan.added -= 1
        elif now is None:
            backups[task_id] = (revision, record, final)
            plan.added += 1
        elif revision > now:
            backups[task_id] = (revision, record, final)
    for task_id, revs in prov.items():
        before = provisional.get(task_id, {})
        plan.provisional_drop += [(task_id, r) for r in before if r not in revs]
        plan.provisional_put += [(task_id, r, rec) for r, rec in revs.items() if before.get(r) is not rec]
    for task_id, copy in backups.items():
        if copy is None:
            plan.backups_drop.append(task_id)
        else:
            plan.backups_put.append((task_id, *copy))
    return plan
