"""SQLite only: another process holding the write lock makes a node wait, not fail; a lock held too long is a
clear error, not a hang or a crash."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh_core.backends import sqlite as sqlite_backend
from mesh_core.errors import BackendUnavailable
from mesh_core.model import NodeInfo

from .conftest import Cluster, eventually


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")  # what another process mid-write holds
    return conn


async def test_a_write_waits_for_a_lock_held_elsewhere_then_goes_through(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        node = await cluster.node("w1")
        client = await cluster.client()
        holder = _hold_write_lock(tmp_path / "mesh.db")
        waits_before = client.backend_info()["lock_waits"]
        submit = asyncio.ensure_future(client.submit_task("echo", {"after": "the lock"}))
        await asyncio.sleep(0.4)
        assert not submit.done()  # waiting for the lock, not failed
        holder.execute("COMMIT")
        holder.close()
        task_id = await asyncio.wait_for(submit, 5)
        assert await client.wait_for(task_id, timeout=5) == {"after": "the lock"}
        assert client.backend_info()["lock_waits"] > waits_before and node.healthy
    finally:
        await cluster.close()


async def test_a_lock_held_past_the_limit_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "LOCK_GIVE_UP_SECONDS", 0.5)
    db = tmp_path / "mesh.db"
    backend = sqlite_backend.SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id="a" * 32, name="w1"))
    holder = _hold_write_lock(db)
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="stayed locked by another process"):
            await backend.heartbeat(NodeInfo(node_id="a" * 32, name="w1"))
        assert 0.4 < time.monotonic() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await backend.close()


async def test_a_write_issued_behind_one_that_waits_for_the_lock_stays_behind_it(tmp_path: Path) -> None:
    """Writes run on the loop's thread while their lock is free and go to the write thread while another process
    holds it; one issued while an earlier one waits there follows it, even once the lock is free again (else it
    would run first: here the lease would go to the second asker)."""
    db = tmp_path / "mesh.db"
    backend = sqlite_backend.SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id="a" * 32, name="w1"))
    holder = _hold_write_lock(db)
    try:
        first = asyncio.ensure_future(backend.hold_lease("sweeper", "first", 60))
        await asyncio.sleep(0.1)
        assert not first.done()  # waiting for the lock on the write thread
        holder.execute("COMMIT")
        second = asyncio.ensure_future(backend.hold_lease("sweeper", "second", 60))
        assert await asyncio.wait_for(first, 5) == "first"
        assert await asyncio.wait_for(second, 5) == "first"  # asked after the first: the first holds it
        assert await backend.hold_lease("sweeper", "third", 60) == "first"  # the lock is free: at once, in order
        assert backend.lock_waits >= 1
    finally:
        holder.close()
        await backend.close()


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
conn.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
time.sleep(120)
"""


async def test_a_stopped_process_holding_the_lock_is_named_by_the_nodes_it_freezes(tmp_path: Path) -> None:
    """A process stopped mid-write freezes the shared file for everyone: the nodes say they are cut off, which
    process holds the lock, that it is stopped, and how to resume it; once it is killed they carry on."""
    from mesh_core.backends.sqlite.locks import write_lock_holder
    from mesh_core.events import Problem

    cluster = Cluster(tmp_path, "sqlite")
    db = tmp_path / "mesh.db"
    holder: subprocess.Popen[str] | None = None
    try:
        node = await cluster.node("w1", heartbeat_interval_seconds=0.2, suspect_after_seconds=0.6,
                                  node_timeout_seconds=1.5)
        problems: list[Problem] = []

        async def watch() -> None:
            async for event in node.subscribe():
                if isinstance(event, Problem) and event.counter == "cut_off":
                    problems.append(event)
        watcher = asyncio.create_task(watch())
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        running = write_lock_holder(str(db))
        assert running is not None and running.pid == holder.pid and not running.stopped, running
        holder.send_signal(signal.SIGSTOP)
        await eventually(lambda: bool(problems), timeout=5)
        detail = problems[0].detail
        assert f"held by pid {holder.pid}" in detail and "which is stopped" in detail, detail
        assert f"kill -CONT {holder.pid}" in detail, detail
        holder.kill()
        holder.wait(5)
        await eventually(lambda: node.healthy, timeout=5)  # the lock died with it: the node carries on
        assert write_lock_holder(str(db)) is None
        watcher.cancel()
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        await cluster.close()


async def test_compaction_drops_a_big_log_a_chunk_per_transaction(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory log compaction holds the file's write lock for one chunk at a time, not for the whole drop (one delete
    of 12,000 entries held it ~200 ms while every writer of the mesh waited), and still drops every entry asked."""
    from mesh_core.backends.sqlite import memory as sqlite_memory
    monkeypatch.setattr(sqlite_memory, "COMPACT_CHUNK", 100)
    cluster = Cluster(tmp_path, "sqlite")
    try:
        node = await cluster.node("w1")
        for first in range(0, 250, 50):
            await node.sync_memory_items("fact", {f"k{i}": i for i in range(first, first + 50)})
        log = node.services.ctx.backend
        frames, last = await log.read_memory(None, 1000)
        assert len(frames) == 250
        transactions = 0
        write = log._write

        async def counted(fn, **kw):  # type: ignore[no-untyped-def]
            nonlocal transactions
            transactions += "compact_memory" in fn.__qualname__  # the node's own loops write meanwhile (heartbeats)
            return await write(fn, **kw)
        monkeypatch.setattr(log, "_write", counted)
        assert await log.compact_memory(last) == 249  # every entry before the last
        assert transactions == 3
        left, _ = await log.read_memory(None, 1000)
        assert len(left) == 1
    finally:
        await cluster.close()
