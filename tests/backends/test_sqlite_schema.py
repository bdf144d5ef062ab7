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
