"""Nemeses on the network, in namespaces the test makes: one node partitioned, 30% packet loss.

Redis in one namespace, each node and the workload in their own, joined by a
bridge in a hub namespace; nothing is added to the machine's own network.
SQLite has no network between nodes (one file on one machine), so these run on
redis only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mesh_testing.chaos import ChaosRun
from mesh_testing.netns import NamespacedRedis, NetLab, unavailable

from .conftest import SCALE, TIMEOUT, MakeRun, judge

NO_NETNS = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if SCALE.name == "long" else 180),
              pytest.mark.skipif(NO_NETNS is not None, reason=f"network namespaces: {NO_NETNS}")]

WORKERS = ("w0", "w1", "w2")
WARM_UP_S = 1.0  # the workload is under way before the fault


@pytest.fixture
def lab_run(make_run: MakeRun) -> Iterator[tuple[NetLab, ChaosRun]]:
    lab = NetLab(["redis", *WORKERS, "client"])
    redis = None
    run = None
    try:
        redis = NamespacedRedis(lab, "redis").start()
        run = make_run("redis", redis.url)
        run.start_workers(len(WORKERS), prefixes={w: lab.exec_prefix(w) for w in WORKERS})
        yield lab, run
    finally:
        if run is not None:
            run.cluster.stop()
        if redis is not None:
            redis.cleanup()
        lab.close()


def test_one_node_partitioned(lab_run: tuple[NetLab, ChaosRun]) -> None:
    lab, run = lab_run

    def nemesis(run: ChaosRun) -> None:
        time.sleep(WARM_UP_S)
        lab.partition("w1")
        cut = time.monotonic()
        run.detect_dead("w1", since=cut, timeout=SCALE.partition_s)
        time.sleep(max(0.0, SCALE.partition_s - (time.monotonic() - cut)))
        lab.heal("w1")
        run.healed()

    run.run_outside(nemesis, lab.exec_prefix("client"), spread_s=SCALE.partition_s + 2 * WARM_UP_S)
    verdict = judge(f"partition {SCALE.partition_s:g}s", run)
    assert verdict.detection_s is not None and verdict.detection_s <= TIMEOUT + 2.0, verdict.detection_s


def test_thirty_percent_packet_loss(lab_run: tuple[NetLab, ChaosRun]) -> None:
    lab, run = lab_run
    how: set[str] = set()

    def nemesis(run: ChaosRun) -> None:
        time.sleep(WARM_UP_S)
        for host in (*WORKERS, "client"):
            how.add(lab.lose(host, 30))
        time.sleep(SCALE.loss_s)
        for host in (*WORKERS, "client"):
            lab.heal(host)
        run.healed()

    run.run_outside(nemesis, lab.exec_prefix("client"), spread_s=SCALE.loss_s + 2 * WARM_UP_S)
    judge(f"30% loss {SCALE.loss_s:g}s ({'/'.join(sorted(how))})", run)


def test_sqlite_has_no_network_to_cut() -> None:
    pytest.skip("sqlite_local is one file on one machine: partitions and packet loss apply to redis (and grpc)")
