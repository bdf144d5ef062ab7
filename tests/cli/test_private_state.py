"""A real ``mesh-tui --no-ui`` node under a permissive umask leaves only 0600 files in 0700 folders; the shared
SQLite file (and its journals and folder) follow ``sqlite_file_mode`` when it is set."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_testing.process import NodeProcess, clean_env

UMASKED = 'umask "$0" && exec "$@"'  # sh -c: set the umask, then become the command


def node_cmd(umask: int, *args: str) -> list[str]:
    return ["sh", "-c", UMASKED, f"{umask:03o}", sys.executable, "-m", "mesh_tui", *args]


def walk(root: Path) -> dict[str, int]:
    """Every folder and file under ``root`` (itself included) and its mode."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path, expect_files: set[str]) -> None:
    found = walk(root)
    loose = {p: f"{m:04o}" for p, m in found.items()
             if m != (0o700 if (root / p).is_dir() else 0o600)}
    assert not loose, f"not private under {root}: {loose}"
    assert expect_files <= set(found), sorted(found)


def work(node: NodeProcess, tmp_path: Path, umask: int, *args: str) -> None:
    """A task, a memory write, and a one-shot client's task, all under the same umask."""
    done = node.command("/mesh_submit echo --payload 1 --wait", timeout=20)
    assert done["ok"], done
    assert node.command("/mesh_remember fact 42")["ok"]
    client = subprocess.run(node_cmd(umask, *args, "submit", "echo", "--payload", "2", "--wait"),
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert client.returncode == 0, client.stderr


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_sqlite_default_state_is_private(tmp_path: Path, umask: int) -> None:
    # the defaults, as `make run` uses them: .mesh/ in the working folder, the shared file in it
    node = NodeProcess("w1", node_cmd(umask, "--no-ui", "--log-format", "json", "--name", "w1"),
                       cwd=tmp_path, env=clean_env(), log_path=tmp_path / "w1.log")
    try:
        node.wait_started()
        work(node, tmp_path, umask)
        # while it runs: the WAL journals are there too
        assert_private(tmp_path / ".mesh", {"mesh_coordination.db", "mesh_coordination.db-wal",
                                            "mesh_coordination.db-shm", "nodes/w1/node.json", "nodes/w1/node.lock",
                                            "nodes/w1/memory.db", "nodes/w1/memory.db-wal"})
        assert node.terminate() == 0
    finally:
        node.close()
    assert_private(tmp_path / ".mesh", {"mesh_coordination.db", "nodes/w1/node.json", "nodes/w1/memory.db"})


def test_grpc_node_state_is_private(tmp_path: Path) -> None:
    args = ("--protocol", "grpc_mesh", "--grpc-port", "0", "--state-dir", "state")
    node = NodeProcess("g1", node_cmd(0o000, *args, "--no-ui", "--log-format", "json", "--name", "g1"),
                       cwd=tmp_path, env=clean_env(), log_path=tmp_path / "g1.log")
    try:
        node.wait_started()
        assert node.command("/mesh_submit echo --payload 1 --wait", timeout=20)["ok"]
        assert node.command("/mesh_remember fact 42")["ok"]
        assert_private(tmp_path / "state", {"nodes/g1/grpc.db", "nodes/g1/grpc.db-wal", "nodes/g1/memory.db"})
        assert node.terminate() == 0
    finally:
        node.close()
    assert_private(tmp_path / "state", {"nodes/g1/grpc.db", "nodes/g1/node.json"})


def test_sqlite_file_mode_for_a_group(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text('agent_mesh:\n  sqlite_file_mode: "0660"\n  sqlite_db_path: shared/coord.db\n'
                   "  state_dir: state\n")
    args = ("--config", str(cfg))
    node = NodeProcess("w1", node_cmd(0o022, *args, "--no-ui", "--log-format", "json", "--name", "w1"),
                       cwd=tmp_path, env=clean_env(), log_path=tmp_path / "w1.log")
    try:
        node.wait_started()
        work(node, tmp_path, 0o022, *args)
        shared = walk(tmp_path / "shared")
        assert shared == {".": 0o770, "coord.db": 0o660, "coord.db-wal": 0o660, "coord.db-shm": 0o660}, shared
        assert node.terminate() == 0
    finally:
        node.close()
    assert walk(tmp_path / "shared") == {".": 0o770, "coord.db": 0o660}
    assert_private(tmp_path / "state", {"nodes/w1/node.json", "nodes/w1/memory.db"})  # its own state stays private
