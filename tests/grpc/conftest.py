"""grpc_mesh's own tests: in-process nodes on real gRPC servers on 127.0.0.1, with the contract suite's fast
timings (``cluster``); each node's private store and server are real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mesh_core import AgentMeshManager

from ..backends.conftest import Cluster, eventually


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, "grpc")
    try:
        yield c
    finally:
        await c.close()


def backend_of(mesh: Any) -> Any:
    """The node's grpc_mesh backend (its wire, store and counters)."""
    return mesh.services.ctx.backend


async def owner_and_client(cluster: Cluster, handler: Any, **worker: Any) -> tuple[AgentMeshManager,
                                                                                  AgentMeshManager]:
    """w1 serving ``only_w1`` with ``handler`` (so every task is routed to it, and it owns them), w2 as its backup,
    and a client that knows w1 serves it; w1's worker has claimed once (it said what it can take)."""
    w1 = await cluster.node("w1", **worker)
    w2 = await cluster.node("w2")
    w1.register_handler("only_w1", handler)
    client = await cluster.client()
    b1 = backend_of(w1)
    await eventually(lambda: b1._backup_peer() == backend_of(w2).node_id)
    await eventually(lambda: any(n.node_id == w1.node_id and "only_w1" in n.task_types
                                 for n in client.services.members.workers()))
    await eventually(lambda: b1.store._own_free is not None)
    return w1, client
