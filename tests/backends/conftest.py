"""The backend contract suite: every test runs on every backend (sqlite and redis).

Nodes here are in-process managers sharing one event loop, each with its own
state folder; ``cluster.crash()`` stops one the way kill -9 would (no leave, no
hand back), so death and lease expiry are judged by the real failure detector.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import mesh_testing
from mesh_testing import eventually

__all__ = ["BACKENDS", "FAST", "Cluster", "eventually"]

# MESH_CONTRACT_GRPC=1 adds grpc_mesh while it is being built (it joins mesh_testing.BACKENDS when it passes).
BACKENDS = list(mesh_testing.BACKENDS) + (["grpc"] if os.environ.get("MESH_CONTRACT_GRPC") else [])

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


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    c = Cluster(tmp_path, request.param, url)
    try:
        yield c
    finally:
        await c.close()
