"""Acknowledged means stored: a memory write returns only after the medium has it, or after it is committed
to the node's own outbox (a file) for later delivery; a client, whose replica lives in memory, gets an error.

Before issue #11 a client's write to an unreachable medium went into its in-memory outbox and returned a key:
the write was acknowledged and then lost when the client stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from mesh_core.backends import sqlite as sqlite_backend
from mesh_core.errors import BackendError, BackendUnavailable
from mesh_testing import RedisServer

from .conftest import Cluster, eventually


class Outage:
    """Make the mesh's medium stop taking writes while reads still work, then bring it back: Redis paused for
    writes (``CLIENT PAUSE … WRITE``) past the socket timeout, or a SQLite write lock held past the give-up time.
    A write that reads first (a client's) thus fails at the very step that would store it."""

    def __init__(self, backend: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backend = backend
        self.root = root
        self.server: RedisServer | None = None
        self.holder: sqlite3.Connection | None = None
        if backend == "sqlite":
            monkeypatch.setattr(sqlite_backend, "LOCK_GIVE_UP_SECONDS", 0.3)
        else:
            self.server = RedisServer().start()

    def cluster(self) -> Cluster:
        return Cluster(self.root, self.backend, self.server.url if self.server else None)

    def begin(self) -> None:
        if self.server is not None:
            with redis.Redis.from_url(self.server.url) as admin:
                admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        else:
            self.holder = sqlite3.connect(self.root / "mesh.db", isolation_level=None, timeout=5)
            self.holder.execute("BEGIN IMMEDIATE")  # another process mid-write, for longer than anyone waits

    def end(self) -> None:
        if self.server is not None:
            with redis.Redis.from_url(self.server.url) as admin:
                admin.execute_command("CLIENT", "UNPAUSE")
        elif self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()
            self.holder = None

    def cleanup(self) -> None:
        self.end()
        if self.server is not None:
            self.server.cleanup()


QUICK = {"redis.socket_timeout_seconds": 0.5}  # a paused Redis is given up on quickly


@pytest.fixture(params=["sqlite", "redis"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Outage]:
    o = Outage(request.param, tmp_path, monkeypatch)
    try:
        yield o
    finally:
        o.cleanup()




@pytest.mark.parametrize("many", [False, True], ids=["one", "batch"])
async def test_a_client_write_to_an_unreachable_medium_is_an_error_not_an_ack(outage: Outage, many: bool) -> None:
    cluster = outage.cluster()
    try:
        client = await cluster.client(**QUICK)
        await client.sync_memory_item("fact", "stored before", key="before")
        outage.begin()
        with pytest.raises(BackendUnavailable):
            if many:
                await client.sync_memory_items("fact", {"a": 1, "b": 2})
            else:
                await client.sync_memory_item("fact", "never acknowledged", key="k")
        outage.end()
        await eventually(lambda: _stored(client, "before"), timeout=15, interval=0.2)
    finally:
        await cluster.close()


async def test_a_node_write_while_the_medium_is_away_is_kept_in_its_outbox_and_delivered(outage: Outage) -> None:
    cluster = outage.cluster()
    try:
        node = await cluster.node("w1", **QUICK)
        outage.begin()
        # The node's replica is a file: the write is committed to its outbox there, then acknowledged.
        assert await node.sync_memory_item("fact", "written while away", key="away") == "away"
        outage.end()
        reader = await cluster.client()
        await eventually(lambda: _stored(reader, "away"), timeout=15, interval=0.2)
    finally:
        await cluster.close()


async def _stored(mesh: object, key: str) -> bool:
    try:
        await mesh.recall(key)  # type: ignore[attr-defined]
    except Exception:
        return False
    return True


async def test_a_write_redis_refuses_is_an_error_for_nodes_too(tmp_path: Path) -> None:
    """An error reply (here out of memory: Redis's full disk) is no outage: nothing is queued, the caller hears it;
    reads go on, and writes are taken again once Redis has room."""
    with RedisServer() as server:
        cluster = Cluster(tmp_path, "redis", server.url)
        try:
            node = await cluster.node("w1")
            client = await cluster.client()
            await node.sync_memory_item("fact", "stored before", key="before")
            with redis.Redis.from_url(server.url) as admin:
                admin.config_set("maxmemory-policy", "noeviction")
                admin.config_set("maxmemory", 1)
                try:
                    for mesh in (node, client):
                        with pytest.raises(BackendError, match="maxmemory") as refused:
                            await mesh.sync_memory_item("fact", "refused", key="k")
                        assert not isinstance(refused.value, BackendUnavailable)
                    assert node.counters["memory_writes_refused"] >= 1
                    assert await client.recall("before") == "stored before"
                    assert await node.recall("before") == "stored before"
                finally:
                    admin.config_set("maxmemory", 0)
            assert await client.sync_memory_item("fact", "room again", key="after") == "after"
            await eventually(lambda: _stored(node, "after"), timeout=15, interval=0.2)
        finally:
            await cluster.close()
