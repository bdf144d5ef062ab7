"""Real ``mesh-tui --no-ui`` processes on a temporary SQLite or Redis mesh, killed with -9 and SIGSTOPped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mesh_testing
from mesh_testing import NodeProcess, until

__all__ = ["HEARTBEAT", "SUSPECT", "TIMEOUT", "Cluster", "NodeProcess", "until"]

HEARTBEAT = 0.5
SUSPECT = 1.0
TIMEOUT = 2.0


class Cluster(mesh_testing.Cluster):
    """The shared cluster with these tests' timings (slow enough for a loaded 2-core machine)."""

    def __init__(self, root: Path, backend: str = "sqlite", redis_url: str | None = None) -> None:
        super().__init__(root, backend, redis_url, settings={
            "heartbeat_interval_seconds": HEARTBEAT, "suspect_after_seconds": SUSPECT,
            "node_timeout_seconds": TIMEOUT, "shutdown_grace_seconds": 1.0,
            "task_distribution": {"retry_backoff_seconds": 0.05},
        })


@pytest.fixture(params=list(mesh_testing.BACKENDS))
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    c = Cluster(tmp_path, request.param, url)
    try:
        yield c
    finally:
        c.stop()
