"""TUI test set-up: real in-process nodes on a temporary SQLite file, and a helper to wait for the app.

Behaviour tests run the app on a real ``AgentMeshManager`` (the app starts it
and stops it); other nodes in the same event loop watch what the mesh sees.
``crash()`` stops a node the way kill -9 would (no leave, no hand-back), as in
``tests/backends/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mesh_core import AgentMeshManager, load_config
from mesh_core.config import MeshConfig
from mesh_tui.app import MeshApp
from tests.crash import crash

FAST = {
    "heartbeat_interval_seconds": 0.2,
    "suspect_after_seconds": 0.6,
    "node_timeout_seconds": 1.2,
    "shutdown_grace_seconds": 0.2,
}
SIZE = (160, 48)


class Mesh:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[AgentMeshManager] = []

    def config(self, name: str, node_type: str = "general", **extra: Any) -> MeshConfig:
        overrides: dict[str, Any] = {**FAST, "protocol": "sqlite_local", "sqlite_db_path": str(self.root / "mesh.db"),
                                     "state_dir": str(self.root / "state"), "node_name": name,
                                     "node_type": node_type}
        overrides.update(extra)
        return load_config(overrides=overrides, use_default_file=False)

    async def node(self, name: str, node_type: str = "general", **extra: Any) -> AgentMeshManager:
        mesh = AgentMeshManager(self.config(name, node_type, **extra))
        await mesh.start()
        self.nodes.append(mesh)
        return mesh

    def app(self, name: str = "cockpit", **extra: Any) -> MeshApp:
        """The app with its own (not yet started) node: it starts it on mount and stops it on quit."""
        return MeshApp(self.config(name, **extra), refresh_interval=0.5)

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


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        await m.close()


async def eventually(check: Callable[[], Any], timeout: float = 8.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


async def status_seen_by(watcher: AgentMeshManager, name: str) -> str | None:
    view = await watcher.mesh_view()
    return next((m.status.value for m in view["members"] if m.info.name == name), None)
