"""The SQLite file's schema across releases: a file an earlier release made is brought up to date when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mesh_core.backends.contracts import Completion
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.backends.sqlite.store import SCHEMA_VERSION
from mesh_core.model import NodeInfo, TaskStatus

from .conftest import sqlite_file_with_a_claimed_task


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
