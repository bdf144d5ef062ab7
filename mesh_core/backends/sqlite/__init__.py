"""``sqlite_local``: one shared SQLite file in WAL mode joins the processes of one machine.

All SQL runs on one dedicated thread per backend, one whole transaction per
hop, so the event loop never blocks on a lock. Concurrent calls of the same
kind are coalesced into one transaction (batched writes), which is what makes
thousands of tasks a second possible. Writers take ``BEGIN IMMEDIATE``; a
busy file is waited for (``busy_timeout``, then retries with backoff) and
never shown to a user as "database is locked".

The parts, along the three contracts: ``store`` (file, connections, wake-ups),
``tasks`` (TaskTransport), ``memory`` (MemoryLog); ``SqliteBackend`` here adds
membership and the lifecycle.

Liveness: each heartbeat adds one to its row's ``beat`` (the sequence the
failure detector watches change) and stamps ``beat_at`` with the machine's
boot clock (``machine_clock``: seconds since boot, read from the kernel's
``/proc/uptime``). Every process sharing the file runs on one machine (WAL
needs that), so that clock is one clock for all of them, and it is nobody's
wall clock: setting the date, an NTP step or a process under ``faketime``
moves ``time.time()`` (and, under libfaketime, even ``time.monotonic()``) but
not the kernel's uptime. A snapshot gives each record's age on that clock as
``now - last_seen`` (both in the reader's wall-clock frame), which is what every
reader judges by (``MeshSnapshot.aged``). A row written by an older release (no
``beat_at``) is aged by the wall-clock ``last_seen`` its writer stamped. Task leases and
retry times (``tasks``) are on the machine clock too; the kernel's wall time
(``clock.wall_reference``) is what a node measures its own wall clock against.

Membership follows changes: a heartbeat whose row says something new (see
``shared.news_of``) takes the next ``membership.version`` for its row's
``version``; a reader keeps the rows it read and fetches those with a higher
version, plus the stamps older than its ``stamp_window`` (both indexed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ... import codec
from ...checkpoints import Checkpointer
from ...errors import BackendUnavailable
from ...files import PRIVATE_FILE
from ...model import NodeInfo
from ..contracts import MeshSnapshot, Topic
from ..shared import GAUGE_SECONDS, MAX_LIST_BYTES, NODE_FIELDS, CorruptRecord, FollowedNodes, news_of
from .clock import machine_clock, wall_reference
from .locks import write_lock_holder
from .memory import SqliteMemory
from .store import FINISHED, STARTED, _wake_address, _WakeReader, bounded, fitting, may_use_file
from .tasks import SqliteTasks

# Read when a backend is made, from this module, so a test can shorten it.
LOCK_GIVE_UP_SECONDS = 60.0
FINISHED_KEEP = 200_000  # rows of the finished feed kept for submitters' cursors


PARK_WAIT_SECONDS = 10.0  # at_rest: the longest a read under way may keep the read thread from parking


class SqliteBackend(SqliteTasks, SqliteMemory):
    """The whole ``sqlite_local`` medium: the tasks and memory parts on one store, plus membership."""

    name = "sqlite_local"

    def __init__(self, path: str, *, limits: codec.CodecLimits = codec.DEFAULT_LIMITS,
                 file_mode: int = PRIVATE_FILE) -> None:
        super().__init__(path, limits, lock_give_up_seconds=LOCK_GIVE_UP_SECONDS, file_mode=file_mode)
        self._view = FollowedNodes()  # this reader's copy of the node rows (see ``snapshot``)

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
        self._checkpoints = Checkpointer(self.path)
        address = _wake_address(self.path, local.node_id)
        if isinstance(address, str) and os.path.exists(address):
            os.unlink(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        if isinstance(address, str):  # a socket file (not Linux): who may send to it, as who may use the database
            os.chmod(address, self.file_mode)
        sock.setblocking(False)
        self._wake = _WakeReader(sock, self._deliver, {STARTED: self._started_here, FINISHED: self._finished_here},
                                 trusted=may_use_file(self.path), refused=self._wakeup_refused)
        self._send_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._send_sock.setblocking(False)

    async def close(self) -> None:
        if self._wake is not None:
            self._wake.close()
            self._wake = None
            if self._local is not None:
                address = _wake_address(self.path, self._local.node_id)
                if isinstance(address, str) and os.path.exists(address):
                    os.unlink(address)
        if self._send_sock is not None:
            self._send_sock.close()
            self._send_sock = None
        if self._checkpoints is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpoints.close)
            self._checkpoints = None
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
        news = news_of(node)

        def upsert(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT incarnation, left_mesh, news, published FROM nodes WHERE node_id=?",
                               (node.node_id,)).fetchone()
            beat_at = machine_clock()
            changed = row is None or row[0] != node.incarnation or bool(row[1])
            # news for every reader (see ``snapshot``); the load gauges alone at most every GAUGE_SECONDS
            published = row[3] if row is not None and isinstance(row[3], int | float) else None
            bumped = changed or row[2] != news or published is None or beat_at - published >= GAUGE_SECONDS
            version = _bump(conn) if bumped else None
            conn.execute(
                "INSERT INTO nodes (node_id, name, node_type, role, host, port, pid, incarnation, capabilities,"
                " task_types, capacity, running, queued, metrics, started_at, last_seen, left_mesh, signature,"
                " beat, beat_at, version, news, published)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,1,?,?,?,?) ON CONFLICT(node_id) DO UPDATE SET"
                " name=excluded.name, node_type=excluded.node_type, role=excluded.role, host=excluded.host,"
                " port=excluded.port, pid=excluded.pid, incarnation=excluded.incarnation,"
                " capabilities=excluded.capabilities, task_types=excluded.task_types, capacity=excluded.capacity,"
                " running=excluded.running, queued=excluded.queued, metrics=excluded.metrics,"
                " started_at=excluded.started_at, last_seen=excluded.last_seen, signature=excluded.signature,"
                " beat=nodes.beat+1, beat_at=excluded.beat_at,"
                " version=coalesce(?, nodes.version), news=excluded.news,"
                " published=coalesce(?, nodes.published),"
                # a heartbeat racing a leave must not undo it; a new incarnation rejoins
                " left_mesh=CASE WHEN excluded.incarnation > nodes.incarnation THEN 0 ELSE nodes.left_mesh END",
                (node.node_id, node.name, node.node_type.value, node.role.value, node.host, node.port, node.pid,
                 node.incarnation, json.dumps(sorted(node.capabilities)), json.dumps(sorted(node.task_types)),
                 node.capacity, node.running, node.queued, json.dumps(node.metrics, default=str),
                 node.started_at, time.time(), node.signature, beat_at, version or 0, news,
                 beat_at if bumped else None, version, beat_at if bumped else None))
            conn.execute("DELETE FROM finished WHERE seq < (SELECT max(seq) FROM finished) - ?", (FINISHED_KEEP,))
            return changed
        changed = await self._write(upsert)
        if changed:
            await self._refresh_peers()
            self._broadcast(Topic.MEMBERS)

    async def leave(self, node: NodeInfo) -> None:
        await self._write(lambda c: c.execute(
            "UPDATE nodes SET left_mesh=1, running=0, queued=0, version=? WHERE node_id=?", (_bump(c), node.node_id)))
        self._broadcast(Topic.MEMBERS)

    async def _refresh_peers(self) -> None:
        horizon = time.time() - 3600
        rows = await self._read(lambda c: c.execute(
            "SELECT node_id FROM nodes WHERE left_mesh=0 AND last_seen>?", (horizon,)).fetchall())
        self._peer_ids = [r[0] for r in rows]

    async def snapshot(self, stamp_window: float = 0.0) -> MeshSnapshot:
        view, window = self._view, stamp_window
        full = view.due_full()

        def read(conn: sqlite3.Connection) -> MeshSnapshot:
            epoch, version = conn.execute("SELECT epoch, version FROM membership WHERE id=0").fetchone() or ("", 0)
            everything = full or epoch != view.epoch or version < view.version
            where, args = ("", ()) if everything else (" WHERE version > ?", (view.version,))
            rows = conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes{where}", args).fetchall()
            now, booted = time.time(), machine_clock()
            # the stale stamps only (an index range): a younger heartbeat changes no verdict (``stamp_window``)
            cutoff = booted - window if window > 0 else math.inf
            stale = conn.execute("SELECT node_id, beat, beat_at, last_seen FROM nodes WHERE beat_at < ?"
                                 " OR beat_at IS NULL", (cutoff,)).fetchall()
            count = None if everything else conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
            queued = dict(conn.execute(
                "SELECT node_id, count(*) FROM tasks WHERE status IN ('assigned','running') GROUP BY node_id"
            ).fetchall())
            if everything:
                view.reset(str(epoch), int(version))
            else:
                view.version = int(version)
            nodes = self.readable(
                "node row", rows, lambda r: self.node_from_fields(_node_fields(r, now, booted)),
                aside=lambda r: ("node", r[0], [("DELETE FROM nodes WHERE node_id=?", (r[0],))]))
            stamps = {n.node_id: (n.last_seen, n.heartbeat_seq) for n in nodes}
            for r in rows:
                view.drop(str(r[0]))  # a row that does not read goes out of the copy (it is moved aside)
            for n in nodes:
                view.records[n.node_id] = n
            for node_id, beat, beat_at, last_seen in stale:
                at = _stamp_of(beat_at, last_seen, now, booted)
                if at is not None and isinstance(beat, int):
                    stamps[str(node_id)] = (at, beat)
            view.recount = count is not None and count != len(view.records)
            snap = MeshSnapshot(view.nodes(now, stamps), now, queued, clock=now, aged=True)  # task times: same frame
            reference = wall_reference()
            if reference is not None:
                snap.reference_wall, snap.local_wall, snap.reference_error = reference
            return snap
        snap = await self._read_settled(read)
        self._peer_ids = [n.node_id for n in snap.nodes if not n.left and snap.now - n.last_seen < 3600]
        return snap

    async def wake(self, node_ids: Iterable[str], topic: str) -> None:
        self._signal(node_ids, topic)

    async def hold_lease(self, name: str, holder: str, ttl: float) -> str:
        def hold(conn: sqlite3.Connection) -> str:
            now = machine_clock()
            conn.execute("INSERT INTO leases (name, holder, expires) VALUES (?,?,?) ON CONFLICT(name) DO UPDATE SET"
                         " holder=excluded.holder, expires=excluded.expires"
                         " WHERE leases.holder=excluded.holder OR leases.expires<?", (name, holder, now + ttl, now))
            return str(conn.execute("SELECT holder FROM leases WHERE name=?", (name,)).fetchone()[0])
        return await self._write(hold)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "lock_waits": self.lock_waits,
                "wakeups_refused": self.wakeups_refused, **self.started_counts(), **self.feed_counts()}

    async def at_rest(self, fn: Callable[[], None]) -> None:
        # Every connection of this process to the file is held between two calls: the read thread parked (a
        # reader too may take the write lock for a moment, to rebuild a WAL index it found half written), the
        # checkpoint thread between rounds, and ``fn`` runs on the write thread as a write would, with the loop's
        # own reads and writes queued behind them (``_run``), so nothing of the file is held while it runs.
        parked, release = threading.Event(), threading.Event()

        def park(conn: sqlite3.Connection) -> None:
            parked.set()
            release.wait()

        def call(conn: sqlite3.Connection) -> None:
            with self._checkpoints.between_rounds if self._checkpoints is not None else contextlib.nullcontext():
                fn()

        reader = asyncio.ensure_future(self._run(park, reader=True, inline=False))
        try:
            waiting: asyncio.Future[Any] = asyncio.get_running_loop().run_in_executor(None, parked.wait,
                                                                                     PARK_WAIT_SECONDS)
            await asyncio.wait({reader, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # it could not park (the medium closed): its error
            await self._run(call, inline=False)
        finally:
            release.set()
            await reader

    def why_stalled(self) -> str:
        holder = write_lock_holder(self.path)
        return holder.describe() if holder is not None else ""


# A node row as read: a field over its size limit is not loaded whole (``bounded``) and makes the row corrupt.
NODE_COLUMNS = bounded(
    ("node_id", "name", "node_type", "role", "host", "port", "pid", "incarnation", "capabilities", "task_types",
     "capacity", "running", "queued", "metrics", "started_at", "last_seen", "left_mesh", "signature", "beat",
     "beat_at"),
    {"capabilities": MAX_LIST_BYTES, "task_types": MAX_LIST_BYTES, "metrics": MAX_LIST_BYTES}, whole=("node_id",))


def _bump(conn: sqlite3.Connection) -> int:
    """One more change of the membership (inside the caller's write transaction): the new version."""
    row = conn.execute("UPDATE membership SET version=version+1 WHERE id=0 RETURNING version").fetchone()
    if row is None:  # a file whose membership row went missing: a new epoch, readers start again
        conn.execute("INSERT INTO membership (id, version, epoch) VALUES (0, 1, ?)", (os.urandom(8).hex(),))
        return 1
    return int(row[0])


def _stamp_of(beat_at: Any, last_seen: Any, now: float, booted: float) -> float | None:
    """A row's last heartbeat in the reader's frame (see ``_node_fields``); None when it is not a number."""
    for value, shift in ((beat_at, now - booted), (last_seen, 0.0)):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value) + shift
        if value is not None:
            return None
    return None


def _node_fields(r: tuple[Any, ...], now: float, booted: float) -> dict[str, Any]:
    """A node row's fields for ``node_from_fields``; ``last_seen`` in the reader's frame: ``now`` less the age of
    its beat on the machine clock (a beat time that is not a number makes the row corrupt)."""
    fields = dict(zip((*NODE_FIELDS, "heartbeat_seq", "beat_at"), fitting(r, f"node {r[0]!r}"), strict=True))
    beat_at = fields.pop("beat_at")
    if beat_at is not None:
        if isinstance(beat_at, bool) or not isinstance(beat_at, int | float) or not math.isfinite(beat_at):
            raise CorruptRecord(f"node {r[0]!r}: beat time {beat_at!r} is not a number")
        fields["last_seen"] = now - (booted - beat_at)
    # else: a row written by an older release, stamped with its writer's wall clock (on this same machine)
    return fields


__all__ = ["LOCK_GIVE_UP_SECONDS", "SqliteBackend"]
