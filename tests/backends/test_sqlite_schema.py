"""The SQLite file's schema across releases: a file an earlier release made is brought up to date when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mesh_core import TaskFailed, codec
from mesh_core.backends.contracts import Completion
from mesh_core.backends.shared import with_current_attempt
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.backends.sqlite.store import SCHEMA_VERSION
from mesh_core.memory.digest import bucket_of
from mesh_core.memory.store import item_to_wire
from mesh_core.model import Attempt, MemoryItem, NodeInfo, Task, TaskStatus
from mesh_testing import Cluster
from tests.unit.test_store_digests import old_items_table

from .conftest import eventually, sqlite_file_with_a_claimed_task


async def _is(value: bool) -> bool:
    return value


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='tasks'")}


async def test_a_file_from_schema_5_loses_the_index_nothing_reads_and_its_results_still_read(tmp_path: Path) -> None:
    db, worker = tmp_path / "old.db", "w" * 32
    claimed = await sqlite_file_with_a_claimed_task(db, worker)
    assert "tasks_finished" not in _indexes(db)
    with sqlite3.connect(db) as conn:  # as schema 5 left it: tasks (submitter_id, finished_at) indexed
        conn.execute("CREATE INDEX tasks_finished ON tasks (submitter_id, finished_at)")
        conn.execute("PRAGMA user_version=5")
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    try:
        assert "tasks_finished" not in _indexes(db) and {"tasks_inbox", "tasks_status", "tasks_parent"} <= _indexes(db)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            # the trigger that fills the result feed has the same name, and stays
            assert conn.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND name='tasks_finished'").fetchone()
        _, cursor = await backend.finished_for(worker, None)
        assert await backend.complete([Completion(claimed.task_id, claimed.attempt, worker, TaskStatus.SUCCEEDED)])
        done, _ = await backend.finished_for(worker, cursor)
        assert [(f.task_id, f.status) for f in done] == [(claimed.task_id, TaskStatus.SUCCEEDED)]
    finally:
        await backend.close()


def _sql(db: Path, name: str) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (name,)).fetchone()[0]


async def test_a_file_from_schema_6_writes_fewer_b_trees_per_enqueue_and_keeps_its_grants(tmp_path: Path) -> None:
    db, worker = tmp_path / "old.db", "w" * 32
    await sqlite_file_with_a_claimed_task(db, worker)
    with sqlite3.connect(db) as conn:  # as schema 6 left it: every task in the parent index, granted with a rowid
        conn.execute("DROP INDEX tasks_parent")
        conn.execute("CREATE INDEX tasks_parent ON tasks (parent_id)")
        conn.execute("DROP TABLE granted")
        conn.execute("CREATE TABLE granted (task_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
                     " at REAL NOT NULL)")
        conn.execute("CREATE INDEX granted_node ON granted (node_id, at)")
        conn.execute("INSERT INTO granted VALUES ('t1', ?, 1, 12.5)", (worker,))
        conn.execute("PRAGMA user_version=6")
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    try:
        assert "WHERE parent_id IS NOT NULL" in _sql(db, "tasks_parent")
        assert "WITHOUT ROWID" in _sql(db, "granted") and _sql(db, "granted_node")
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("SELECT task_id, node_id, attempt, at FROM granted").fetchall() == [
                ("t1", worker, 1, 12.5)]
            assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name='granted_old'").fetchone()
            plan = conn.execute("EXPLAIN QUERY PLAN SELECT seq FROM tasks WHERE parent_id=? ORDER BY seq",
                                ("p",)).fetchall()
            assert "tasks_parent" in str(plan)  # a subtask lookup still uses it
    finally:
        await backend.close()
    again = SqliteBackend(str(db))  # opened again: nothing to do
    await again.open(NodeInfo(node_id=worker, name="w1"))
    await again.close()


async def test_a_task_that_simply_succeeds_keeps_its_attempt_in_its_own_row(tmp_path: Path) -> None:
    """Its attempt is the task's own fields (node, started, finished): no row apart is written for it, one b-tree
    fewer at enqueue and at completion; one that ends other than by success, or is moved on from, is on record."""
    async with Cluster(tmp_path, "sqlite") as cluster:
        await cluster.node("w1")
        client = await cluster.client()
        await eventually(lambda: _is(any(m.info.name == "w1" for m in client.members())), timeout=5)
        ok = await client.wait_task(await client.submit_task("echo", {}), timeout=5)
        with pytest.raises(TaskFailed):
            await client.wait_for(await client.submit_task("fail", {"message": "no"}, max_retries=0), timeout=5)
        with sqlite3.connect(cluster.db) as conn:
            on_record = dict(conn.execute("SELECT task_id, count(*) FROM attempts GROUP BY task_id").fetchall())
        assert ok.task_id not in on_record and len(on_record) == 1  # the failed one's attempt is
        full = await client.get_task(ok.task_id)
        assert [(a.attempt, a.node_name, a.error) for a in full.attempts] == [(1, "w1", None)]
        assert full.attempts[0].started_at == full.started_at and full.attempts[0].finished_at == full.finished_at


def test_the_current_attempt_is_read_from_the_task_and_completes_an_older_record_of_it() -> None:
    task = Task(task_id="t", task_type="x", status=TaskStatus.FAILED, attempt=2, node_id="n2", node_name="w2",
                started_at=20.0, finished_at=25.0, error="boom")
    first = Attempt(1, "n1", "w1", 10.0, 12.0, "re-routed")
    assert with_current_attempt([first], task) == [first, Attempt(2, "n2", "w2", 20.0, 25.0, "boom")]
    # a record of the current attempt from an earlier release, written when it started
    assert with_current_attempt([first, Attempt(2, "n2", "w2", 20.0, None, None)], task)[1] == Attempt(
        2, "n2", "w2", 20.0, 25.0, "boom")
    running = Task(task_id="t", task_type="x", status=TaskStatus.RUNNING, attempt=1, node_id="n1", node_name="w1",
                   started_at=5.0)
    assert with_current_attempt([], running) == [Attempt(1, "n1", "w1", 5.0, None, None)]
    assert with_current_attempt([], Task(task_id="t", task_type="x")) == []  # never started: no attempt yet


def _frame(key: str, origin: str, hlc: int) -> bytes:
    return codec.encode(item_to_wire(MemoryItem("fact", key, {"v": hlc}, {origin: hlc}, hlc, origin)))


async def test_a_file_from_schema_7_writes_fewer_b_trees_per_memory_write_and_keeps_its_memory(tmp_path: Path
                                                                                               ) -> None:
    """The log's two indexes that no query read are gone, and ``memory_latest`` is keyed by the key first (its own
    key index gone): a memory write inserts into four b-trees of the file, not seven. What the file held reads as
    before, by key, by key and type, by bucket and as versions."""
    db, worker = tmp_path / "old.db", "w" * 32
    await sqlite_file_with_a_claimed_task(db, worker)
    frames = {key: _frame(key, "o1", 1) for key in ("a", "b", "c")}
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    await backend.publish_memory("o1", [("fact", key, frame) for key, frame in frames.items()])
    await backend.close()
    with sqlite3.connect(db) as conn:  # as schema 7 left it
        conn.execute("CREATE INDEX memory_key ON memory_log (key, memory_type)")
        conn.execute("CREATE INDEX memory_bucket ON memory_log (bucket, seq)")
        conn.execute("DROP TABLE memory_latest")
        conn.execute("CREATE TABLE memory_latest (memory_type TEXT NOT NULL, key TEXT NOT NULL, origin TEXT NOT NULL,"
                     " frame BLOB NOT NULL, bucket INTEGER NOT NULL, PRIMARY KEY (memory_type, key, origin))"
                     " WITHOUT ROWID")
        conn.execute("CREATE INDEX memory_latest_bucket ON memory_latest (bucket)")
        conn.execute("CREATE INDEX memory_latest_key ON memory_latest (key)")
        conn.executemany("INSERT INTO memory_latest VALUES ('fact', ?, 'o1', ?, ?)",
                         [(key, frame, bucket_of("fact", key)) for key, frame in frames.items()])
        conn.execute("PRAGMA user_version=7")
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    try:
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            indexes = {r[0]: r[1] for r in conn.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_autoindex%'")}
            assert [n for n, t in indexes.items() if t.startswith("memory_")] == ["memory_latest_bucket"]
            assert "PRIMARY KEY (key, memory_type, origin)" in _sql(db, "memory_latest")
            assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name='memory_latest_old'").fetchone()
            plan = conn.execute("EXPLAIN QUERY PLAN SELECT frame FROM memory_latest WHERE key=?", ("a",)).fetchall()
            assert "PRIMARY KEY (key=?)" in str(plan)
        await backend.publish_memory("o2", [("fact", "a", _frame("a", "o2", 2)), ("fact", "d", _frame("d", "o2", 2))])
        assert sorted(await backend.memory_for_key(None, "a")) == sorted([frames["a"], _frame("a", "o2", 2)])
        assert await backend.memory_for_key("fact", "b") == [frames["b"]]
        assert sorted(await backend.memory_for_keys("fact", ["c", "d", "e"])) == sorted([frames["c"],
                                                                                        _frame("d", "o2", 2)])
        assert frames["c"] in await backend.memory_bucket(bucket_of("fact", "c"))
        assert await backend.memory_versions(None, "a") == [frames["a"], _frame("a", "o2", 2)]
        # a second write of the same key and origin replaces its newest entry
        await backend.publish_memory("o1", [("fact", "b", _frame("b", "o1", 3))])
        assert await backend.memory_for_key("fact", "b") == [_frame("b", "o1", 3)]
    finally:
        await backend.close()


async def test_a_node_whose_replica_cannot_be_rebuilt_starts_and_counts_why(tmp_path: Path) -> None:
    async with Cluster(tmp_path, "sqlite") as cluster:
        folder = cluster.state / "nodes" / "w1"
        folder.mkdir(parents=True)
        with sqlite3.connect(folder / "memory.db") as conn:
            old_items_table(conn)
            conn.execute("CREATE TABLE items_old (x)")  # in the way of the rebuild
        node = await cluster.node("w1")
        assert node.services.ctx.counters["replica_errors"] == 1
        await node.sync_memory_item("fact", {"v": 1}, key="k")
        assert (await node.recall_item("k")).value == {"v": 1}
