"""SQLite only: each way a file can refuse a write becomes one line that says why and what to do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mesh_core.backends.sqlite.store import _refused


@pytest.mark.parametrize(("error", "says"), [
    (sqlite3.OperationalError("database or disk is full"), "did not store the write: database or disk is full"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "is read-only"),
    (sqlite3.OperationalError("disk I/O error"), "check its disk"),
    (sqlite3.DatabaseError("file is not a database"), "is not usable"),
    (sqlite3.OperationalError("no such table: nodes"), "SQLite error on"),
])
def test_each_refusal_names_the_file_and_the_reason(tmp_path: Path, error: sqlite3.Error, says: str) -> None:
    path = str(tmp_path / "mesh.db")
    refused = _refused(path, error)
    assert says in str(refused) and path in str(refused) and "\n" not in str(refused)
    assert refused.exit_code == 1
