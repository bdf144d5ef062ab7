"""grpc_mesh's own tests: in-process nodes on real gRPC servers on 127.0.0.1, with the contract suite's fast
timings (``cluster``); each node's private store and server are real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ..backends.conftest import Cluster


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
