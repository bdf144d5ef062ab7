"""Nemeses on the medium: Redis killed and restarted (AOF on), a disk that fills mid-run."""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh_testing import RedisServer
from mesh_testing.chaos import ChaosRun
from mesh_testing.faults import SmallDisk

from .conftest import SCALE, SETTINGS, MakeRun, judge

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if SCALE.name == "long" else 180)]

REDIS_DOWN_S = 2.0
DISK_FULL_S = 3.0
NO_SMALL_DISK = SmallDisk.unavailable()


def test_redis_killed_and_restarted_mid_run(make_run: MakeRun) -> None:
    # appendfsync always: with the default (everysec) a kill -9 may drop the last second of replies already sent
    server = RedisServer(appendonly=True, extra=("--appendfsync", "always")).start()
    try:
        run = make_run("redis", server.url)
        run.start_workers(3)

        def nemesis(run: ChaosRun) -> None:
            run.wait_in_flight(SCALE.in_flight // 2)
            server.kill()
            time.sleep(REDIS_DOWN_S)
            server.start()
            run.healed()

        asyncio.run(run.run(nemesis))
        judge("redis kill -9 + restart (AOF)", run)
    finally:
        server.cleanup()


@pytest.mark.skipif(NO_SMALL_DISK is not None, reason=f"no small disk: {NO_SMALL_DISK}")
def test_a_disk_that_fills_mid_run(make_run: MakeRun, backend: str, mesh_url: str | None) -> None:
    with SmallDisk(64) as disk:
        run = make_run(backend, mesh_url)
        cluster = run.cluster
        # the mesh's file and the nodes' replicas on the small disk; logs stay outside so the harness keeps its eyes
        cluster.db, cluster.state = disk.path / "mesh.db", disk.path / "state"
        cluster.write_config(SETTINGS)
        try:
            run.start_workers(3)
            filled: dict[str, int] = {}

            def nemesis(run: ChaosRun) -> None:
                run.wait_in_flight(SCALE.in_flight // 2)
                filled["bytes"] = disk.fill()
                time.sleep(DISK_FULL_S)
                disk.drain()
                run.healed()

            asyncio.run(run.run(nemesis))
            judge("disk full mid-run", run)
            assert filled["bytes"] > 0
        finally:
            cluster.stop()


