"""Private state (``mesh_core.files``): exact modes whatever the umask, SQLite's journals following the
database file, ``sqlite_file_mode``, and the warning for a config file that others can read."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh_core import identity
from mesh_core.config import load_config
from mesh_core.errors import ConfigError
from mesh_core.files import create_file, folder_mode, make_dirs, parse_file_mode, prepare_sqlite_file, write_file
from mesh_core.memory.store import ReplicaStore


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_folder_mode_and_parse() -> None:
    assert [folder_mode(m) for m in (0o600, 0o640, 0o660, 0o644, 0o666)] == [0o700, 0o750, 0o770, 0o755, 0o777]
    assert parse_file_mode("0660") == 0o660 and parse_file_mode("600") == 0o600
    for bad in ("0700", "0400", "0664x", "432", "384", "06600", "", "4660", "0620 0"):
        with pytest.raises(ValueError):
            parse_file_mode(bad)


def test_make_dirs_and_files_have_exact_modes(tmp_path: Path, umask: int) -> None:
    deep = make_dirs(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", deep)] == [0o700] * 3
    shared = make_dirs(tmp_path / "shared", 0o770)
    assert mode(shared) == 0o770  # not 0o750 under umask 022: the mode asked for, exactly
    create_file(deep / "f", 0o660)
    assert mode(deep / "f") == 0o660
    write_file(deep / "g", b"data")
    assert mode(deep / "g") == 0o600 and (deep / "g").read_bytes() == b"data"
    assert sorted(p.name for p in deep.iterdir()) == ["f", "g"]  # no temporary file left behind


def test_an_existing_loose_file_or_own_folder_is_tightened(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "memory.db").write_bytes(b"")
    os.chmod(old / "memory.db", 0o644)
    make_dirs(old)  # a folder that was there keeps its mode ...
    assert mode(old) == 0o755
    make_dirs(old, own_leaf=True)  # ... unless it is the mesh's own
    assert mode(old) == 0o700
    create_file(old / "memory.db")
    assert mode(old / "memory.db") == 0o600


def test_sqlite_journals_follow_the_database_file(tmp_path: Path, umask: int) -> None:
    for file_mode in (0o600, 0o660):
        db = tmp_path / f"m{file_mode:o}" / "x.db"
        prepare_sqlite_file(db, file_mode)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        found = {p.name: mode(p) for p in db.parent.iterdir()}
        conn.close()
        assert found == {"x.db": file_mode, "x.db-wal": file_mode, "x.db-shm": file_mode}, found
        assert mode(db.parent) == folder_mode(file_mode)


def test_identity_and_replica_files_are_private(tmp_path: Path, umask: int) -> None:
    ident = identity.acquire(str(tmp_path / "state"), "n1")
    replica = ReplicaStore(ident.replica_path)
    try:
        ident.bump()
        folder = tmp_path / "state"
        dirs = [folder, folder / "nodes", folder / "nodes" / "n1"]
        assert [mode(d) for d in dirs] == [0o700] * 3
        assert {p.name: mode(p) for p in dirs[-1].iterdir()} == {
            name: 0o600 for name in ("node.json", "node.lock", "memory.db", "memory.db-wal", "memory.db-shm")}
    finally:
        replica.close()
        ident.release()


def test_sqlite_file_mode_is_checked(tmp_path: Path) -> None:
    assert load_config(env={}, use_default_file=False).sqlite_file_mode == "0600"
    assert load_config(env={"MESH_SQLITE_FILE_MODE": "0660"}, use_default_file=False).sqlite_file_mode == "0660"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent_mesh:\n  sqlite_file_mode: 0660\n")  # unquoted: YAML reads the number 432
    with pytest.raises(ConfigError, match="in quotes"):
        load_config(cfg, env={})
    cfg.write_text('agent_mesh:\n  sqlite_file_mode: "0664"\n')
    assert load_config(cfg, env={}).sqlite_file_mode == "0664"
    for bad in ("0755", "0400", "rw"):
        with pytest.raises(ConfigError, match="sqlite_file_mode"):
            load_config(env={}, overrides={"sqlite_file_mode": bad}, use_default_file=False)


@pytest.mark.parametrize("secret", [
    "security:\n    api_key: s3cret\n",
    "redis:\n    password: s3cret\n",
    "redis:\n    url: redis://:s3cret@h:6379/0\n",
    "redis:\n    url: rediss://user:s3cret@h:6379/0\n",
])
def test_a_secret_in_a_config_file_others_can_read_is_warned_about_once(tmp_path: Path, secret: str) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(f"agent_mesh:\n  {secret}")
    os.chmod(cfg, 0o644)
    warnings = load_config(cfg, env={}).warnings
    assert len(warnings) == 1, warnings
    assert str(cfg) in warnings[0] and f"chmod 600 {cfg}" in warnings[0] and "s3cret" not in warnings[0]
    os.chmod(cfg, 0o640)
    assert len(load_config(cfg, env={}).warnings) == 1
    os.chmod(cfg, 0o600)
    assert load_config(cfg, env={}).warnings == ()


def test_no_warning_without_a_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text("agent_mesh:\n  security:\n    api_key: null\n  redis:\n    url: redis://h:6379/0\n")
    os.chmod(cfg, 0o644)
    assert load_config(cfg, env={}).warnings == ()
