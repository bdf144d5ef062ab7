"""Acknowledged means stored: a full disk or a read-only mesh file is one clear line and exit 1, never exit 0.

Defect 3 of issue #11: with the state folder on a 2 MB filesystem, 150
``mesh-tui remember`` calls exited 0 and 17 were stored. Here the mesh file and
the node's state folder live on a real small filesystem (a tmpfs this test
mounts; skipped where mounting is not permitted), real ``mesh-tui`` processes
write until it is full, and every call that exited 0 must be stored.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh_testing import Cluster, until

EXIT_RUNTIME = 1  # README: 1 is a runtime failure (the write was not stored); 2 is reserved for usage/config


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}): "
                    "the full-disk test needs root or CAP_SYS_ADMIN")


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB filesystem of its own (tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        yield disk
    finally:
        _unmount(disk)


def _on_disk(tmp_path: Path, disk: Path) -> Cluster:
    """A cluster whose mesh file and state folder are on ``disk``; its config and logs stay off it."""
    (tmp_path / "mesh").mkdir(exist_ok=True)
    cluster = Cluster(tmp_path / "mesh", "sqlite", settings={"heartbeat_interval_seconds": 0.5})
    cluster.db, cluster.state = disk / "mesh.db", disk / "state"
    cluster.write_config({"heartbeat_interval_seconds": 0.5})
    return cluster


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it (delete it to free the space).

    Unbuffered writes: a buffered file would raise ENOSPC again from ``close`` when flushing what it held.
    """
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):  # then the last partial blocks
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.slow
def test_full_disk_refuses_writes_keeps_reads_and_loses_nothing_acknowledged(tmp_path: Path,
                                                                             small_disk: Path) -> None:
    cluster = _on_disk(tmp_path, small_disk)
    try:
        node = cluster.start("n1")
        assert cluster.cli("remember", "before", '"written with room to spare"').returncode == 0
        filler = _fill(small_disk)

        # Values that do not compress (frames are lz4-compressed), written until the disk refuses a few: the
        # SQLite file keeps space it once had (its WAL is reused in place after each checkpoint, up to about
        # 1 MB), so a full disk takes some writes still, and stores them.
        acknowledged, refused = [], []
        for i in range(40):
            if len(refused) >= 3:
                break
            value = json.dumps(base64.b64encode(os.urandom(48 * 1024)).decode())
            done = cluster.cli("remember", f"k{i}", value)
            if done.returncode == 0:
                acknowledged.append(f"k{i}")
            else:
                assert done.returncode == EXIT_RUNTIME, done.stderr
                line = _one_line(done)
                assert "full" in line and "mesh.db" in line, line
                refused.append(f"k{i}")

        # Reads go on while the disk is full: a one-shot client, and the node itself.
        recalled = cluster.cli("recall", "before")
        assert recalled.returncode == 0 and json.loads(recalled.stdout) == "written with room to spare", recalled
        assert cluster.cli("status").returncode == 0
        assert node.command("/mesh_recall before")["ok"]
        # The node itself refuses a write it cannot store, in one line, and keeps going; one it takes (into space
        # the file kept) is stored, checked below.
        reply = node.command('/mesh_remember on-node "while full"')
        if not reply["ok"]:
            assert "full" in reply["text"] and "\n" not in reply["text"], reply
        # A submission is acknowledged only once stored: it runs (exit 0), or it is refused in one line (the
        # full disk; or no active node, as a node whose heartbeats the full disk refuses is judged dead).
        submitted = cluster.cli("submit", "echo", "--payload", '{"while": "full"}', "--wait", "--wait-timeout", "20")
        if submitted.returncode != 0:
            line = _one_line(submitted)
            assert (submitted.returncode, "full" in line) in ((EXIT_RUNTIME, True), (3, False)), submitted

        filler.unlink()
        for key in acknowledged:  # every write that exited 0 was stored
            done = cluster.cli("recall", key)
            assert done.returncode == 0, f"{key} was acknowledged but is not stored: {done.stderr}"
        assert refused, "the disk never filled up"
        if reply["ok"]:
            recalled_here = node.command("/mesh_recall on-node")
            assert recalled_here["ok"] and recalled_here["data"]["value"] == "while full", recalled_here
        # With space again the mesh takes writes, and the node is still there to apply them.
        assert cluster.cli("remember", "after", '"room again"').returncode == 0
        until(lambda: node.command("/mesh_recall after")["ok"], timeout=30, interval=0.2)
        assert node.command('/mesh_remember on-node "room again"')["ok"]
        assert node.alive
    finally:
        cluster.stop()


def test_read_only_mesh_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (and root ignores chmod 0444)")
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "4m")
    try:
        cluster = _on_disk(tmp_path, disk)
        try:
            assert cluster.cli("remember", "before", '"stored"').returncode == 0
            done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
            wrote = cluster.cli("remember", "k", '"never stored"')
            assert wrote.returncode == EXIT_RUNTIME, wrote
            line = _one_line(wrote)
            assert "read-only" in line and "mesh.db" in line, line
        finally:
            cluster.stop()
    finally:
        _unmount(disk)


def test_corrupt_mesh_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        cluster.db.write_bytes(os.urandom(8192))
        done = cluster.cli("status")
        assert done.returncode == EXIT_RUNTIME, done
        line = _one_line(done)
        assert "mesh.db" in line and "not a database" in line, line
    finally:
        cluster.stop()
