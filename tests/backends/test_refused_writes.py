"""A write the medium refuses leaves no trace: not in the writer's replica, and never in the mesh later.

Before the fix a refused local write stayed in the writer's replica: its own ``recall`` showed a value the
mesh never took, and anti-entropy (which re-sends the node's own writes) later pushed it to every node — a
write reported as failed appeared afterwards. Here a real medium refuses: a SQLite mesh file on a small
filesystem that is full (a tmpfs this test mounts; root only), or a redis-server at ``maxmemory`` with
``noeviction``. Every local write path is tried: one item, a batch, ``forget`` and ``rollback``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from mesh_core import AgentMeshManager
from mesh_core.backends import sqlite as sqlite_backend
from mesh_core.errors import BackendError, BackendUnavailable, MemoryNotFound
from mesh_core.memory.store import ReplicaStore
from mesh_core.model import MemoryItem, NodeInfo, NodeStatus
from mesh_testing import Cluster, RedisServer, eventually
from tests.backends.test_durable_ack import Outage
from tests.cli.test_durable_writes import _fill, _mount_tmpfs, _unmount

SETTINGS = {  # slow enough failure detection that a few seconds of refused heartbeats kill no one
    "heartbeat_interval_seconds": 0.2,
    "suspect_after_seconds": 3.0,
    "node_timeout_seconds": 6.0,
    "shutdown_grace_seconds": 0.5,
    "sync_interval_seconds": 0.5,
}
BIG = "x" * 200_000  # more than a full disk's last free blocks


class Refusal:
    """A mesh whose medium can be made to refuse writes (reads go on) and then take them again."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.server: RedisServer | None = None
        self.disk: Path | None = None
        self.filler: Path | None = None
        self.pin: sqlite3.Connection | None = None
        if backend == "redis":
            self.server = RedisServer().start()
            self.cluster = Cluster(root, "redis", self.server.url, settings=SETTINGS)
        else:
            if os.geteuid() != 0:
                pytest.skip("a full filesystem for the mesh file needs root or a user namespace (tests/conftest.py)")
            self.disk = root / "disk"
            _mount_tmpfs(self.disk, "8m")
            (root / "mesh").mkdir()
            self.cluster = Cluster(root / "mesh", "sqlite", settings=SETTINGS)
            self.cluster.db = self.disk / "mesh.db"  # the medium on the small disk; the replicas are not
            self.cluster.write_config(SETTINGS)

    async def begin(self) -> None:
        if self.server is not None:
            with redis.Redis.from_url(self.server.url) as admin:
                admin.config_set("maxmemory-policy", "noeviction")
                admin.config_set("maxmemory", 1)
        else:
            assert self.disk is not None
            self.pin = await _pin_wal(self.disk / "mesh.db")
            self.filler = _fill(self.disk)

    def end(self) -> None:
        if self.server is not None:
            with redis.Redis.from_url(self.server.url) as admin:
                admin.config_set("maxmemory", 0)
        elif self.filler is not None:
            assert self.pin is not None
            self.pin.close()
            self.pin = None
            self.filler.unlink()
            self.filler = None

    async def close(self) -> None:
        try:
            self.end()
            await self.cluster.close()
        finally:
            if self.server is not None:
                self.server.cleanup()
            if self.disk is not None:
                _unmount(self.disk)


async def _pin_wal(db: Path) -> sqlite3.Connection:
    """Make every later write to ``db`` need new disk blocks, so a full disk refuses each one, however small.

    A WAL file keeps its blocks when SQLite restarts it (up to ``journal_size_limit``), so on a full disk a write
    that fits in blocks the WAL already has is taken and stored: a tombstone, say, or a frame lz4 makes small. The
    WAL is cut to nothing first; then a read transaction is held over frames it has, and while a reader uses
    the WAL SQLite appends to it and never restarts it.
    """
    pin = sqlite3.connect(db, timeout=10, isolation_level=None)
    pin.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    wal = db.with_name(db.name + "-wal")
    deadline = time.monotonic() + 10
    while wal.stat().st_size == 0:  # the nodes' heartbeats write within a fraction of a second
        assert time.monotonic() < deadline, "no write reached the mesh file's WAL"
        await asyncio.sleep(0.01)
    pin.execute("BEGIN")
    pin.execute("SELECT count(*) FROM sqlite_master").fetchall()
    return pin


@pytest.fixture(params=["sqlite", "redis"])
async def refusal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Refusal]:
    r = Refusal(request.param, tmp_path)
    try:
        yield r
    finally:
        await r.close()


async def _refused(write: Callable[[], Awaitable[Any]]) -> None:
    with pytest.raises(BackendError) as refused:
        await write()
    assert not isinstance(refused.value, BackendUnavailable), refused.value


async def _value(mesh: AgentMeshManager, key: str) -> Any:
    try:
        return await mesh.recall(key)
    except MemoryNotFound:
        return None


def _replica(mesh: AgentMeshManager) -> ReplicaStore:
    return mesh.services.memory.store


def _rows(mesh: AgentMeshManager, key: str) -> Any:
    """Everything the writer's replica holds of ``key`` (siblings, sources, history, conflicts)."""
    return _replica(mesh).key_state("fact", key).rows


def _sees_active(watcher: AgentMeshManager, other: AgentMeshManager) -> bool:
    return watcher.status_of(other.node_id) is NodeStatus.ACTIVE


@pytest.mark.mounts
async def test_a_refused_write_leaves_no_trace_in_the_writer_or_the_mesh(refusal: Refusal) -> None:
    cluster = refusal.cluster
    w1 = await cluster.node("w1")
    w2 = await cluster.node("w2")
    await w1.sync_memory_item("fact", "first", key="k")
    await w1.sync_memory_item("fact", "old", key="k")  # k has an earlier version: rollback has one to restore
    await w1.sync_memory_items("fact", {"b1": "old b1"})
    await w1.sync_memory_item("fact", "kept", key="f")
    for key, value in (("k", "old"), ("b1", "old b1"), ("f", "kept")):
        await eventually(lambda key=key, value=value: _is(w2, key, value), timeout=30, interval=0.1)
    before = {key: _rows(w1, key) for key in ("k", "b1", "b2", "f")}

    await refusal.begin()
    try:
        await _refused(lambda: w1.sync_memory_item("fact", BIG, key="k"))
        await _refused(lambda: w1.sync_memory_items("fact", {"b1": BIG, "b2": BIG}))
        await _refused(lambda: w1.forget("f"))
        await _refused(lambda: w1.rollback("k", 1))
        # The writer's own replica shows what the mesh holds, exactly as before the refused writes.
        assert await _value(w1, "k") == "old"
        assert await _value(w1, "b1") == "old b1"
        assert await _value(w1, "b2") is None
        assert await _value(w1, "f") == "kept"
        assert {key: _rows(w1, key) for key in before} == before
    finally:
        refusal.end()

    # Anti-entropy on both nodes, with each seeing the other active: nothing refused travels.
    await eventually(lambda: _sees_active(w1, w2), timeout=30, interval=0.1)
    await eventually(lambda: _sees_active(w2, w1), timeout=30, interval=0.1)
    for _ in range(2):
        await w2.services.sync.anti_entropy()
        await w1.services.sync.anti_entropy()
        await w2.services.sync.sync_now()
    reader = await cluster.client()
    for mesh in (w1, w2, reader):
        assert [await _value(mesh, key) for key in ("k", "b1", "b2", "f")] == ["old", "old b1", None, "kept"]

    # The medium takes writes again, and they work as ever.
    await w1.sync_memory_item("fact", "new", key="k")
    await w1.sync_memory_items("fact", {"b2": "new b2"})
    await w1.forget("f")
    assert await _value(w1, "k") == "new"
    for key, value in (("k", "new"), ("b2", "new b2"), ("f", None)):
        await eventually(lambda key=key, value=value: _is(w2, key, value), timeout=30, interval=0.1)
    assert [h["value"] for h in await w2.history("k")][:2] == ["old", "first"]


async def _is(mesh: AgentMeshManager, key: str, value: Any) -> bool:
    return await _value(mesh, key) == value


def test_restore_puts_back_siblings_sources_history_and_conflicts(tmp_path: Path) -> None:
    """The replica's undo record: a key's full history (trimmed by the next write) and an open conflict
    (closed by the next write) come back exactly, and a conflict opened since is named as gone."""
    store = ReplicaStore(str(tmp_path / "replica.db"), history_size=3)
    try:
        versions = [MemoryItem("fact", "k", f"v{i}", {"a": i}, 100 + i, "a") for i in range(1, 6)]
        for prev, item in zip(versions, versions[1:], strict=False):
            store.replace_siblings("fact", "k", (item,), (prev,), "local write", sources=(item,))
        store.open_conflict("c-old", "fact", "k", "manual", "two writers", ("$",))
        before = store.key_state("fact", "k")
        newer = MemoryItem("fact", "k", "refused", {"a": 6}, 200, "a")
        with store.batch():
            store.replace_siblings("fact", "k", (newer,), (versions[-1],), "local write", sources=(newer,))
            assert store.close_conflicts_of([("fact", "k")], "local write") == [("c-old", "k")]
            store.open_conflict("c-new", "fact", "k", "manual", "arrived meanwhile", ())
        assert store.key_state("fact", "k") != before
        assert store.restore(before) == ["c-new"]
        assert store.key_state("fact", "k") == before
        assert [s.value for s in store.siblings("fact", "k")] == ["v5"]
        assert [h["value"] for h in store.history("fact", "k")] == ["v4", "v3", "v2"]
        assert [c["conflict_id"] for c in store.conflicts()] == ["c-old"]
        assert store.count() == 1
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_write_that_arrives_while_a_refused_one_is_published_is_kept(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The undo keeps what others wrote to the key meanwhile. A client (its replica in memory: an unreachable
    medium is an error for it, not a queued write) writes while the medium takes no writes; while it waits,
    another node's write to the same key reaches its replica; the failed write is undone around it."""
    outage = Outage(backend, tmp_path, monkeypatch)
    monkeypatch.setattr(sqlite_backend, "LOCK_GIVE_UP_SECONDS", 2.0)  # time to slip the other write in
    cluster = outage.cluster()
    try:
        w2 = await cluster.node("w2")
        client = await cluster.client(**{"redis.socket_timeout_seconds": 2.0})
        await w2.sync_memory_item("fact", "base", key="k")
        [base] = _replica(w2).siblings("fact", "k")
        outage.begin()
        writing = asyncio.ensure_future(client.sync_memory_item("fact", "refused", key="k"))
        replica = _replica(client)
        await eventually(lambda: [s.value for s in replica.siblings("fact", "k")] == ["refused"], timeout=10,
                         interval=0.005)
        # w2's next write, which has not seen the client's: concurrent with it
        theirs = MemoryItem("fact", "k", "theirs", {w2.node_id: base.vv[w2.node_id] + 1}, base.hlc + 1, w2.node_id)
        assert client.services.memory.apply_frame(w2.services.memory.frame_of(theirs))
        assert not writing.done()
        with pytest.raises(BackendUnavailable):
            await writing
        assert [s.value for s in replica.siblings("fact", "k")] == ["theirs"]
        assert [h["value"] for h in replica.history("fact", "k")] == ["base"]
        assert client.conflicts() == []
    finally:
        outage.cleanup()
        await cluster.close()


@pytest.mark.mounts
def test_a_write_a_full_disk_refuses_mid_statement_says_so(tmp_path: Path) -> None:
    """A write bigger than what the disk has left is refused in the middle of its statement, and SQLite rolls the
    transaction back by itself. The error said "cannot rollback - no transaction is active" (the ROLLBACK after it
    failed), hiding why: it names the full disk now, in the mesh file and in a replica, and the next write works."""
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs root, or a user namespace (see tests/conftest.py)")
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        async def mesh_file() -> None:
            backend = sqlite_backend.SqliteBackend(str(disk / "mesh.db"))
            await backend.open(NodeInfo(node_id="w" * 32, name="w1"))
            try:
                with pytest.raises(BackendError, match="disk is full"):
                    await backend._write(lambda c: c.execute("INSERT INTO leases VALUES ('big', ?, 0)",
                                                             (os.urandom(3_000_000).hex(),)))
                await backend._write(lambda c: c.execute("INSERT INTO leases VALUES ('small', 'n1', 0)"))
            finally:
                await backend.close()
        asyncio.run(mesh_file())
        (disk / "mesh.db").unlink()
        for leftover in disk.glob("mesh.db-*"):
            leftover.unlink()
        store = ReplicaStore(str(disk / "memory.db"))
        try:
            big = MemoryItem("fact", "big", os.urandom(3_000_000).hex(), {"o": 1}, 10**9, "o")
            with pytest.raises(sqlite3.OperationalError, match="disk is full"), store.batch():
                store.replace_siblings("fact", "big", (big,), (), "test", fresh=True)
            small = MemoryItem("fact", "small", 1, {"o": 2}, 10**9 + 1, "o")
            store.replace_siblings("fact", "small", (small,), (), "test", fresh=True)
            assert store.find("small") == [small] and store.find("big") == []
        finally:
            store.close()
    finally:
        _unmount(disk)


@pytest.mark.mounts
def test_a_read_whose_sort_a_full_disk_refuses_says_so(tmp_path: Path) -> None:
    """A read that sorts more than SQLite's cache holds spills to a temporary file; on a full disk that fails, and
    SQLite ends the read transaction by itself. The COMMIT after it failed with "cannot commit - no transaction is
    active", which hid why; it names the full disk now, and the next read works."""
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs root, or a user namespace (see tests/conftest.py)")
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")

    async def read() -> None:
        backend = sqlite_backend.SqliteBackend(str(tmp_path / "mesh.db"))
        await backend.open(NodeInfo(node_id="w" * 32, name="w1"))
        try:
            await backend._write(lambda c: c.executemany("INSERT INTO leases VALUES (?, ?, 0)", (
                (f"l{i}", os.urandom(100).hex()) for i in range(40_000))))
            with sqlite3.connect(":memory:") as conn:  # where every connection of this process puts temporary files
                conn.execute(f"PRAGMA temp_store_directory='{disk}'")
            try:
                with pytest.raises(BackendError, match="disk is full"):
                    await backend._read(lambda c: c.execute("SELECT holder FROM leases ORDER BY holder").fetchall())
            finally:
                with sqlite3.connect(":memory:") as conn:
                    conn.execute("PRAGMA temp_store_directory=''")
            assert len(await backend._read(lambda c: c.execute("SELECT name FROM leases").fetchall())) == 40_000
        finally:
            await backend.close()
    try:
        asyncio.run(read())
    finally:
        _unmount(disk)
