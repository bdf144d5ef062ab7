"""``sqlite_local``: one shared SQLite file in WAL mode joins the processes of one machine.

All SQL runs on one dedicated thread per backend, one whole transaction per
hop, so the event loop never blocks on a lock. Concurrent calls of the same
kind are coalesced into one transaction (batched writes), which is what makes
thousands of tasks a second possible. Writers take ``BEGIN IMMEDIATE``; a
busy file is waited for (``busy_timeout``, then retries with backoff) and
never shown to a user as "database is locked".

Wake-ups between processes go over unix datagram sockets in Linux's abstract
namespace (named after the database file and node id), so an idle node
answers in well under a millisecond instead of after a poll period; the
periodic poll stays as a safety net.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .. import codec
from ..errors import BackendError, BackendUnavailable
from ..memory.digest import bucket_of
from ..model import NodeInfo, NodeRole, NodeType, Task, TaskStatus
from ..tasks import TASK_MOVES, Move, sql_sources
from .contracts import Assignment, Completion, Finished, MeshSnapshot, Reassignment, Topic
from .shared import FINISHED_FIELDS, TASK_FIELDS, MemoryEntry, SharedStoreBackend, attempts_from_rows

log = logging.getLogger("mesh.sqlite")

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, name TEXT NOT NULL, node_type TEXT NOT NULL, role TEXT NOT NULL,
    host TEXT, port INTEGER, pid INTEGER, incarnation INTEGER NOT NULL,
    capabilities TEXT NOT NULL, task_types TEXT NOT NULL, capacity INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0, queued INTEGER NOT NULL DEFAULT 0, metrics TEXT,
    started_at REAL, last_seen REAL NOT NULL, left_mesh INTEGER NOT NULL DEFAULT 0, signature TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE, task_type TEXT NOT NULL, payload BLOB,
    priority INTEGER NOT NULL, status TEXT NOT NULL, node_id TEXT, node_name TEXT,
    attempt INTEGER NOT NULL DEFAULT 1, failures INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL,
    timeout_s REAL, preferred TEXT, required TEXT, context BLOB, submitter_id TEXT, why TEXT,
    submitted_at REAL, started_at REAL, finished_at REAL, lease_expires REAL,
    not_before REAL NOT NULL DEFAULT 0, result BLOB, error TEXT,
    parent_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, signature TEXT
);
CREATE INDEX IF NOT EXISTS tasks_inbox ON tasks (node_id, status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (submitter_id, finished_at);
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_id);
CREATE TABLE IF NOT EXISTS finished (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, submitter_id TEXT, task_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS finished_submitter ON finished (submitter_id, seq);
-- One place records every move into a final state, whichever statement made it.
CREATE TRIGGER IF NOT EXISTS tasks_finished AFTER UPDATE OF status ON tasks
WHEN NEW.status IN ('succeeded','failed','dead_letter','cancelled')
 AND OLD.status NOT IN ('succeeded','failed','dead_letter','cancelled')
BEGIN
    INSERT INTO finished (submitter_id, task_id) VALUES (NEW.submitter_id, NEW.task_id);
END;
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, node_id TEXT, node_name TEXT,
    started_at REAL, finished_at REAL, error TEXT, PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, memory_type TEXT NOT NULL,
    key TEXT NOT NULL, frame BLOB NOT NULL, created_at REAL NOT NULL, bucket INTEGER
);
CREATE INDEX IF NOT EXISTS memory_key ON memory_log (key, memory_type);
-- The newest entry per (key, origin): what anti-entropy and key catch-up read, so the log can be compacted.
CREATE TABLE IF NOT EXISTS memory_latest (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL, frame BLOB NOT NULL, bucket INTEGER NOT NULL,
    PRIMARY KEY (memory_type, key, origin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_latest_bucket ON memory_latest (bucket);
CREATE INDEX IF NOT EXISTS memory_latest_key ON memory_latest (key);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memory_acks (node_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS memory_digests (node_id TEXT NOT NULL, bucket INTEGER NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (node_id, bucket)) WITHOUT ROWID;
"""

TASK_COLUMNS = ", ".join(TASK_FIELDS)  # the columns are named as the Task's fields
# Fenced moves: each statement checks the source statuses that mesh_core.tasks.TASK_MOVES allows.
CLAIM_SQL = (
    "UPDATE tasks SET status='running', started_at=?, lease_expires=? WHERE seq IN ("
    f" SELECT seq FROM tasks WHERE node_id=? AND status IN ({sql_sources(Move.CLAIM)}) AND not_before<=?"
    f" ORDER BY priority DESC, seq LIMIT ?) RETURNING seq, {TASK_COLUMNS}")
COMPLETE_SQL = (
    "UPDATE tasks SET status=?, result=?, error=?, finished_at=?, lease_expires=NULL"
    f" WHERE task_id=? AND attempt=? AND node_id=? AND status IN ({sql_sources(Move.COMPLETE)})"
    " RETURNING submitter_id")
CANCELLED_SQL = (  # a task whose cancel was asked for ends cancelled instead of moving on
    "UPDATE tasks SET status='cancelled', finished_at=?, lease_expires=NULL,"
    " error=coalesce(?, 'cancelled') WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND cancel_requested=1 AND status IN ({sql_sources(Move.CANCELLED)}) RETURNING submitter_id")
REQUEUE_SQL = (
    "UPDATE tasks SET status='pending', node_id=NULL, node_name=NULL, why=?,"
    " attempt=attempt+?, failures=failures+?, not_before=?, lease_expires=NULL,"
    " started_at=NULL, error=coalesce(?, error) WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.REQUEUE)}) RETURNING submitter_id")
FINAL_SQL = (
    "UPDATE tasks SET status=?, error=?, finished_at=?, lease_expires=NULL,"
    " failures=failures+? WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.FINAL)}) RETURNING submitter_id")
REROUTE_SQL = (
    "UPDATE tasks SET status='assigned', node_id=?, node_name=?, why=?, attempt=attempt+?,"
    " failures=failures+?, not_before=?, lease_expires=NULL, started_at=NULL,"
    " error=coalesce(?, error) WHERE task_id=? AND attempt=? AND node_id IS ?"
    f" AND status IN ({sql_sources(Move.REROUTE)}) RETURNING submitter_id")
REPLAY_SQL = (
    "UPDATE tasks SET status=?, node_id=?, node_name=?, why=?, attempt=attempt+1, failures=0,"
    " not_before=0, lease_expires=NULL, started_at=NULL, finished_at=NULL, result=NULL, error=NULL,"
    f" cancel_requested=0 WHERE task_id=? AND status IN ({sql_sources(Move.REPLAY)})")
CANCEL_QUEUED_FROM = {s.value for s in TASK_MOVES[Move.CANCEL_QUEUED].sources}
CANCEL_REQUEST_FROM = {s.value for s in TASK_MOVES[Move.CANCEL_REQUEST].sources}
LOCK_GIVE_UP_SECONDS = 60.0
FINISHED_KEEP = 200_000  # rows of the finished feed kept for submitters' cursors
TOPIC_BYTES: dict[str, bytes] = {Topic.TASKS: b"t", Topic.RESULTS: b"r", Topic.MEMBERS: b"m", Topic.MEMORY: b"y",
                                  Topic.CANCEL: b"c"}
BYTE_TOPICS = {v[0]: k for k, v in TOPIC_BYTES.items()}

R = TypeVar("R")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _wake_address(db_path: str, node_id: str) -> str | bytes:
    digest = hashlib.sha1(os.path.realpath(db_path).encode()).hexdigest()[:16]
    if sys.platform.startswith("linux"):
        return b"\0agent-mesh/" + digest.encode() + b"/" + node_id.encode()
    return os.path.join(tempfile.gettempdir(), f"am-{digest[:8]}-{node_id[:12]}.sock")


class _WakeProtocol(asyncio.DatagramProtocol):
    def __init__(self, deliver: Callable[[str], None]) -> None:
        self._deliver = deliver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for byte in data[:8]:
            topic = BYTE_TOPICS.get(byte)
            if topic:
                self._deliver(topic)


class SqliteBackend(SharedStoreBackend):
    name = "sqlite_local"

    def __init__(self, path: str, *, limits: codec.CodecLimits = codec.DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.path = os.path.abspath(path)
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # Reads have their own connection and thread: in WAL mode they never wait for the write lock, so a
        # result or state read is not queued behind a write that waits for another process.
        self._read_pool: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._local: NodeInfo | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._send_sock: socket.socket | None = None
        self._peer_ids: list[str] = []
        self._addresses: dict[str, str | bytes] = {}
        self.lock_waits = 0

    # -- plumbing --------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        # No busy timeout inside SQLite: its handler sleeps 1, 2, 5, 10 ms … per wait, far longer than the
        # lock is held here. _retrying waits instead, from 50 µs up, until LOCK_GIVE_UP_SECONDS.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendError(f"SQLite file {self.path} cannot use WAL mode (got {mode})",
                               hint="put it on a local disk, not a network share")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        self._retrying(lambda c: c.executescript(SCHEMA), conn)
        self._retrying(_migrate, conn)
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA query_only=1")
        return conn

    def _retrying(self, fn: Callable[[sqlite3.Connection], R], conn: sqlite3.Connection) -> R:
        delay, deadline = 0.00005, time.monotonic() + LOCK_GIVE_UP_SECONDS
        while True:
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not _is_busy(exc):
                    raise BackendError(f"SQLite error on {self.path}: {exc}") from None
                self.lock_waits += 1
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"SQLite file {self.path} stayed locked by another process for {LOCK_GIVE_UP_SECONDS:.0f} s",
                        hint="check for a stuck process holding it") from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.02)
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise BackendError(f"SQLite file {self.path} is not usable: {exc}",
                                   hint="is it a mesh database? move it aside to start fresh") from None

    async def _run(self, fn: Callable[[sqlite3.Connection], R], *, reader: bool = False) -> R:
        pool, conn = (self._read_pool, self._read_conn) if reader else (self._pool, self._conn)
        if pool is None or conn is None:
            raise BackendUnavailable("the SQLite backend is not open")
        return await asyncio.get_running_loop().run_in_executor(pool, self._retrying, fn, conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        def tx(conn: sqlite3.Connection) -> R:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        return await self._run(tx)

    async def _read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        def tx(conn: sqlite3.Connection) -> R:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        return await self._run(tx, reader=True)

    # -- wake-ups --------------------------------------------------------------
    def _signal(self, node_ids: Iterable[str | None], topic: str) -> None:
        if self._send_sock is None:
            return
        payload = TOPIC_BYTES[topic]
        own = self._local.node_id if self._local else None
        for node_id in set(node_ids):
            if not node_id:
                continue
            if node_id == own:
                self._deliver(topic)
                continue
            try:
                address = self._addresses.get(node_id)
                if address is None:
                    address = self._addresses[node_id] = _wake_address(self.path, node_id)
                self._send_sock.sendto(payload, address)
            except OSError:
                pass  # peer gone or its buffer full: a hint only, it polls anyway

    def _broadcast(self, topic: str) -> None:
        self._signal(self._peer_ids, topic)

    # -- lifecycle -------------------------------------------------------------
    async def open(self, local: NodeInfo) -> None:
        self._local = local
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._pool, self._connect)
        except sqlite3.Error as exc:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise BackendUnavailable(f"cannot open SQLite file {self.path}: {exc}") from None
        except OSError as exc:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise BackendUnavailable(f"cannot open SQLite file {self.path}: {exc.strerror}") from None
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-sqlite-read")
        self._read_conn = await loop.run_in_executor(self._read_pool, self._connect_reader)
        address = _wake_address(self.path, local.node_id)
        if isinstance(address, str) and os.path.exists(address):
            os.unlink(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.setblocking(False)
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _WakeProtocol(self._deliver), sock=sock)
        self._send_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send_sock.setblocking(False)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            if self._local is not None:
                address = _wake_address(self.path, self._local.node_id)
                if isinstance(address, str) and os.path.exists(address):
                    os.unlink(address)
        if self._send_sock is not None:
            self._send_sock.close()
            self._send_sock = None
        for pool_attr, conn_attr in (("_read_pool", "_read_conn"), ("_pool", "_conn")):
            pool, conn = getattr(self, pool_attr), getattr(self, conn_attr)
            if pool is None:
                continue
            setattr(self, conn_attr, None)
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(pool, conn.close)
            pool.shutdown(wait=True)
            setattr(self, pool_attr, None)

    # -- membership ------------------------------------------------------------
    async def heartbeat(self, node: NodeInfo) -> None:
        def upsert(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT incarnation, left_mesh FROM nodes WHERE node_id=?",
                               (node.node_id,)).fetchone()
            conn.execute(
                "INSERT INTO nodes (node_id, name, node_type, role, host, port, pid, incarnation, capabilities,"
                " task_types, capacity, running, queued, metrics, started_at, last_seen, left_mesh, signature)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?) ON CONFLICT(node_id) DO UPDATE SET"
                " name=excluded.name, node_type=excluded.node_type, role=excluded.role, host=excluded.host,"
                " port=excluded.port, pid=excluded.pid, incarnation=excluded.incarnation,"
                " capabilities=excluded.capabilities, task_types=excluded.task_types, capacity=excluded.capacity,"
                " running=excluded.running, queued=excluded.queued, metrics=excluded.metrics,"
                " started_at=excluded.started_at, last_seen=excluded.last_seen, signature=excluded.signature,"
                # a heartbeat racing a leave must not undo it; a new incarnation rejoins
                " left_mesh=CASE WHEN excluded.incarnation > nodes.incarnation THEN 0 ELSE nodes.left_mesh END",
                (node.node_id, node.name, node.node_type.value, node.role.value, node.host, node.port, node.pid,
                 node.incarnation, json.dumps(sorted(node.capabilities)), json.dumps(sorted(node.task_types)),
                 node.capacity, node.running, node.queued, json.dumps(node.metrics, default=str),
                 node.started_at, time.time(), node.signature))
            conn.execute("DELETE FROM finished WHERE seq < (SELECT max(seq) FROM finished) - ?", (FINISHED_KEEP,))
            return row is None or row[0] != node.incarnation or bool(row[1])
        changed = await self._write(upsert)
        if changed:
            await self._refresh_peers()
            self._broadcast(Topic.MEMBERS)

    async def leave(self, node: NodeInfo) -> None:
        await self._write(lambda c: c.execute("UPDATE nodes SET left_mesh=1, running=0, queued=0 WHERE node_id=?",
                                              (node.node_id,)))
        self._broadcast(Topic.MEMBERS)

    async def _refresh_peers(self) -> None:
        horizon = time.time() - 3600
        rows = await self._read(lambda c: c.execute(
            "SELECT node_id FROM nodes WHERE left_mesh=0 AND last_seen>?", (horizon,)).fetchall())
        self._peer_ids = [r[0] for r in rows]

    async def snapshot(self) -> MeshSnapshot:
        def read(conn: sqlite3.Connection) -> MeshSnapshot:
            rows = conn.execute(
                "SELECT node_id, name, node_type, role, host, port, pid, incarnation, capabilities, task_types,"
                " capacity, running, queued, metrics, started_at, last_seen, left_mesh, signature FROM nodes"
            ).fetchall()
            queued = dict(conn.execute(
                "SELECT node_id, count(*) FROM tasks WHERE status IN ('assigned','running') GROUP BY node_id"
            ).fetchall())
            return MeshSnapshot([_node_from_row(r) for r in rows], time.time(), queued)
        snap = await self._read(read)
        self._peer_ids = [n.node_id for n in snap.nodes if not n.left and snap.now - n.last_seen < 3600]
        return snap

    # -- tasks -----------------------------------------------------------------
    def _tasks(self, rows: Iterable[Sequence[Any]]) -> list[Task]:
        return self.readable("task row", rows, lambda r: self.task_from_fields(dict(zip(TASK_FIELDS, r, strict=True))))

    async def _enqueue_batch(self, items: list[Assignment]) -> list[bool]:
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
                    t.submitted_at, t.not_before, t.context.get("parent_id"), t.signature))
            return out

        prepared = rows()

        def insert(conn: sqlite3.Connection) -> list[bool]:
            targets = sorted({a.node_id for a in items if a.node_id})
            marks = ",".join("?" * len(targets))
            depth: dict[str | None, int] = dict(conn.execute(
                f"SELECT node_id, count(*) FROM tasks WHERE status IN ('assigned','running')"
                f" AND node_id IN ({marks}) GROUP BY node_id", targets).fetchall())
            if any(a.node_id is None for a in items):
                depth[None] = conn.execute("SELECT count(*) FROM tasks WHERE status='pending'").fetchone()[0]
            accepted = []
            for a, row in zip(items, prepared, strict=True):
                if depth.get(a.node_id, 0) >= a.capacity:
                    accepted.append(False)
                    continue
                cur = conn.execute(
                    "INSERT OR IGNORE INTO tasks (task_id, task_type, payload, priority, status, node_id, node_name,"
                    " attempt, failures, max_retries, timeout_s, preferred, required, context, submitter_id, why,"
                    " submitted_at, not_before, parent_id, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row)
                if cur.rowcount:
                    depth[a.node_id] = depth.get(a.node_id, 0) + 1
                accepted.append(True)
            return accepted
        accepted = await self._write(insert)
        self._signal((a.node_id for a, ok in zip(items, accepted, strict=True) if ok and a.node_id), Topic.TASKS)
        return accepted

    async def claim(self, node_id: str, limit: int, lease_seconds: float) -> list[Task]:
        def claim(conn: sqlite3.Connection) -> list[Task]:
            now = time.time()
            rows = conn.execute(CLAIM_SQL, (now, now + lease_seconds, node_id, now, limit)).fetchall()
            rows.sort(key=lambda r: (-r[4], r[0]))
            conn.executemany(
                "INSERT OR REPLACE INTO attempts (task_id, attempt, node_id, node_name, started_at)"
                " VALUES (?,?,?,?,?)", [(r[1], r[8], node_id, r[7], now) for r in rows])
            return self._tasks(r[1:] for r in rows)
        return await self._write(claim)

    async def next_due(self, node_id: str) -> float | None:
        """Earliest ``not_before`` of tasks waiting for this node (backoff), if any."""
        row = await self._read(lambda c: c.execute(
            "SELECT min(not_before) FROM tasks WHERE node_id=? AND status='assigned'", (node_id,)).fetchone())
        return row[0] if row else None

    async def renew(self, node_id: str, held: Sequence[tuple[str, int]], lease_seconds: float) -> set[str]:
        def renew(conn: sqlite3.Connection) -> set[str]:
            until = time.time() + lease_seconds
            kept = set()
            for task_id, attempt in held:
                cur = conn.execute(
                    "UPDATE tasks SET lease_expires=? WHERE task_id=? AND attempt=? AND node_id=? AND status='running'",
                    (until, task_id, attempt, node_id))
                if cur.rowcount:
                    kept.add(task_id)
            return kept
        if not held:
            return set()
        return await self._write(renew)

    async def _complete_batch(self, items: list[Completion]) -> list[bool]:
        def record(conn: sqlite3.Connection) -> tuple[list[bool], set[str]]:
            now = time.time()
            done, submitters = [], set()
            for c in items:
                row = conn.execute(COMPLETE_SQL, (c.status.value, c.result_frame, c.error, now, c.task_id, c.attempt,
                                                  c.node_id)).fetchone()
                if row is not None:
                    conn.execute("UPDATE attempts SET finished_at=?, error=? WHERE task_id=? AND attempt=?",
                                 (now, c.error, c.task_id, c.attempt))
                    submitters.add(row[0])
                done.append(row is not None)
            return done, submitters
        done, submitters = await self._write(record)
        self._signal(submitters, Topic.RESULTS)
        return done

    async def _move_batch(self, moves: Sequence[Reassignment]) -> list[bool]:
        def move(conn: sqlite3.Connection) -> tuple[list[bool], set[str], set[str]]:
            now = time.time()
            ok, targets, submitters = [], set(), set()
            for m in moves:
                row = conn.execute(CANCELLED_SQL, (now, m.error, m.task_id, m.expected_attempt,
                                                   m.expected_node)).fetchone()
                if row is not None:
                    pass
                elif m.node_id is None and m.final_status is TaskStatus.PENDING:
                    row = conn.execute(REQUEUE_SQL, (
                        m.why, int(m.bump_attempt), int(m.count_failure), m.not_before, m.error, m.task_id,
                        m.expected_attempt, m.expected_node)).fetchone()
                elif m.node_id is None:
                    row = conn.execute(FINAL_SQL, (
                        m.final_status.value, m.error, now, int(m.count_failure), m.task_id, m.expected_attempt,
                        m.expected_node)).fetchone()
                else:
                    row = conn.execute(REROUTE_SQL, (
                        m.node_id, m.node_name, m.why, int(m.bump_attempt), int(m.count_failure), m.not_before,
                        m.error, m.task_id, m.expected_attempt, m.expected_node)).fetchone()
                if row is not None:
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
            params: list[Any] = [now]
            if dead:
                where += f" OR node_id IN ({marks})"
                params += dead
            rows = conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ('assigned','running','pending') AND ({where})"
                " ORDER BY priority DESC, seq LIMIT 5000", params).fetchall()
            return self._tasks(rows)
        return await self._read(read)

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
            cur = conn.execute(REPLAY_SQL, ("assigned" if node_id else "pending", node_id, node_name, why, task_id))
            return cur.rowcount == 1
        ok = await self._write(replay)
        if ok and node_id:
            self._signal([node_id], Topic.TASKS)
        return ok

    async def finished_for(self, submitter_id: str, after: int | None,
                           wait: float = 0.0) -> tuple[list[Finished], int]:
        def read(conn: sqlite3.Connection) -> tuple[list[Finished], int]:
            if after is None:
                top = conn.execute("SELECT coalesce(max(seq), 0) FROM finished").fetchone()[0]
                return [], top
            rows = conn.execute(
                "SELECT f.seq, t.task_id, t.status, t.attempt, t.node_id, t.node_name, t.finished_at, t.result,"
                " t.error FROM finished f JOIN tasks t ON t.task_id = f.task_id"
                " WHERE f.submitter_id=? AND f.seq>? ORDER BY f.seq", (submitter_id, after)).fetchall()
            out = self.readable("result feed entry", rows,
                                lambda r: self.finished_from_fields(dict(zip(FINISHED_FIELDS, r[1:], strict=True))))
            return out, (rows[-1][0] if rows else after)
        return await self._read(read)

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
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM attempts WHERE task_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM tasks WHERE task_id IN ({marks})", chunk)
            return len(ids)
        return await self._write(prune)

    async def _states_batch(self, ids: list[str]) -> list[TaskStatus | None]:
        def read(conn: sqlite3.Connection) -> list[TaskStatus | None]:
            found: dict[str, str] = {}
            unique = list(dict.fromkeys(ids))
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(f"SELECT task_id, status FROM tasks WHERE task_id IN ({marks})",
                                          chunk).fetchall())
            return [TaskStatus(found[i]) if i in found else None for i in ids]
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
                    t.attempts = attempts_from_rows(conn.execute(
                        "SELECT attempt, node_id, node_name, started_at, finished_at, error FROM attempts"
                        " WHERE task_id=? ORDER BY attempt", (t.task_id,)).fetchall())
            return [by_id[i] for i in ids if i in by_id]
        return await self._read(read)

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
        return await self._read(read)

    async def task_counts(self) -> dict[str, int]:
        rows = await self._read(lambda c: c.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        return dict(rows)

    # -- memory ----------------------------------------------------------------
    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        self._signal(node_ids, topic)

    async def _publish_batch(self, items: list[MemoryEntry]) -> list[int]:
        now = time.time()

        def append(conn: sqlite3.Connection) -> tuple[list[int], list[str]]:
            seqs = [conn.execute(
                "INSERT INTO memory_log (origin, memory_type, key, frame, created_at, bucket) VALUES (?,?,?,?,?,?)",
                (origin, mt, key, frame, now, bucket_of(mt, key))).lastrowid or 0
                for origin, mt, key, frame, _ in items]
            conn.executemany(
                "INSERT INTO memory_latest (memory_type, key, origin, frame, bucket) VALUES (?,?,?,?,?)"
                " ON CONFLICT (memory_type, key, origin) DO UPDATE SET frame=excluded.frame",
                [(mt, key, origin, frame, bucket_of(mt, key)) for origin, mt, key, frame, _ in items])
            # Read the peers in the same transaction so a node that joined a moment ago is woken too.
            return seqs, [r[0] for r in conn.execute(
                "SELECT node_id FROM nodes WHERE left_mesh=0 AND last_seen>?", (now - 3600,)).fetchall()]
        seqs, self._peer_ids = await self._write(append)
        if any(broadcast for *_, broadcast in items):
            self._broadcast(Topic.MEMORY)
        return seqs

    async def ack_memory(self, node_id: str, cursor: Any) -> None:
        await self._write(lambda c: c.execute(
            "INSERT INTO memory_acks (node_id, seq) VALUES (?, ?) ON CONFLICT(node_id) DO UPDATE SET"
            " seq=max(seq, excluded.seq)", (node_id, int(cursor or 0))))

    async def memory_acks(self) -> dict[str, Any]:
        return dict(await self._read(lambda c: c.execute("SELECT node_id, seq FROM memory_acks").fetchall()))

    def cursor_reached(self, cursor: Any, target: Any) -> bool:
        return int(cursor or 0) >= int(target or 0)

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        def hold(conn: sqlite3.Connection) -> str:
            now = time.time()
            conn.execute("INSERT INTO leases (name, holder, expires) VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET"
                         " holder=excluded.holder, expires=excluded.expires"
                         " WHERE leases.holder=excluded.holder OR leases.expires<?", (name, holder, now + ttl, now))
            return str(conn.execute("SELECT holder FROM leases WHERE name=?", (name,)).fetchone()[0])
        return await self._write(hold)

    async def put_digests(self, node_id: str, digests: dict[int, str]) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM memory_digests WHERE node_id=?", (node_id,))
            # bucket -1 marks "this node has published", so an empty replica still counts as a peer
            rows = [(node_id, -1, "")] + [(node_id, b, d) for b, d in digests.items()]
            conn.executemany("INSERT INTO memory_digests VALUES (?,?,?)", rows)
        await self._write(put)

    async def peer_digests(self) -> dict[str, dict[int, str]]:
        rows = await self._read(lambda c: c.execute("SELECT node_id, bucket, digest FROM memory_digests").fetchall())
        out: dict[str, dict[int, str]] = {}
        for node_id, bucket, digest in rows:
            marks = out.setdefault(node_id, {})
            if bucket >= 0:
                marks[bucket] = digest
        return out

    async def memory_bucket(self, bucket: int) -> list[bytes]:
        rows = await self._read(lambda c: c.execute(
            "SELECT frame FROM memory_latest WHERE bucket=?", (bucket,)).fetchall())
        return [r[0] for r in rows]

    async def memory_horizon(self) -> Any:
        def read(conn: sqlite3.Connection) -> int | None:
            oldest = conn.execute("SELECT min(seq) FROM memory_log").fetchone()[0]
            if oldest is not None:
                return oldest - 1 if oldest > 1 else None
            top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='memory_log'").fetchone()
            return int(top[0]) if top and top[0] else None  # everything written so far was dropped
        return await self._read(read)

    async def compact_memory(self, applied_everywhere: Any) -> int:
        upto = int(applied_everywhere or 0)
        return await self._write(lambda c: c.execute("DELETE FROM memory_log WHERE seq < ?", (upto,)).rowcount)

    async def read_memory(self, after: Any, limit: int) -> tuple[list[bytes], Any]:
        start = int(after or 0)
        rows = await self._read(lambda c: c.execute(
            "SELECT seq, frame FROM memory_log WHERE seq>? ORDER BY seq LIMIT ?", (start, limit)).fetchall())
        return [r[1] for r in rows], (rows[-1][0] if rows else start)

    async def memory_for_keys(self, memory_type: str, keys: Sequence[str]) -> list[bytes]:
        wanted = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> list[bytes]:
            out: list[bytes] = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                out += [r[0] for r in conn.execute(
                    f"SELECT frame FROM memory_latest WHERE memory_type=? AND key IN ({marks})",
                    [memory_type, *chunk])]
            return out
        return await self._read(read) if wanted else []

    async def memory_for_key(self, memory_type: str | None, key: str) -> list[bytes]:
        if memory_type is None:
            rows = await self._read(lambda c: c.execute(
                "SELECT frame FROM memory_latest WHERE key=?", (key,)).fetchall())
        else:
            rows = await self._read(lambda c: c.execute(
                "SELECT frame FROM memory_latest WHERE key=? AND memory_type=?", (key, memory_type)).fetchall())
        return [r[0] for r in rows]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "lock_waits": self.lock_waits}


def _migrate(conn: sqlite3.Connection) -> None:
    """Add columns that later releases introduced to a file made by an earlier one."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    for column, ddl in (("parent_id", "TEXT"), ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
                        ("signature", "TEXT")):
        if column not in have:
            conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {ddl}")
    if "signature" not in {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}:
        conn.execute("ALTER TABLE nodes ADD COLUMN signature TEXT")
    conn.execute("CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_id)")
    if "bucket" not in {row[1] for row in conn.execute("PRAGMA table_info(memory_log)")}:
        conn.execute("ALTER TABLE memory_log ADD COLUMN bucket INTEGER")
    conn.execute("CREATE INDEX IF NOT EXISTS memory_bucket ON memory_log (bucket, seq)")
    if conn.execute("SELECT 1 FROM memory_latest LIMIT 1").fetchone() is None:
        # A file from before memory_latest: fill it from the log, newest entry per (key, origin) last.
        conn.executemany(
            "INSERT OR REPLACE INTO memory_latest (memory_type, key, origin, frame, bucket) VALUES (?,?,?,?,?)",
            [(mt, key, origin, frame, bucket_of(mt, key)) for mt, key, origin, frame in conn.execute(
                "SELECT memory_type, key, origin, frame FROM memory_log ORDER BY seq")])


def _node_from_row(r: tuple[Any, ...]) -> NodeInfo:
    try:
        node_type = NodeType(r[2])
    except ValueError:
        node_type = NodeType.GENERAL
    return NodeInfo(
        node_id=r[0], name=r[1], node_type=node_type, role=NodeRole(r[3]), host=r[4] or "", port=r[5] or 0,
        pid=r[6] or 0, incarnation=r[7], capabilities=frozenset(json.loads(r[8])),
        task_types=frozenset(json.loads(r[9])), capacity=r[10], running=r[11], queued=r[12],
        metrics=json.loads(r[13]) if r[13] else {}, started_at=r[14] or 0.0, last_seen=r[15], left=bool(r[16]),
        signature=r[17] or "")


__all__ = ["SqliteBackend"]
