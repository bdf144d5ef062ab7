"""TUI test set-up: real in-process nodes on a temporary SQLite file, and a helper to wait for the app.

Behaviour tests run the app on a real ``AgentMeshManager`` (the app starts it
and stops it); other nodes in the same event loop watch what the mesh sees.
``mesh.crash()`` stops a node the way kill -9 would (no leave, no hand-back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import mesh_testing
from mesh_core import AgentMeshManager
from mesh_tui.app import MeshApp

FAST = {
    "heartbeat_interval_seconds": 0.2,
    "suspect_after_seconds": 0.6,
    "node_timeout_seconds": 1.2,
    "shutdown_grace_seconds": 0.2,
}
SIZE = (160, 48)


class Mesh(mesh_testing.Cluster):
    """The shared cluster on SQLite with the cockpit's timings, and the app on it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "sqlite", settings=FAST)

    def app(self, name: str = "cockpit", **extra: Any) -> MeshApp:
        """The app with its own (not yet started) node: it starts it on mount and stops it on quit."""
        return MeshApp(self.node_config(name, **extra), refresh_interval=0.5)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        await m.close()


async def eventually(check: Callable[[], Any], timeout: float = 8.0, interval: float = 0.05) -> Any:
    """``mesh_testing.eventually`` with the longer default wait a screen needs."""
    return await mesh_testing.eventually(check, timeout, interval)


async def status_seen_by(watcher: AgentMeshManager, name: str) -> str | None:
    view = await watcher.mesh_view()
    return next((m.status.value for m in view["members"] if m.info.name == name), None)
