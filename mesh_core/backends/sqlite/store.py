"""The SQLite store every part of ``sqlite_local`` is built on: schema, migrations, connections, wake-ups.

A write is one whole transaction, run on the event loop's thread while the file's
lock is free and on a dedicated thread while another process holds it (``_run``),
so the loop never waits for a lock. Writers take ``BEGIN IMMEDIATE``; a busy file
is waited for (retries with backoff) and never shown to a user as "database is
locked"; one that stays locked names the process holding it (``locks``).

Wake-ups between processes go over unix datagram sockets in Linux's abstract
namespace (named after the database file and node id), so an idle node
answers in well under a millisecond instead of after a poll period; the
periodic poll stays as a safety net.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import select
import socket
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ... import codec
from ...checkpoints import Checkpointer, writes_apart
from ...errors import BackendError, BackendUnavailable
from ...files import PRIVATE_FILE, prepare_sqlite_file
from ...memory.digest import bucket_of
from ...model import NodeInfo
from ..contracts import Topic
from ..shared import MAX_NAME_BYTES, CorruptRecord, SharedStoreBackend
from .clock import machine_clock
from .locks import write_lock_holder

log = logging.getLogger("mesh.sqlite")


def finished_trigger(submitter_id: str | None = None) -> str:
    """The trigger that adds each task moving into a final state to ``finished`` (the result feeds), whichever
    statement moved it. With ``submitter_id``: only that submitter's tasks, for a file one node alone writes and
    reads (grpc_mesh), whose feed serves that node only: the others hear of their tasks over the wire, and an entry
    for each of them cost every completion an insert and its index (a third of the ``UPDATE``)."""
    only = "" if submitter_id is None else "NEW.submitter_id = '" + submitter_id.replace("'", "''") + "' AND "
    return ("CREATE TRIGGER IF NOT EXISTS tasks_finished AFTER UPDATE OF status ON tasks\n"
            f"WHEN {only}NEW.status IN ('succeeded','failed','dead_letter','cancelled')\n"
            " AND OLD.status NOT IN ('succeeded','failed','dead_letter','cancelled')\n"
            "BEGIN\n"
            "    INSERT INTO finished (submitter_id, task_id) VALUES (NEW.submitter_id, NEW.task_id);\n"
            "END")


SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, name TEXT NOT NULL, node_type TEXT NOT NULL, role TEXT NOT NULL,
    host TEXT, port INTEGER, pid INTEGER, incarnation INTEGER NOT NULL,
    capabilities TEXT NOT NULL, task_types TEXT NOT NULL, capacity INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0, queued INTEGER NOT NULL DEFAULT 0, metrics TEXT,
    started_at REAL, last_seen REAL NOT NULL, left_mesh INTEGER NOT NULL DEFAULT 0, signature TEXT,
    beat INTEGER NOT NULL DEFAULT 0, beat_at REAL,
    version INTEGER NOT NULL DEFAULT 0, news TEXT, published REAL
);
-- The membership version: bumped by every change of a node row's content (not its beat), so readers follow
-- changes (``version`` on each row: the change that last touched it); a new epoch means start again.
CREATE TABLE IF NOT EXISTS membership (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL,
    epoch TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE, task_type TEXT NOT NULL, payload BLOB,
    priority INTEGER NOT NULL, status TEXT NOT NULL, node_id TEXT, node_name TEXT,
    attempt INTEGER NOT NULL DEFAULT 1, failures INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL,
    timeout_s REAL, preferred TEXT, required TEXT, context BLOB, submitter_id TEXT, why TEXT,
    submitted_at REAL, started_at REAL, finished_at REAL, lease_expires REAL,
    not_before REAL NOT NULL DEFAULT 0, result BLOB, error TEXT,
    parent_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, signature TEXT,
    progress REAL, progress_message TEXT
);
CREATE INDEX IF NOT EXISTS tasks_inbox ON tasks (node_id, status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
-- Only subtasks have a parent: the others (nearly every task) leave this index alone when stored
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS finished (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, submitter_id TEXT, task_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS finished_submitter ON finished (submitter_id, seq);
-- One place records every move into a final state, whichever statement made it (``finished_trigger``).
{finished_trigger};
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, node_id TEXT, node_name TEXT,
    started_at REAL, finished_at REAL, error TEXT, PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
-- Read by seq alone (``bucket``: written by releases before schema 8, read by none).
CREATE TABLE IF NOT EXISTS memory_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, memory_type TEXT NOT NULL,
    key TEXT NOT NULL, frame BLOB NOT NULL, created_at REAL NOT NULL, bucket INTEGER
);
-- The newest entry per (key, origin): what anti-entropy and key catch-up read, so the log can be compacted.
-- Keyed by the key first: a lookup by key alone (its types) needs no index of its own to write.
CREATE TABLE IF NOT EXISTS memory_latest (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL, frame BLOB NOT NULL, bucket INTEGER NOT NULL,
    PRIMARY KEY (key, memory_type, origin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_latest_bucket ON memory_latest (bucket);
-- Every key's newest published versions (its replicated history), kept through compaction.
CREATE TABLE IF NOT EXISTS memory_versions (
    memory_type TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (memory_type, key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memory_acks (node_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
-- Records that could not be read, moved aside with why (the newest QUARANTINE_KEPT are kept).
CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL,
    raw BLOB, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memory_digests (node_id TEXT NOT NULL, bucket INTEGER NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (node_id, bucket)) WITHOUT ROWID;
-- What each worker can take, as its last claim said (free slots plus those running, its lease, until when on the
-- machine clock), and the tasks an enqueue started on it (their lease granted there) whose wake-up it has yet to
-- answer: see ``tasks`` (started at enqueue).
CREATE TABLE IF NOT EXISTS grants (node_id TEXT PRIMARY KEY, slots INTEGER NOT NULL, lease REAL NOT NULL,
    fresh_until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS granted (task_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS granted_node ON granted (node_id, at);
""".replace("{finished_trigger}", finished_trigger())

# Bumped whenever SCHEMA or _migrate changes: a file at this version is opened without taking the write lock.
SCHEMA_VERSION = 8

TOPIC_BYTES: dict[str, bytes] = {Topic.TASKS: b"t", Topic.RESULTS: b"r", Topic.MEMBERS: b"m", Topic.MEMORY: b"y",
                                  Topic.CANCEL: b"c"}
BYTE_TOPICS = {v[0]: k for k, v in TOPIC_BYTES.items()}
STARTED = b"T"  # a wake-up that is the tasks an enqueue started for the node: the rest is their rows, packed
FINISHED = b"F"  # a wake-up that is the node's new result-feed entries (``finishing``)

R = TypeVar("R")


def bounded(columns: Sequence[str], limits: Mapping[str, int] | None = None, whole: Sequence[str] = ()) -> str:
    """SELECT expressions for ``columns`` that never load a huge value into Python: a value longer than its limit
    (``limits``, else ``MAX_NAME_BYTES``) reads as its first 64 characters, and one more column names the first
    column over its limit (NULL when none is); ``fitting`` turns that into CorruptRecord. The ``whole`` columns
    (a key that finds the row again to move it aside) are read as they are."""
    limits = limits or {}
    cut = [c for c in columns if c not in whole]
    exprs = [c if c in whole else f"CASE WHEN length({c}) > {limits.get(c, MAX_NAME_BYTES)} THEN substr({c}, 1, 64)"
             f" ELSE {c} END" for c in columns]
    over = " ".join(f"WHEN length({c}) > {limits.get(c, MAX_NAME_BYTES)} THEN '{c}'" for c in cut)
    return ", ".join(exprs) + (f", CASE {over} END" if over else ", NULL")


def fitting(row: Sequence[Any], what: str) -> Sequence[Any]:
    """A row read with ``bounded`` columns, without its last (the over-limit column); CorruptRecord if one was."""
    if row[-1] is not None:
        raise CorruptRecord(f"{what}: {row[-1]} is over its size limit")
    return row[:-1]


class _LockBusy(Exception):
    """Another connection holds the lock a statement needs (what ``_once`` raises; the caller waits or hands over)."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _refused(path: str, exc: sqlite3.Error) -> BackendError:
    """The one-line error for a file that did not take a write (or cannot be read): it says why and what to do."""
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return BackendError(f"SQLite file {path} did not store the write: {text}",
                            hint="free space on its disk")
    if "readonly" in low or "read-only" in low or _read_only(path):
        return BackendError(f"SQLite file {path} is read-only: {text}",
                            hint="make the file, its folder and its -wal/-shm files writable")
    if "disk i/o" in low:
        return BackendError(f"SQLite file {path} did not store the write: {text}",
                            hint="check its disk: full, failing or gone")
    if isinstance(exc, sqlite3.OperationalError):
        return BackendError(f"SQLite error on {path}: {text}")
    return BackendError(f"SQLite file {path} is not usable: {text}",
                        hint="is it a mesh database? move it aside to start fresh")


def _read_only(path: str) -> bool:
    """The file (or, before it exists, its folder) cannot be written: a read-only mount or permissions."""
    target = path if os.path.exists(path) else os.path.dirname(path) or "."
    return os.path.exists(target) and not os.access(target, os.W_OK)


def _statements(script: str) -> list[str]:
    """``script`` split into whole statements (a trigger body's ``;`` does not end one)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


SCHEMA_STATEMENTS = _statements(SCHEMA)


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema in one write transaction, once per file, whoever gets there first.

    Any number of processes may open a new file at once: each takes ``BEGIN IMMEDIATE``
    (the busy ones wait and retry), looks at the version inside the transaction and finds
    the work already done if another process did it first."""
    def create(c: sqlite3.Connection) -> None:
        if c.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in SCHEMA_STATEMENTS:
                c.execute(statement)
            _migrate(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        _write_transaction(conn, create)


def _pause(seconds: float) -> None:
    """Sleep this worker thread; a clock-shifting preload (libfaketime) can make ``time.sleep`` fail with
    EINVAL, and a failed pause must not fail the write it waits for: fall back to a relative select()."""
    try:
        time.sleep(seconds)
    except OSError:
        select.select([], [], [], seconds)


def _write_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
    """``fn`` in one ``BEGIN IMMEDIATE`` transaction: committed when it returns, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        # SQLite has rolled back by itself after some errors (a full disk in the middle of a statement): a
        # ROLLBACK then fails, and its "no transaction is active" would hide why the write was refused
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _use_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL (a no-op when it already is); returns the journal mode it has."""
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    return str(mode)


def _wake_address(db_path: str, node_id: str) -> str | bytes:
    digest = hashlib.sha1(os.path.realpath(db_path).encode()).hexdigest()[:16]
    if sys.platform.startswith("linux"):
        return b"\0agent-mesh/" + digest.encode() + b"/" + node_id.encode()
    return os.path.join(tempfile.gettempdir(), f"am-{digest[:8]}-{node_id[:12]}.sock")


WAKE_BUFFER_BYTES = 256 * 1024  # the largest wake-up datagram read whole (the senders' stay under ~130 KB)
WAKE_READS_PER_PASS = 64  # datagrams read per readiness callback at most: the loop's other work is not held up
WAKEUPS_REFUSED_LOGGED = 1000  # a refused wake-up is logged once per this many (the first one too)
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PASSES_CREDENTIALS = hasattr(socket, "SO_PASSCRED") and hasattr(socket, "SCM_CREDENTIALS")


def may_use_file(path: str) -> Callable[[int, int], bool]:
    """Whether a process of (uid, gid) may read and write ``path`` as its mode says now (root may): what a wake-up
    that carries tasks or results must come from, since it stands for what that process could store in the file."""
    st = os.stat(path)
    own = os.geteuid()

    def may(uid: int, gid: int) -> bool:
        return (uid in (0, own) or (uid == st.st_uid and st.st_mode & 0o600 == 0o600)
                or (gid == st.st_gid and st.st_mode & 0o060 == 0o060) or st.st_mode & 0o006 == 0o006)
    return may


class _WakeReader:
    """This node's wake-up socket, read on the event loop with ``add_reader`` into one buffer kept for its life.

    asyncio's datagram transport reads each datagram with ``recvfrom(256 KB)``: a fresh 256 KB buffer per read,
    which glibc maps and unmaps (three system calls and a page fault per wake-up, some 20 µs of CPU here, on every
    process, for every task event). Here a readiness callback reads what is waiting, up to ``WAKE_READS_PER_PASS``
    datagrams, each copied out at its own size.

    A wake-up is a topic byte (a hint: the node reads the file) or, after a ``carriers`` prefix, records (tasks
    started for it, results for it) it takes without reading the file. Linux's abstract sockets have no file
    mode, so any local process can send to one: with ``trusted``, a datagram that carries records is taken only
    from a sender the kernel vouches for (``SO_PASSCRED``) as one that may use the file; another is ``refused``
    (its records stay in the file, where a read finds them)."""

    def __init__(self, sock: socket.socket, deliver: Callable[[str], None],
                 carriers: Mapping[bytes, Callable[[bytes], None]], *,
                 trusted: Callable[[int, int], bool] | None = None, refused: Callable[[], None] | None = None) -> None:
        self._sock = sock
        self._deliver = deliver
        self._carriers = carriers
        self._trusted = trusted if _PASSES_CREDENTIALS else None
        self._refused = refused
        if self._trusted is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._ancillary = socket.CMSG_SPACE(_CREDENTIALS.size) if self._trusted is not None else 0
        self._buffer = bytearray(WAKE_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._ready)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _ready(self) -> None:
        for _ in range(WAKE_READS_PER_PASS):
            try:
                if self._trusted is None:
                    size, sender = self._sock.recv_into(self._buffer), None
                else:
                    size, ancillary, _, _ = self._sock.recvmsg_into([self._buffer], self._ancillary)
                    sender = next((_CREDENTIALS.unpack_from(data)[1:] for level, kind, data in ancillary
                                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                                   and len(data) >= _CREDENTIALS.size), (-1, -1))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a hint only: the node polls anyway
                log.debug("wake-up socket: %s", exc)
                return
            self.datagram_received(bytes(self._view[:size]), sender)

    def datagram_received(self, data: bytes, sender: tuple[int, int] | None = None) -> None:
        carrier = self._carriers.get(data[:1])
        if carrier is not None:
            if self._trusted is None or (sender is not None and self._trusted(*sender)):
                carrier(data[1:])
            elif self._refused is not None:
                self._refused()
            return
        for byte in data[:8]:
            topic = BYTE_TOPICS.get(byte)
            if topic:
                self._deliver(topic)


class SqliteStore(SharedStoreBackend):
    """The file, its two connections (reads on their own thread; writes on the loop's, or on their own thread while
    another process holds the lock) and the wake-up sockets; no mesh records."""

    def __init__(self, path: str, limits: codec.CodecLimits, *, lock_give_up_seconds: float,
                 file_mode: int = PRIVATE_FILE) -> None:
        super().__init__(limits)
        self.path = os.path.abspath(path)
        self.file_mode = file_mode
        self._checkpoints: Checkpointer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # Reads have their own connection and thread: in WAL mode they never wait for the write lock, so a
        # result or state read is not queued behind a write that waits for another process.
        self._read_pool: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._local: NodeInfo | None = None
        self._wake: _WakeReader | None = None
        self._send_sock: socket.socket | None = None
        self._peer_ids: list[str] = []
        self._addresses: dict[str, str | bytes] = {}
        self.lock_waits = 0
        self.wakeups_refused = 0  # wake-ups carrying records from a process that may not use the file
        self._on_thread = [0, 0]  # calls handed to the write (0) and read (1) threads and not done yet
        self.lock_give_up_seconds = lock_give_up_seconds

    # -- plumbing --------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        prepare_sqlite_file(self.path, self.file_mode)  # the mode before SQLite opens it; -wal/-shm follow
        # No busy timeout inside SQLite: its handler sleeps 1, 2, 5, 10 ms … per wait, far longer than the
        # lock is held here. _retrying waits instead, from 50 µs up, until LOCK_GIVE_UP_SECONDS.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        try:
            # Every step may meet another process creating the same file: each is retried while busy.
            mode = self._retrying(_use_wal, conn)
            if mode.lower() != "wal":
                raise BackendError(f"SQLite file {self.path} cannot use WAL mode (got {mode})",
                                   hint="put it on a local disk, not a network share")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            writes_apart(conn)  # WAL checkpoints on their own thread, not in a commit on the loop's (``_run``)
            self._retrying(_create_schema, conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA query_only=1")
        return conn

    def _once(self, fn: Callable[[sqlite3.Connection], R], conn: sqlite3.Connection) -> R:
        """``fn`` once; raises ``_LockBusy`` (rolled back) when another connection holds the lock it needs, a clear
        error for anything else the file refuses."""
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not _is_busy(exc):
                raise _refused(self.path, exc) from None
            raise _LockBusy from None
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _refused(self.path, exc) from None

    def _retrying(self, fn: Callable[[sqlite3.Connection], R], conn: sqlite3.Connection) -> R:
        delay, deadline = 0.00005, time.monotonic() + self.lock_give_up_seconds
        while True:
            try:
                return self._once(fn, conn)
            except _LockBusy:
                self.lock_waits += 1
                if time.monotonic() > deadline:
                    holder = write_lock_holder(self.path)
                    raise BackendUnavailable(
                        f"SQLite file {self.path} stayed locked by another process"
                        f" for {self.lock_give_up_seconds:.0f} s"
                        + (f": {holder.describe()}" if holder is not None else ""),
                        hint="check for a stuck process holding it") from None
                # Jittered, so processes that collided (a mesh starting at once) do not collide again in step.
                _pause(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 1.5, 0.02)

    async def _run(self, fn: Callable[[sqlite3.Connection], R], *, reader: bool = False, inline: bool = True) -> R:
        """``fn`` on the write connection (a reader's: the read connection), on this thread when ``inline`` and
        the connection's thread has nothing of it in hand, else on that thread.

        Every write, and the reads on a hot path (a submitter's result feed), runs here, on the loop's thread, in
        the time the hand-over to the connection's thread and back would take (about 0.3 ms a call on this
        2-core machine, and several stand between a submit and its result). It never waits for a lock (no busy
        timeout): when another process holds one, the call goes to the connection's thread, which waits for it,
        and the calls after it follow it there until it is done, so each connection's calls stay in order, one at
        a time (a write committed before its caller goes on). Other reads (lists, sweeps, snapshots: larger) run
        on the read thread, which overlaps their SQLite work with the loop's."""
        pool, conn = (self._read_pool, self._read_conn) if reader else (self._pool, self._conn)
        if pool is None or conn is None:
            raise BackendUnavailable("the SQLite backend is not open")
        if inline and not self._on_thread[reader]:
            try:
                return self._once(fn, conn)
            except _LockBusy:
                self.lock_waits += 1
        self._on_thread[reader] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, self._retrying, fn, conn)
        finally:
            self._on_thread[reader] -= 1

    async def _write(self, fn: Callable[[sqlite3.Connection], R], *, inline: bool = True) -> R:
        """``fn`` in one write transaction; returns only after its COMMIT succeeded (what a caller may acknowledge).
        Not ``inline``: a bulk write (retention, compaction, a takeover) on the write thread, so the loop goes on
        meanwhile (see ``_run``)."""
        return await self._run(lambda conn: _write_transaction(conn, fn), inline=inline)

    async def _read(self, fn: Callable[[sqlite3.Connection], R], *, inline: bool = False) -> R:
        """``fn`` in one read transaction; ``inline``: a small read on a hot path (see ``_run``)."""
        def tx(conn: sqlite3.Connection) -> R:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:  # not after an error SQLite rolled back by itself (see _write_transaction)
                    conn.execute("COMMIT")
        return await self._run(tx, reader=True, inline=inline)

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
            else:
                self._send_records(node_id, payload)  # not sent (peer gone, buffer full): a hint only, it polls

    def _wakeup_refused(self) -> None:
        self.wakeups_refused += 1
        if self.wakeups_refused % WAKEUPS_REFUSED_LOGGED == 1:
            log.warning("%d wake-up(s) carrying tasks or results refused: sent by a process that may not use %s "
                        "(their records stay in the file)", self.wakeups_refused, self.path)

    def _send_records(self, node_id: str, datagram: bytes) -> bool:
        """A wake-up to ``node_id``: a topic byte, or records (``STARTED``, ``FINISHED``); False when it could not be
        sent (the node's socket is gone or full: its records stay in the file, where its next read finds them)."""
        if self._send_sock is None:
            return False
        try:
            address = self._addresses.get(node_id)
            if address is None:
                address = self._addresses[node_id] = _wake_address(self.path, node_id)
            self._send_sock.sendto(datagram, address)
        except OSError:
            return False
        return True

    def _broadcast(self, topic: str) -> None:
        self._signal(self._peer_ids, topic)


def _table_sql(conn: sqlite3.Connection, name: str) -> str:
    """How ``name`` was created (its ``CREATE`` statement as stored in the file), or "" when it does not exist."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (name,)).fetchone()
    return str(row[0]) if row and row[0] else ""


def _migrate(conn: sqlite3.Connection) -> None:
    """Add columns that later releases introduced to a file made by an earlier one."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    for column, ddl in (("parent_id", "TEXT"), ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
                        ("signature", "TEXT"), ("progress", "REAL"), ("progress_message", "TEXT")):
        if column not in have:
            conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {ddl}")
    node_columns = {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}
    for column, ddl in (("signature", "TEXT"), ("beat", "INTEGER NOT NULL DEFAULT 0"), ("beat_at", "REAL"),
                        ("version", "INTEGER NOT NULL DEFAULT 0"), ("news", "TEXT"), ("published", "REAL")):
        if column not in node_columns:
            conn.execute(f"ALTER TABLE nodes ADD COLUMN {column} {ddl}")
    conn.execute("CREATE INDEX IF NOT EXISTS nodes_version ON nodes (version)")
    conn.execute("CREATE INDEX IF NOT EXISTS nodes_beat_at ON nodes (beat_at)")
    conn.execute("INSERT OR IGNORE INTO membership (id, version, epoch) VALUES (0, 0, ?)", (os.urandom(8).hex(),))
    # Fewer b-trees written by every enqueue (each a few pages of the commit): the parent index holds subtasks
    # only, and ``granted`` is keyed by its task id alone (no rowid tree beside the key's index)
    if "WHERE" not in (conn.execute("SELECT sql FROM sqlite_master WHERE name='tasks_parent'").fetchone() or ("",))[0]:
        conn.execute("DROP INDEX IF EXISTS tasks_parent")
        conn.execute("CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL")
    if "WITHOUT ROWID" not in _table_sql(conn, "granted"):
        conn.execute("ALTER TABLE granted RENAME TO granted_old")
        conn.execute("DROP INDEX IF EXISTS granted_node")
        for statement in SCHEMA_STATEMENTS:
            if "EXISTS granted " in statement or "EXISTS granted_node " in statement:
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO granted SELECT task_id, node_id, attempt, at FROM granted_old")
        conn.execute("DROP TABLE granted_old")
    # Read by nothing since results have their feed (``finished``), and written by every enqueue and outcome.
    conn.execute("DROP INDEX IF EXISTS tasks_finished")
    if "bucket" not in {row[1] for row in conn.execute("PRAGMA table_info(memory_log)")}:
        conn.execute("ALTER TABLE memory_log ADD COLUMN bucket INTEGER")
    # Every memory write is one b-tree insert per index, at a random place for most (a page of the commit each):
    # the log is read by its seq alone, and memory_latest by its key first (schema 8).
    conn.execute("DROP INDEX IF EXISTS memory_bucket")
    conn.execute("DROP INDEX IF EXISTS memory_key")
    if "PRIMARY KEY (key," not in _table_sql(conn, "memory_latest"):
        conn.execute("ALTER TABLE memory_latest RENAME TO memory_latest_old")
        conn.execute("DROP INDEX IF EXISTS memory_latest_bucket")
        conn.execute("DROP INDEX IF EXISTS memory_latest_key")
        for statement in SCHEMA_STATEMENTS:
            if "EXISTS memory_latest " in statement or "EXISTS memory_latest_bucket " in statement:
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO memory_latest (memory_type, key, origin, frame, bucket)"
                     " SELECT memory_type, key, origin, frame, bucket FROM memory_latest_old")
        conn.execute("DROP TABLE memory_latest_old")
    # Leases and retry times were stamped with each process's wall clock; now on the machine clock (uptime,
    # far below 1e9 s): move a file's old stamps over once.
    shift = time.time() - machine_clock()
    conn.execute("UPDATE tasks SET not_before=max(0, not_before-?) WHERE status IN ('assigned','pending')"
                 " AND typeof(not_before)='real' AND not_before>1e9", (shift,))
    conn.execute("UPDATE tasks SET lease_expires=lease_expires-? WHERE status='running'"
                 " AND typeof(lease_expires)='real' AND lease_expires>1e9",
                 (shift,))
    conn.execute("UPDATE leases SET expires=expires-? WHERE typeof(expires)='real' AND expires>1e9", (shift,))
    if conn.execute("SELECT 1 FROM memory_latest LIMIT 1").fetchone() is None:
        # A file from before memory_latest: fill it from the log, newest entry per (key, origin) last.
        conn.executemany(
            "INSERT OR REPLACE INTO memory_latest (memory_type, key, origin, frame, bucket) VALUES (?,?,?,?,?)",
            [(mt, key, origin, frame, bucket_of(mt, key)) for mt, key, origin, frame in conn.execute(
                "SELECT memory_type, key, origin, frame FROM memory_log ORDER BY seq")])

