"""The backend contract suite: every test runs on every backend (sqlite now; redis and grpc join later).

Nodes here are in-process managers sharing one event loop, each with its own
state folder; ``crash()`` stops one the way kill -9 would (no leave, no hand
back), so death and lease expiry are judged by the real failure detector.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mesh_core import AgentMeshManager, load_config
from mesh_core.model import NodeRole
from tests.crash import crash

BACKENDS = ["sqlite", "redis"]

FAST = {
    "heartbeat_interval_seconds": 0.2,
    "suspect_after_seconds": 0.5,
    "node_timeout_seconds": 1.0,
    "shutdown_grace_seconds": 0.5,
}


class Cluster:
    def __init__(self, root: Path, backend: str, redis_url: str | None = None) -> None:
        self.root = root
        self.backend = backend
        self.redis_url = redis_url
        self.nodes: list[AgentMeshManager] = []

    def overrides(self, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = dict(FAST)
        if self.backend == "sqlite":
            base.update({"protocol": "sqlite_local", "sqlite_db_path": str(self.root / "mesh.db")})
        else:
            # one server per session; a cluster name per test keeps tests apart
            base.update({"protocol": "redis_distributed",
                         "redis": {"url": self.redis_url, "cluster": self.root.name}})
        base["state_dir"] = str(self.root / "state")
        base.update(extra)
        return base

    async def node(self, name: str | None = None, *, role: NodeRole = NodeRole.WORKER,
                   **extra: Any) -> AgentMeshManager:
        config = load_config(overrides=self.overrides(node_name=name, **extra), use_default_file=False)
        mesh = AgentMeshManager(config, role=role)
        await mesh.start()
        self.nodes.append(mesh)
        return mesh

    async def client(self, **extra: Any) -> AgentMeshManager:
        return await self.node(role=NodeRole.CLIENT, **extra)

    async def crash(self, mesh: AgentMeshManager) -> None:
        """Stop ``mesh`` as kill -9 would: no leave, no hand-back, leases left to lapse."""
        await crash(mesh)
        if mesh in self.nodes:
            self.nodes.remove(mesh)

    async def close(self) -> None:
        for mesh in reversed(self.nodes):
            with contextlib.suppress(Exception):
                await mesh.stop()
        self.nodes.clear()


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    c = Cluster(tmp_path, request.param, url)
    try:
        yield c
    finally:
        await c.close()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
