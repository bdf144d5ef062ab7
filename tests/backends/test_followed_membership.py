"""A node's view follows changes on the shared-store media: a heartbeat that says nothing new bumps no version and
costs readers nothing, a change or a leave is read at the next refresh, and a record gone behind a reader's back
(deleted by hand, or a ghost past the retention period) leaves its view; stamps younger than the window are not
read, older ones are read exactly."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from mesh_core.backends.contracts import Backend
from mesh_core.backends.redis import GHOST_SECONDS, RedisBackend
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.config import RedisConfig
from mesh_core.model import NodeInfo

from .conftest import STORE_BACKENDS, Cluster, cluster_for


@pytest.fixture(params=STORE_BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_for(request, tmp_path) as c:
        yield c


@contextmanager
def medium_of(cluster: Cluster) -> Iterator[Backend]:
    if cluster.backend == "sqlite":
        yield SqliteBackend(str(cluster.db))
    else:
        yield RedisBackend(RedisConfig(url=cluster.redis_url, cluster=cluster.name))


def version_of(cluster: Cluster) -> int:
    """The mesh's membership version, read behind the mesh's back."""
    if cluster.backend == "sqlite":
        with sqlite3.connect(cluster.db) as conn:
            return int(conn.execute("SELECT version FROM membership").fetchone()[0])
    client = redis.Redis.from_url(cluster.redis_url or "")
    try:
        return int(client.get(f"mesh:{{{cluster.name}}}:ver") or 0)
    finally:
        client.close()


def node(name: str) -> NodeInfo:
    return NodeInfo(node_id=uuid.uuid4().hex, name=name, task_types=frozenset({"echo"}))


async def test_a_reader_follows_joins_news_leaves_and_records_gone(cluster: Cluster) -> None:
    with medium_of(cluster) as writer, medium_of(cluster) as reader:
        a, b = node("a"), node("b")
        await writer.open(a)
        await reader.open(b)
        try:
            await writer.heartbeat(a)
            await reader.heartbeat(b)
            reader_window = 2.0
            snap = await reader.snapshot(reader_window)
            assert snap.aged and {n.name for n in snap.nodes} == {"a", "b"}
            before = version_of(cluster)
            a.metrics = {"cpu_percent": 12.5, "memory_mb": 80.0}  # gauges only: no news for GAUGE_SECONDS
            await writer.heartbeat(a)
            assert version_of(cluster) == before
            a.metrics = {**a.metrics, "loops_down": ["claim"]}  # news: every reader sees it at its next read
            await writer.heartbeat(a)
            assert version_of(cluster) == before + 1
            seen = {n.name: n for n in (await reader.snapshot(reader_window)).nodes}
            assert seen["a"].metrics.get("loops_down") == ["claim"]
            await writer.leave(a)
            assert {n.name: n.left for n in (await reader.snapshot(reader_window)).nodes} == {"a": True, "b": False}
            # a record deleted behind the reader's back leaves its view (its count no longer matches)
            if cluster.backend == "sqlite":
                with sqlite3.connect(cluster.db) as conn:
                    conn.execute("DELETE FROM nodes WHERE node_id=?", (a.node_id,))
            else:
                client = redis.Redis.from_url(cluster.redis_url or "")
                client.hdel(f"mesh:{{{cluster.name}}}:nodes", a.node_id)
                client.close()
            await reader.snapshot(reader_window)  # finds the count off
            assert {n.name for n in (await reader.snapshot(reader_window)).nodes} == {"b"}
        finally:
            await writer.close()
            await reader.close()


async def test_only_stamps_older_than_the_window_are_read_and_those_exactly(cluster: Cluster) -> None:
    with medium_of(cluster) as writer, medium_of(cluster) as reader:
        a, b = node("a"), node("b")
        await writer.open(a)
        await reader.open(b)
        try:
            await writer.heartbeat(a)
            await reader.heartbeat(b)
            reader_window = 0.3
            await reader.snapshot(reader_window)
            time.sleep(0.5)  # a's heartbeat is now older than the window: its exact stamp is read
            await reader.heartbeat(b)
            snap = await reader.snapshot(reader_window)
            ages = {n.name: snap.now - n.last_seen for n in snap.nodes}
            assert 0.5 <= ages["a"] < 1.5
            assert ages["b"] == 0.0  # fresh: read as now, not read at all
            reader_window = 0.0  # every stamp exact
            snap = await reader.snapshot(reader_window)
            assert 0 <= snap.now - next(n for n in snap.nodes if n.name == "b").last_seen < 0.5
        finally:
            await writer.close()
            await reader.close()


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)  # SQLite rows are pruned by the sweeper instead
async def test_a_ghost_past_the_retention_period_leaves_a_following_view(cluster: Cluster) -> None:
    with medium_of(cluster) as writer, medium_of(cluster) as reader:
        ghost, b = node("ghost"), node("b")
        await writer.open(ghost)
        await reader.open(b)
        try:
            await writer.heartbeat(ghost)
            await reader.heartbeat(b)
            reader_window = 2.0
            assert {n.name for n in (await reader.snapshot(reader_window)).nodes} == {"ghost", "b"}
            client = redis.Redis.from_url(cluster.redis_url or "")
            p = f"mesh:{{{cluster.name}}}:"
            old = time.time() - GHOST_SECONDS - 60
            client.zadd(p + "beats", {ghost.node_id: old})
            client.hset(p + "seen", ghost.node_id, old)
            client.close()
            assert {n.name for n in (await reader.snapshot(reader_window)).nodes} == {"b"}
            assert {n.name for n in (await reader.snapshot(reader_window)).nodes} == {"b"}
        finally:
            await writer.close()
            await reader.close()


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)  # Redis keys written behind the mesh's back
async def test_membership_keys_of_the_wrong_type_are_moved_aside_and_heartbeats_go_on(cluster: Cluster) -> None:
    with medium_of(cluster) as medium:
        a = node("a")
        await medium.open(a)
        try:
            await medium.heartbeat(a)
            client = redis.Redis.from_url(cluster.redis_url or "")
            p = f"mesh:{{{cluster.name}}}:"
            client.set(p + "beats", "not a sorted set")
            client.set(p + "news", "not a hash")
            client.close()
            await medium.heartbeat(a)
            medium_window = 2.0
            assert {n.name for n in (await medium.snapshot(medium_window)).nodes} == {"a"}
            assert medium.counters["quarantined_key"] >= 2
        finally:
            await medium.close()
