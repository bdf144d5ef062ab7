"""The backend contract suite: every test runs on every backend (sqlite, redis and grpc).

Nodes here are in-process managers sharing one event loop, each with its own
state folder; ``cluster.crash()`` stops one the way kill -9 would (no leave, no
hand back), so death and lease expiry are judged by the real failure detector.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import mesh_testing
from mesh_core.backends.contracts import Assignment
from mesh_core.backends.sqlite import SqliteBackend
from mesh_core.model import NodeInfo, Task
from mesh_testing import eventually

__all__ = ["BACKENDS", "FAST", "STORE_BACKENDS", "Cluster", "cluster_for", "eventually",
           "sqlite_file_with_a_claimed_task"]

BACKENDS = list(mesh_testing.BACKENDS)
# The media with a store every node shares (tests that write bad records into that store behind the mesh's back);
# gRPC's own bad-input tests send them over the wire instead (tests/grpc).
STORE_BACKENDS = ["sqlite", "redis"]

FAST = {
    "heartbeat_interval_seconds": 0.2,
    "suspect_after_seconds": 0.5,
    "node_timeout_seconds": 1.0,
    "shutdown_grace_seconds": 0.5,
}


class Cluster(mesh_testing.Cluster):
    """The shared cluster with the contract suite's fast timings."""

    def __init__(self, root: Path, backend: str, redis_url: str | None = None) -> None:
        super().__init__(root, backend, redis_url, settings=FAST)


@contextlib.asynccontextmanager
async def cluster_for(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster on the backend ``request.param`` (a real redis-server for redis), closed afterwards."""
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    c = Cluster(tmp_path, request.param, url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_for(request, tmp_path) as c:
        yield c


async def sqlite_file_with_a_claimed_task(db: Path, worker: str) -> Task:
    """A new SQLite file at ``db`` holding one echo task that ``worker`` claimed (the backend closed again): the
    start of a test that rewinds the file to an earlier release's schema and opens it anew."""
    task = Task(uuid.uuid4().hex, "echo", None, submitter_id=worker, submitted_at=time.time())
    backend = SqliteBackend(str(db))
    await backend.open(NodeInfo(node_id=worker, name="w1"))
    try:
        await backend.enqueue([Assignment(task, worker, "w1", "test", capacity=100)])
        [claimed] = await backend.claim(worker, 1, 30.0)
    finally:
        await backend.close()
    return claimed
