"""``sqlite_local`` tasks: store, claim, renew, complete and move them under fencing; read them back.

Leases (``lease_expires``) and retry times (``not_before``) are on the machine clock (``clock.machine_clock``),
one clock for every process on the machine, so a process whose wall clock is wrong neither takes running work
away nor holds a retry back; the node gives durations. Display times (started, finished) are wall clock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ... import codec
from ...model import Task, TaskProgress, TaskStatus
from ...tasks import TASK_MOVES, Move, check_target, sql_sources
from ..contracts import Assignment, Completion, Enqueued, Quarantined, Reassignment, Topic
from ..shared import (
    MAX_LIST_BYTES,
    MAX_TEXT_CHARS,
    STATUSES,
    TASK_FIELDS,
    Coalescer,
    attempts_from_rows,
    with_current_attempt,
)
from ..started import unanswered_after
from .clock import machine_clock
from .finishing import SqliteFinishing
from .quarantine import task_removal
from .started import (
    AGAIN_SQL,
    NEVER_RAN_SQL,
    START_BATCH_BYTES,
    START_MAX_BYTES,
    START_SQL,
    TASK_COLUMNS,
    datagrams,
    free_slots,
)
from .store import STARTED, bounded, fitting

# Fenced moves: each statement checks the source statuses that mesh_core.tasks.TASK_MOVES allows.
CLAIM_SQL = (
    "UPDATE tasks SET status='running', started_at=?, lease_expires=? WHERE seq IN ("
    f" SELECT seq FROM tasks WHERE node_id=? AND status IN ({sql_sources(Move.CLAIM)}) AND not_before<=?"
    f" ORDER BY priority DESC, seq LIMIT ?) RETURNING seq, {TASK_COLUMNS}")
COMPLETE_SQL = (
    "UPDATE tasks SET status=?, result=?, error=?, finished_at=?, lease_expires=NULL"
    f" WHERE task_id=? AND attempt=? AND node_id=? AND status IN ({sql_sources(Move.COMPLETE)})"
    " RETURNING submitter_id, node_name")
CANCELLED_SQL = (  # a task whose cancel was asked for ends cancelled instead of moving on
    "UPDATE tasks SET status='cancelled', finished_at=?, lease_expires=NULL,"
    " error=coalesce(?, 'cancelled') WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND cancel_requested=1 AND status IN ({sql_sources(Move.CANCELLED)}) RETURNING submitter_id")
REQUEUE_SQL = (
    "UPDATE tasks SET status='pending', node_id=NULL, node_name=NULL, why=?,"
    " attempt=attempt+?, failures=failures+?, not_before=?, lease_expires=NULL,"
    " started_at=NULL, progress=NULL, progress_message=NULL, error=coalesce(?, error)"
    " WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.REQUEUE)}) RETURNING submitter_id")
FINAL_SQL = (
    "UPDATE tasks SET status=?, error=?, finished_at=?, lease_expires=NULL,"
    " failures=failures+? WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.FINAL)}) RETURNING submitter_id")
REROUTE_SQL = (
    "UPDATE tasks SET status='assigned', node_id=?, node_name=?, why=?, attempt=attempt+?,"
    " failures=failures+?, not_before=?, lease_expires=NULL, started_at=NULL, progress=NULL,"
    " progress_message=NULL, error=coalesce(?, error) WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.REROUTE)}) RETURNING submitter_id")
REPLAY_SQL = (
    "UPDATE tasks SET status=?, node_id=?, node_name=?, why=?, attempt=attempt+1, failures=0,"
    " not_before=0, lease_expires=NULL, started_at=NULL, finished_at=NULL, result=NULL, error=NULL,"
    " progress=NULL, progress_message=NULL, cancel_requested=0"
    f" WHERE task_id=? AND status IN ({sql_sources(Move.REPLAY)})")
RENEW_SQL = "UPDATE tasks SET lease_expires=? WHERE task_id=? AND attempt=? AND node_id=? AND status='running'"
RENEW_PROGRESS_SQL = ("UPDATE tasks SET lease_expires=?, progress=?, progress_message=?"
                      " WHERE task_id=? AND attempt=? AND node_id=? AND status='running'")
# The sweeper moves tasks and never runs them: it reads no payload, result or context, and every other field
# bounded (a field over its limit makes the row corrupt), so a sweep of thousands of rows loads no huge value.
UNSWEPT = ("payload", "result", "context", "progress", "progress_message")
SWEEP_FIELDS = tuple(f for f in TASK_FIELDS if f not in UNSWEPT)
SWEEP_COLUMNS = bounded(SWEEP_FIELDS, {"why": MAX_TEXT_CHARS, "error": MAX_TEXT_CHARS, "preferred": MAX_LIST_BYTES,
                                       "required": MAX_LIST_BYTES}, whole=("task_id",))
NOT_BEFORE = TASK_FIELDS.index("not_before")
CANCEL_QUEUED_FROM = {s.value for s in TASK_MOVES[Move.CANCEL_QUEUED].sources}
CANCEL_REQUEST_FROM = {s.value for s in TASK_MOVES[Move.CANCEL_REQUEST].sources}


class SqliteTasks(SqliteFinishing):
    """The TaskTransport part of ``sqlite_local``: every task statement, each one transaction on the store (tasks
    started at enqueue: ``SqliteStarting``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._complete_stamped = Coalescer(self._complete_rows)

    async def _enqueue_batch(self, items: list[Assignment]) -> list[Enqueued]:
        limits = self.limits

        def rows() -> list[tuple[Any, ...]]:
            out = []
            for a in items:
                t = a.task
                out.append((
                    t.task_id, t.task_type, t.encoded_payload(limits), int(t.priority),
                    "assigned" if a.node_id else "pending", a.node_id, a.node_name, 1, 0, t.max_retries, t.timeout_s,
                    json.dumps([p.value for p in t.preferred_node_types]),
                    json.dumps(sorted(t.required_capabilities)), codec.pack(t.context), t.submitter_id, a.why,
                    t.submitted_at, a.delay, t.context.get("parent_id"), t.signature))
            return out

        prepared = rows()

        started: dict[str, list[Sequence[Any]]] = {}  # node → rows of the tasks started there
        granted_at = 0.0  # when, on the machine clock

        def insert(conn: sqlite3.Connection) -> list[Enqueued]:
            nonlocal granted_at
            started.clear()  # a retried transaction starts again
            now, clock = time.time(), machine_clock()
            granted_at = clock
            targets = sorted({a.node_id for a in items if a.node_id})
            marks = ",".join("?" * len(targets))
            depth: dict[str | None, int] = {}
            queued: dict[str, int] = {}
            for node, status, n in conn.execute(
                    f"SELECT node_id, status, count(*) FROM tasks WHERE status IN ('assigned','running')"
                    f" AND node_id IN ({marks}) GROUP BY node_id, status", targets):
                depth[node] = depth.get(node, 0) + n
                if status == "assigned":
                    queued[node] = n
            if any(a.node_id is None for a in items):
                depth[None] = conn.execute("SELECT count(*) FROM tasks WHERE status='pending'").fetchone()[0]
            free = free_slots(conn, targets, self._local, clock, depth, queued) if self.start_at_enqueue else {}
            free.update(self._own_room(targets, queued, clock))
            accepted = []
            for a, row in zip(items, prepared, strict=True):
                # a task stored already is EXISTS, full queue or not: looked up only when the queue is full (below,
                # ``INSERT OR IGNORE`` tells the two apart in the same statement)
                if depth.get(a.node_id, 0) >= a.capacity:
                    exists = conn.execute("SELECT 1 FROM tasks WHERE task_id=?", (a.task.task_id,)).fetchone()
                    accepted.append(Enqueued.EXISTS if exists else Enqueued.FULL)
                    continue
                delay = row[17]
                slot = free.get(a.node_id or "") if delay <= 0 else None
                weight = len(row[2] or b"") + len(row[13]) + 1024
                if slot and slot[0] > 0 and weight <= START_MAX_BYTES and slot[2] + weight <= START_BATCH_BYTES:
                    stored = conn.execute(START_SQL, (*row[:4], "running", *row[5:17], 0.0, *row[18:], now,
                                                      clock + slot[1])).fetchone()
                    if stored is not None:
                        slot[0] -= 1
                        slot[2] += weight
                        conn.execute("INSERT OR REPLACE INTO granted (task_id, node_id, attempt, at) VALUES (?,?,1,?)",
                                     (row[0], a.node_id, clock))
                        started.setdefault(a.node_id or "", []).append(stored)
                    ok = stored is not None
                else:
                    ok = bool(conn.execute(
                        "INSERT OR IGNORE INTO tasks (task_id, task_type, payload, priority, status, node_id,"
                        " node_name, attempt, failures, max_retries, timeout_s, preferred, required, context,"
                        " submitter_id, why, submitted_at, not_before, parent_id, signature)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (*row[:17], _due(clock, delay), *row[18:])).rowcount)
                if ok:
                    depth[a.node_id] = depth.get(a.node_id, 0) + 1
                accepted.append(Enqueued.STORED if ok else Enqueued.EXISTS)
            return accepted
        accepted = await self._write(insert)
        own_id = self._local.node_id if self._local else None
        for node_id, stored in started.items():
            if node_id == own_id:
                self._own_started(stored)
                continue
            for part in datagrams(stored):
                self._send_records(node_id, STARTED + codec.pack([granted_at, part]))
        self._signal((a.node_id for a, ok in zip(items, accepted, strict=True)
                      if ok and a.node_id and a.node_id not in started), Topic.TASKS)
        return accepted

    async def claim(self, node_id: str, limit: int, lease_seconds: float,
                    known: Callable[[str], Task | None] | None = None) -> list[Task]:
        """Start up to ``limit`` due tasks assigned to ``node_id``, by priority. ``known``: task id → its record as
        this store holds it, or None (a caller that just stored it): a claimed task found so with the same attempt
        and node is taken from it, not decoded again from its row."""
        self._started.lease = lease_seconds
        tasks, room = self._started.take(limit)
        if not room:
            return tasks
        ended: list[str] = []  # submitters of started tasks cancelled before they ran
        again_ids: set[str] = set()
        answered = self._started.answers()
        told: list[tuple[str, int]] = []

        def claim(conn: sqlite3.Connection) -> tuple[list[Task], list[Quarantined]]:
            now, clock = time.time(), machine_clock()
            again: list[Task] = []
            again_ids.clear()  # a run rolled back (the lock was busy) handed nothing
            starts = self.start_at_enqueue or self.start_own
            told.clear()  # a run rolled back told nothing
            if starts and clock >= self._lost_checked + unanswered_after(lease_seconds) / 2:
                # Started tasks left unanswered: looked for twice per unanswered_after at most, not on every claim.
                # The wake-ups this node took are answered first, so the look never takes them for lost (told
                # only here: the look itself drops every row older than it, answered or not).
                conn.executemany("DELETE FROM granted WHERE task_id=? AND node_id=? AND attempt=?",
                                 [(task_id, node_id, attempt) for task_id, attempt in answered])
                told[:] = answered
                self._lost_checked = clock
                unanswered = clock - unanswered_after(lease_seconds)
                if conn.execute("SELECT 1 FROM granted WHERE node_id=? AND at<? LIMIT 1",
                                (node_id, unanswered)).fetchone():
                    again = self._tasks(r[1:] for r in conn.execute(AGAIN_SQL, (clock + lease_seconds, node_id,
                                                                                unanswered, node_id)).fetchall())
                    ended[:] = [r[0] for r in conn.execute(NEVER_RAN_SQL, (now, node_id, unanswered, node_id))]
                    again_ids.update(t.task_id for t in again)
                    conn.execute("DELETE FROM granted WHERE node_id=? AND at<?", (node_id, unanswered))
            rows = conn.execute(CLAIM_SQL, (now, clock + lease_seconds, node_id, clock, room)).fetchall()
            if self.start_at_enqueue and len(rows) < room:
                self._say_slots(conn, node_id, room - len(rows), lease_seconds, clock)
            seqs = {r[1]: r[0] for r in rows}
            found = [(known(r[1]), r) for r in rows] if known is not None else []
            held = [(t, r) for t, r in found if t is not None and _as_stored(t, r)]
            held_ids = {r[1] for _, r in held}
            # an unreadable row leaves the inbox in this same transaction
            tasks = self._tasks(r[1:] for r in rows if r[1] not in held_ids)
            shift = now - clock  # to the reader's wall-clock frame, as ``_tasks`` does
            tasks += [replace(t, status=TaskStatus.RUNNING, started_at=now, lease_expires=r[20] + shift,
                              not_before=r[21] + shift if r[21] > 0 else 0.0, attempts=[], context=dict(t.context))
                      for t, r in held]
            tasks.sort(key=lambda t: (-t.priority, seqs[t.task_id]))
            return again + tasks, self._store_aside(conn, self.take_aside())
        claimed, moved = await self._write(claim)
        self._started.told(told)
        self.counted(moved)
        self._signal(ended, Topic.RESULTS)
        return tasks + self._started.handed_on(claimed, again_ids)

    async def start_offered(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float,
                            now: float | None = None) -> set[str]:
        """Start the named attempts that are assigned to ``node_id`` (a claim by id, whatever their ``not_before``:
        the peer-to-peer medium's worker accepted an offer); returns the ids started, stamped ``now`` (wall clock,
        default: the time of the write). Fenced like ``claim``."""
        def start(conn: sqlite3.Connection) -> set[str]:
            stamp, until = now if now is not None else time.time(), machine_clock() + lease_seconds
            started = set()
            for task_id, attempt in held:
                row = conn.execute(
                    "UPDATE tasks SET status='running', started_at=?, lease_expires=? WHERE task_id=? AND attempt=?"
                    f" AND node_id=? AND status IN ({sql_sources(Move.CLAIM)}) RETURNING node_name",
                    (stamp, until, task_id, attempt, node_id)).fetchone()
                if row is not None:
                    started.add(task_id)
            return started
        if not held:
            return set()
        return await self._write(start)

    async def adopt(self, tasks: Sequence[Task], lease_seconds: float) -> int:
        """Store task records taken over from another store (a dead owner's, copied here by it) as they are given;
        returns how many were new. A running one gets a fresh lease of ``lease_seconds`` (its holder renews it
        here, or it lapses and the task is routed again); an assigned or running one held by a dead node is moved
        on by the sweeper with a new attempt; the attempt under way is put on record. An id already stored is
        left alone."""
        limits = self.limits
        unfinished = {TaskStatus.ASSIGNED.value, TaskStatus.RUNNING.value}

        def insert(conn: sqlite3.Connection) -> int:
            added, now, clock = 0, time.time(), machine_clock()
            for t in tasks:
                status = t.status.value
                lease = clock + lease_seconds if status == TaskStatus.RUNNING.value else None
                result = codec.encode(t.result, limits) if t.result is not None else None
                cur = conn.execute(
                    "INSERT OR IGNORE INTO tasks (task_id, task_type, payload, priority, status, node_id, node_name,"
                    " attempt, failures, max_retries, timeout_s, preferred, required, context, submitter_id, why,"
                    " submitted_at, started_at, finished_at, lease_expires, not_before, result, error, parent_id,"
                    " signature, progress, progress_message) VALUES (" + ",".join("?" * 27) + ")",
                    (t.task_id, t.task_type, t.encoded_payload(limits), int(t.priority), status, t.node_id,
                     t.node_name, t.attempt, t.failures, t.max_retries, t.timeout_s,
                     json.dumps([p.value for p in t.preferred_node_types]), json.dumps(sorted(t.required_capabilities)),
                     codec.pack(t.context), t.submitter_id, t.why, t.submitted_at, t.started_at, t.finished_at, lease,
                     0.0, result, t.error, t.context.get("parent_id"), t.signature, t.progress, t.progress_message))
                if not cur.rowcount:
                    continue
                added += 1
                conn.executemany(
                    "INSERT OR IGNORE INTO attempts (task_id, attempt, node_id, node_name, started_at, finished_at,"
                    " error) VALUES (?,?,?,?,?,?,?)",
                    [(t.task_id, a.attempt, a.node_id, a.node_name, a.started_at, a.finished_at, a.error)
                     for a in t.attempts])
                if status in unfinished and t.node_id:  # the attempt under way is on record, to be moved on
                    conn.execute("INSERT OR IGNORE INTO attempts (task_id, attempt, node_id, node_name, started_at)"
                                 " VALUES (?,?,?,?,?)", (t.task_id, t.attempt, t.node_id, t.node_name,
                                                        t.started_at or now))
            return added
        return await self._write(insert, inline=False) if tasks else 0  # a takeover's batch: off the loop's thread

    async def next_due(self, node_id: str) -> float | None:
        """Seconds until the earliest ``not_before`` of tasks waiting for this node (backoff), if any; a row whose
        ``not_before`` is not a number (it would never come due) is quarantined."""
        due, bad, clock = await self._read(lambda c: (*c.execute(
            "SELECT min(not_before), max(typeof(not_before) NOT IN ('integer','real')) FROM tasks"
            " WHERE node_id=? AND status='assigned'", (node_id,)).fetchone(), machine_clock()))
        if bad:
            rows = await self._read(lambda c: c.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE node_id=? AND status='assigned'"
                " AND typeof(not_before) NOT IN ('integer','real')", (node_id,)).fetchall())
            for r in rows:
                self.set_aside("task", r[0], r, f"task {r[0]!r}: not_before {r[NOT_BEFORE]!r} is not a number",
                               task_removal(r[0]))
            await self._settle_aside()
        return max(0.0, float(due) - clock) if isinstance(due, int | float) else None

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float,
                    progress: Mapping[str, TaskProgress] | None = None) -> set[str]:
        reports = progress or {}

        def renew(conn: sqlite3.Connection) -> set[str]:
            until = machine_clock() + lease_seconds
            kept = set()
            for task_id, attempt in held:
                report = reports.get(task_id)
                if report is None:
                    cur = conn.execute(RENEW_SQL, (until, task_id, attempt, node_id))
                else:
                    cur = conn.execute(RENEW_PROGRESS_SQL, (until, report.fraction, report.message or None, task_id,
                                                            attempt, node_id))
                if cur.rowcount:
                    kept.add(task_id)
            return kept
        if not held:
            return set()
        return await self._write(renew)

    async def _complete_batch(self, items: list[Completion]) -> list[bool]:
        return [stamp is not None for stamp in await self._complete_rows(items)]

    async def complete_stamped(self, completions: Sequence[Completion]) -> list[float | None]:
        """``complete``, saying when each recorded outcome was stamped (its ``finished_at``; None: refused)."""
        for c in completions:
            check_target(Move.COMPLETE, c.status)
        return await self._complete_stamped(completions)

    async def _complete_rows(self, items: list[Completion]) -> list[float | None]:
        feed: dict[str, list[list[Any]]] = {}  # submitter → its new feed entries, sent after the commit
        submitters: set[str] = set()  # … and every submitter with a new entry (those not sent one: a bare wake-up)

        def record(conn: sqlite3.Connection) -> list[float | None]:
            feed.clear()  # a retried transaction starts again
            submitters.clear()
            now = time.time()
            done: list[float | None] = []
            for c in items:
                row = conn.execute(COMPLETE_SQL, (c.status.value, c.result_frame, c.error, now, c.task_id, c.attempt,
                                                  c.node_id)).fetchone()
                if row is not None:  # the attempt ended in the task's own fields: no record apart
                    submitter = row[0]
                    if submitter:
                        submitters.add(submitter)
                        if self._feeds_in_wakeups(submitter):
                            feed.setdefault(submitter, []).append(
                                self.feed_entry(*self._feed_place(conn, submitter), c, row[1], now))
                done.append(now if row is not None else None)
            return done
        done = await self._write(record)
        self._signal(self._send_feed(feed) | (submitters - feed.keys()), Topic.RESULTS)
        return done

    async def _move_batch(self, moves: Sequence[Reassignment]) -> list[bool]:
        def move(conn: sqlite3.Connection) -> tuple[list[bool], set[str], set[str]]:
            now, clock = time.time(), machine_clock()
            ok, targets, submitters = [], set(), set()
            for m in moves:
                # the attempt it moves on from, as it started (put on record below if the move is made)
                began = conn.execute("SELECT node_id, node_name, started_at FROM tasks WHERE task_id=? AND attempt=?"
                                     " AND started_at IS NOT NULL", (m.task_id, m.expected_attempt)).fetchone()
                row = conn.execute(CANCELLED_SQL, (now, m.error, m.task_id, m.expected_attempt,
                                                   m.expected_node)).fetchone()
                if row is not None:
                    pass
                elif m.node_id is None and m.final_status is TaskStatus.PENDING:
                    row = conn.execute(REQUEUE_SQL, (
                        m.why, int(m.bump_attempt), int(m.count_failure), _due(clock, m.delay), m.error, m.task_id,
                        m.expected_attempt, m.expected_node)).fetchone()
                elif m.node_id is None:
                    row = conn.execute(FINAL_SQL, (
                        m.final_status.value, m.error, now, int(m.count_failure), m.task_id, m.expected_attempt,
                        m.expected_node)).fetchone()
                else:
                    row = conn.execute(REROUTE_SQL, (
                        m.node_id, m.node_name, m.why, int(m.bump_attempt), int(m.count_failure),
                        _due(clock, m.delay),
                        m.error, m.task_id, m.expected_attempt, m.expected_node)).fetchone()
                if row is not None:
                    if began is not None:
                        conn.execute("INSERT OR IGNORE INTO attempts (task_id, attempt, node_id, node_name, started_at)"
                                     " VALUES (?,?,?,?,?)", (m.task_id, m.expected_attempt, *began))
                    conn.execute(
                        "UPDATE attempts SET finished_at=coalesce(finished_at, ?), error=coalesce(?, error)"
                        " WHERE task_id=? AND attempt=?", (now, m.error, m.task_id, m.expected_attempt))
                    submitters.add(row[0])
                    if m.node_id:
                        targets.add(m.node_id)
                ok.append(row is not None)
            return ok, targets, submitters
        ok, targets, submitters = await self._write(move)
        self._signal(targets, Topic.TASKS)
        self._signal(submitters, Topic.RESULTS)
        return ok

    async def stranded(self, dead_nodes: Iterable[str], now: float) -> list[Task]:
        dead = sorted(set(dead_nodes))

        def read(conn: sqlite3.Connection) -> list[Task]:
            marks = ",".join("?" * len(dead))
            where = "(status='running' AND lease_expires<?) OR status='pending'"
            params: list[Any] = [machine_clock()]  # leases are judged on the clock they were stamped with
            if dead:
                where += f" OR node_id IN ({marks})"
                params += dead
            rows = conn.execute(
                f"SELECT {SWEEP_COLUMNS} FROM tasks WHERE status IN ('assigned','running','pending') AND ({where})"
                " ORDER BY priority DESC, seq LIMIT 5000", params).fetchall()
            unswept = dict.fromkeys(UNSWEPT)
            return self.readable(
                "task row", rows, lambda r: self.task_from_fields(
                    {**dict(zip(SWEEP_FIELDS, fitting(r, f"task {r[0]!r}"), strict=True)), **unswept}),
                aside=lambda r: ("task", r[0], task_removal(r[0])))
        return await self._read_settled(read)

    async def cancel(self, task_ids: Sequence[str]) -> list[str]:
        def cancel(conn: sqlite3.Connection) -> tuple[list[str], set[str], set[str]]:
            now = time.time()
            out, holders, submitters = [], set(), set()
            for task_id in task_ids:
                row = conn.execute("SELECT status, node_id, submitter_id FROM tasks WHERE task_id=?",
                                   (task_id,)).fetchone()
                if row is None:
                    out.append("missing")
                elif row[0] in CANCEL_QUEUED_FROM:
                    conn.execute("UPDATE tasks SET status='cancelled', finished_at=?, error='cancelled before it ran'"
                                 " WHERE task_id=?", (now, task_id))
                    submitters.add(row[2])
                    out.append("cancelled")
                elif row[0] in CANCEL_REQUEST_FROM:
                    conn.execute("UPDATE tasks SET cancel_requested=1 WHERE task_id=?", (task_id,))
                    holders.add(row[1])
                    out.append("cancelling")
                else:
                    out.append(row[0])
            return out, holders, submitters
        out, holders, submitters = await self._write(cancel)
        self._signal(holders, Topic.CANCEL)
        self._signal(submitters, Topic.RESULTS)
        return out

    async def cancel_requests(self, node_id: str) -> list[tuple[str, int]]:
        rows = await self._read(lambda c: c.execute(
            "SELECT task_id, attempt FROM tasks WHERE node_id=? AND status='running' AND cancel_requested=1",
            (node_id,)).fetchall())
        return [(r[0], r[1]) for r in rows]

    async def replay(self, task_id: str, node_id: str | None, node_name: str | None, why: str) -> bool:
        def replay(conn: sqlite3.Connection) -> bool:
            # the attempt it starts again after is put on record, as it ended (its fields are reset)
            conn.execute("INSERT OR IGNORE INTO attempts (task_id, attempt, node_id, node_name, started_at,"
                         " finished_at, error) SELECT task_id, attempt, node_id, node_name, started_at, finished_at,"
                         " error FROM tasks WHERE task_id=? AND started_at IS NOT NULL AND status IN"
                         f" ({sql_sources(Move.REPLAY)})", (task_id,))
            cur = conn.execute(REPLAY_SQL, ("assigned" if node_id else "pending", node_id, node_name, why, task_id))
            return cur.rowcount == 1
        ok = await self._write(replay)
        if ok and node_id:
            self._signal([node_id], Topic.TASKS)
        return ok

    async def prune(self, tasks_kept: int, dead_letters_kept: int, limit: int = 5000) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            edge = conn.execute("SELECT seq FROM tasks ORDER BY seq DESC LIMIT 1 OFFSET ?",
                                (tasks_kept,)).fetchone()
            ids = [r[0] for r in conn.execute(
                "SELECT task_id FROM tasks WHERE seq <= ? AND status IN ('succeeded','failed','cancelled')"
                " ORDER BY seq LIMIT ?", (edge[0], limit))] if edge else []
            ids += [r[0] for r in conn.execute(
                "SELECT task_id FROM tasks WHERE status='dead_letter' ORDER BY seq DESC LIMIT ? OFFSET ?",
                (max(0, limit - len(ids)), dead_letters_kept))]
            conn.execute("DELETE FROM granted WHERE at<?", (machine_clock() - 60,))  # of nodes that never came back
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM attempts WHERE task_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM tasks WHERE task_id IN ({marks})", chunk)
            return len(ids)
        return await self._write(prune, inline=False)  # up to ``limit`` deletes: off the loop's thread

    async def _states_batch(self, ids: list[str]) -> list[TaskStatus | None]:
        def read(conn: sqlite3.Connection) -> list[TaskStatus | None]:
            found: dict[str, str] = {}
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(f"SELECT task_id, status FROM tasks WHERE task_id IN ({marks})",
                                          chunk).fetchall())
            return [STATUSES.get(found.get(i)) for i in ids]  # an unreadable status reads as missing
        return await self._read(read)

    async def get_tasks(self, task_ids: Sequence[str], with_attempts: bool | None = None) -> list[Task]:
        ids = list(dict.fromkeys(task_ids))
        attempts = len(ids) <= 50 if with_attempts is None else with_attempts

        def read(conn: sqlite3.Connection) -> list[Task]:
            out = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({marks})", chunk).fetchall()
                out += self._tasks(rows)
            by_id: dict[str, Task] = {t.task_id: t for t in out}
            if attempts:
                for t in out:
                    t.attempts = with_current_attempt(attempts_from_rows(conn.execute(
                        "SELECT attempt, node_id, node_name, started_at, finished_at, error FROM attempts"
                        " WHERE task_id=? ORDER BY attempt", (t.task_id,)).fetchall()), t)
            return [by_id[i] for i in ids if i in by_id]
        return await self._read_settled(read)

    async def list_tasks(self, status: TaskStatus | None = None, limit: int = 100, *,
                         parent_id: str | None = None) -> list[Task]:
        def read(conn: sqlite3.Connection) -> list[Task]:
            if parent_id is not None:
                rows = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE parent_id=? ORDER BY seq LIMIT ?",
                                    (parent_id, limit))
            elif status is None:
                rows = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY seq DESC LIMIT ?", (limit,))
            else:
                rows = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE status=? ORDER BY seq DESC LIMIT ?",
                                    (status.value, limit))
            return self._tasks(rows.fetchall())
        return await self._read_settled(read)

    async def task_counts(self) -> dict[str, int]:
        rows = await self._read(lambda c: c.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        return dict(rows)


def _due(clock: float, delay: float) -> float:
    """``not_before`` for a task held back ``delay`` seconds from ``clock`` (0: due at once)."""
    return clock + delay if delay > 0 else 0.0


def _as_stored(task: Task, row: Sequence[Any]) -> bool:
    """Whether ``task`` (a record kept by the caller) is the task of this claimed row as it was before the claim:
    same attempt, node and an assignment (``CLAIM_SQL`` rows: seq, then ``TASK_FIELDS``)."""
    return task.status is TaskStatus.ASSIGNED and task.attempt == row[8] and task.node_id == row[6]
