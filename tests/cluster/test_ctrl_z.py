"""Ctrl-Z on a headless node stops it only between two writes: a process stopped inside a write to the shared
SQLite file would hold its lock and freeze every node on it (README, "One limit of sharing one file")."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import psutil
import pytest

from mesh_core.backends.sqlite.locks import write_lock_holder

from .conftest import Cluster, until

pytestmark = pytest.mark.slow

ROUNDS = 40


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_ctrl_z_never_stops_a_busy_node_holding_the_files_write_lock(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "sqlite")
    try:
        node = cluster.start("w1", "--capacity", "64")
        node.wait_started()
        pid = node.proc.pid
        caught: list[int] = []

        def ctrl_z_rounds() -> None:
            for i in range(ROUNDS):
                node.kill(signal.SIGTSTP)
                until(lambda: _stopped(pid), timeout=5, interval=0.001)
                holder = write_lock_holder(str(cluster.db))
                if holder is not None and holder.pid == pid:
                    caught.append(i)
                node.kill(signal.SIGCONT)
                time.sleep(0.03)

        async def main() -> None:
            client = await cluster.client()
            busy = True

            async def lane() -> None:
                while busy:  # every task costs the worker a claim, a start and a result: writes all the time
                    await client.wait_for(await client.submit_task("echo", {"x": 1}, queue=True), timeout=30)
            lanes = [asyncio.create_task(lane()) for _ in range(16)]
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(ctrl_z_rounds)
            finally:
                busy = False
                await asyncio.gather(*lanes)
                await client.stop()
        asyncio.run(main())
        assert not caught, f"stopped holding the write lock in rounds {caught} of {ROUNDS}"
        assert node.alive, node.stderr[-2000:]
    finally:
        cluster.stop()
