"""Task leases and retry times are on the medium's clock; a SQLite file whose times an earlier release stamped
with each process's wall clock keeps working (issue #11, defect 10)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

from mesh_core.backends.contracts import Assignment
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.model import NodeInfo, Task, TaskStatus

WORKER = "w" * 32


def _task() -> Task:
    return Task(uuid.uuid4().hex, "echo", None, submitter_id=WORKER, submitted_at=time.time())


async def test_wall_clock_times_in_an_older_sqlite_file_are_moved_to_the_machine_clock(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    me = NodeInfo(node_id=WORKER, name="w1")
    backend = SqliteBackend(str(db))
    await backend.open(me)
    held, running, lapsed = _task(), _task(), _task()
    try:
        await backend.enqueue([Assignment(t, WORKER, "w1", "test", capacity=100) for t in (held, running, lapsed)])
        assert {t.task_id for t in await backend.claim(WORKER, 3, 30.0)} == {held.task_id, running.task_id,
                                                                             lapsed.task_id}
    finally:
        await backend.close()
    now = time.time()
    with sqlite3.connect(db) as conn:  # as an earlier release left it: wall-clock stamps, schema version 1
        conn.execute("UPDATE tasks SET status='assigned', lease_expires=NULL, not_before=? WHERE task_id=?",
                     (now + 5.0, held.task_id))
        conn.execute("UPDATE tasks SET lease_expires=? WHERE task_id=?", (now + 30.0, running.task_id))
        conn.execute("UPDATE tasks SET lease_expires=? WHERE task_id=?", (now - 10.0, lapsed.task_id))
        conn.execute("PRAGMA user_version=1")
    backend = SqliteBackend(str(db))
    await backend.open(me)
    try:
        due = await backend.next_due(WORKER)
        assert due is not None and 3.0 < due <= 5.0  # held back 5 s as stamped, not 55 years
        stranded = {t.task_id for t in await backend.stranded([], time.time()) if t.status is TaskStatus.RUNNING}
        assert stranded == {lapsed.task_id}  # the lapsed lease is lapsed, the live one is not
        lease = (await backend.get_tasks([running.task_id]))[0].lease_expires
        assert lease is not None and abs(lease - (now + 30.0)) < 2.0  # read back in the reader's wall frame
    finally:
        await backend.close()
