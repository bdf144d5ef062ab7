"""WAL checkpoints on their own thread (``mesh_core.checkpoints``), on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from mesh_core.checkpoints import Checkpointer, writes_apart

ROW_BYTES = 3000
COMMITS = 450  # about three WAL pages each: past SQLite's 1000-page threshold, short of AUTO_CHECKPOINT_PAGES


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, b BLOB)")
    return conn


def _fill(conn: sqlite3.Connection, commits: int) -> None:
    for _ in range(commits):
        conn.execute("INSERT INTO t (b) VALUES (?)", (os.urandom(ROW_BYTES),))


def test_a_writer_left_apart_does_not_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    conn = _writer(path)
    writes_apart(conn)
    _fill(conn, COMMITS)
    wal = Path(f"{path}-wal")
    assert path.stat().st_size < 64 * 1024  # every commit is still in the WAL only: no writer checkpointed
    checkpoints = Checkpointer(str(path), every=0.02)
    try:
        deadline = time.monotonic() + 10
        while (path.stat().st_size < COMMITS * ROW_BYTES or not checkpoints.runs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size >= COMMITS * ROW_BYTES  # copied back into the database by the thread
        assert checkpoints.runs >= 1
        assert checkpoints.failures == 0
        size = wal.stat().st_size
        time.sleep(0.1)  # a checkpoint ran after the last commit: the next writes start the WAL from its start
        _fill(conn, COMMITS // 3)
        assert wal.stat().st_size <= size
    finally:
        checkpoints.close()
    assert not checkpoints._thread.is_alive()
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == COMMITS + COMMITS // 3
    conn.close()


def test_a_default_writer_checkpoints_in_its_own_commit(tmp_path: Path) -> None:
    # what writes_apart changes: without it the commit past 1000 WAL pages copies them back itself
    path = tmp_path / "d.db"
    conn = _writer(path)
    _fill(conn, COMMITS)
    assert path.stat().st_size >= COMMITS // 2 * ROW_BYTES
    conn.close()
