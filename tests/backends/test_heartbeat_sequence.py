"""Every backend's heartbeats carry a sequence that changes with each beat (the failure detector watches it);
a SQLite file made before the ``beat`` column keeps working."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.model import NodeInfo

from .conftest import STORE_BACKENDS, Cluster, cluster_for


@pytest.fixture(params=STORE_BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Only the media with a shared store: these tests write bad records into it behind the mesh's back."""
    async with cluster_for(request, tmp_path) as c:
        yield c


async def test_each_heartbeat_changes_the_sequence_and_the_age_is_on_the_mediums_clock(cluster: Cluster) -> None:
    node = await cluster.node("w1")
    backend = node.services.ctx.backend
    first = next(n for n in (await backend.snapshot()).nodes if n.node_id == node.node_id)
    await node.services.members.heartbeat()
    snap = await backend.snapshot()
    second = next(n for n in snap.nodes if n.node_id == node.node_id)
    assert second.heartbeat_seq != first.heartbeat_seq
    assert 0 <= snap.now - second.last_seen < 1.0


async def test_a_sqlite_file_without_the_beat_column_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the nodes table as an earlier release made it
        conn.execute(
            "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, name TEXT NOT NULL, node_type TEXT NOT NULL,"
            " role TEXT NOT NULL, host TEXT, port INTEGER, pid INTEGER, incarnation INTEGER NOT NULL,"
            " capabilities TEXT NOT NULL, task_types TEXT NOT NULL, capacity INTEGER NOT NULL,"
            " running INTEGER NOT NULL DEFAULT 0, queued INTEGER NOT NULL DEFAULT 0, metrics TEXT,"
            " started_at REAL, last_seen REAL NOT NULL, left_mesh INTEGER NOT NULL DEFAULT 0, signature TEXT)")
        conn.execute("INSERT INTO nodes VALUES ('old', 'old', 'general', 'worker', '', 0, 0, 1, '[]', '[]', 1,"
                     " 0, 0, NULL, 0, 0, 0, NULL)")
    backend = SqliteBackend(str(db))
    me = NodeInfo(node_id="n" * 32, name="new")
    await backend.open(me)
    try:
        await backend.heartbeat(me)
        await backend.heartbeat(me)
        nodes = {n.name: n for n in (await backend.snapshot()).nodes}
        assert nodes["old"].heartbeat_seq == 0 and nodes["new"].heartbeat_seq == 2
    finally:
        await backend.close()
