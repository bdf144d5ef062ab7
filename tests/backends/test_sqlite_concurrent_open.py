"""SQLite only: any number of processes may open a new mesh file at the same instant (race-free schema creation).

Defect 4 of issue #11: eight nodes started at once on a fresh ``--db`` file failed
now and then with ``cannot open SQLite file …: database is locked``.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.backends.sqlite.store import SCHEMA_VERSION
from mesh_core.model import NodeInfo
from mesh_testing import until
from mesh_testing.process import clean_env

PROCESSES = 8
ROUNDS = 20


def _open_rounds(root: str, index: int, barrier: Barrier, failures: multiprocessing.Queue[str]) -> None:
    """One process: each round, wait for every other process, then open that round's fresh file and write."""
    async def one(path: str) -> None:
        node = NodeInfo(node_id=f"{index:032x}", name=f"p{index}")
        backend = SqliteBackend(path)
        await backend.open(node)
        try:
            await backend.heartbeat(node)
        finally:
            await backend.close()

    for round_no in range(ROUNDS):
        barrier.wait(timeout=60)
        try:
            asyncio.run(one(f"{root}/round{round_no}.db"))
        except Exception as exc:  # reported to the test, which names every failure
            failures.put(f"round {round_no}, process {index}: {type(exc).__name__}: {exc}")


def test_many_processes_open_a_new_file_at_the_same_instant(tmp_path: Path) -> None:
    # Spawned, not forked: by now this process runs threads of its own (aiosqlite, grpc from the tests before), and a
    # fork copies their locks held; a forked child hung on one now and then, spinning until it was killed.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    failures: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_open_rounds, args=(str(tmp_path), i, barrier, failures))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 90  # inside pytest's timeout, so that a hang fails here, with what it left
    try:
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:  # a child stuck must not spin on for the rest of the run
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert not seen, f"{len(seen)} of {PROCESSES * ROUNDS} opens failed:\n" + "\n".join(seen)
    for round_no in range(ROUNDS):
        with sqlite3.connect(tmp_path / f"round{round_no}.db") as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == PROCESSES


def _all_joined(root: Path, procs: list[subprocess.Popen[bytes]]) -> bool:
    """Every node's record is in the file; a node that failed to open has exited (and says why)."""
    exited = {i: (root / f"n{i}.err").read_text() for i, p in enumerate(procs) if p.poll() is not None}
    assert not exited, exited
    with sqlite3.connect(root / "mesh.db") as conn:
        return bool(conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == len(procs))


@pytest.mark.slow
def test_nodes_and_clients_started_at_once_on_a_new_file(tmp_path: Path) -> None:
    """Real ``mesh-tui`` processes: four nodes and four one-shot clients at once on a fresh file, a few rounds."""
    for round_no in range(3):
        root = tmp_path / f"r{round_no}"
        root.mkdir()
        common = [sys.executable, "-m", "mesh_tui", "--db", str(root / "mesh.db")]
        errs = [(root / f"n{i}.err").open("w") for i in range(4)]
        procs = [subprocess.Popen([*common, "--state-dir", str(root / f"s{i}"), "--name", f"n{i}", "--no-ui"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errs[i],
                                  env=clean_env(), cwd=tmp_path) for i in range(4)]
        clients = [subprocess.Popen([*common, "--state-dir", str(root / "c"), "status", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                                    cwd=tmp_path) for _ in range(4)]
        try:
            for client in clients:
                _, err = client.communicate(timeout=120)
                assert client.returncode == 0, err
            until(functools.partial(_all_joined, root, procs), timeout=120)
        finally:
            for p in procs:
                p.kill()
                p.wait()
            for f in errs:
                f.close()
