"""Nemesis on time: one node's wall clock ±300 s (faketime), writing, then killed."""

from __future__ import annotations

import asyncio

import pytest

from mesh_testing.chaos import ChaosRun
from mesh_testing.faults import faketime_missing, skewed_clock

from .conftest import SCALE, TIMEOUT, MakeRun, judge

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if SCALE.name == "long" else 180),
              pytest.mark.skipif(faketime_missing() is not None, reason=str(faketime_missing()))]

SKEWED_WRITES = 10


@pytest.mark.parametrize("skew", SCALE.skews, ids=lambda s: f"{s:+g}s")
def test_one_node_with_a_skewed_clock(make_run: MakeRun, backend: str, mesh_url: str | None, skew: float) -> None:
    run = make_run(backend, mesh_url)
    run.start_workers(3, prefixes={"w2": skewed_clock(skew)}, watchers=("w0", "w1"))
    false_deaths: list[dict[str, dict[str, str]]] = []

    def nemesis(run: ChaosRun) -> None:
        run.wait_in_flight(SCALE.in_flight // 2)
        for i in range(SKEWED_WRITES):  # its stamps travel to the others' replicas and clocks
            run.remember("w2", 90_000 + i)
        for view in (run.views(timeout=3) for _ in range(3)):
            if any(status == "dead" for node_view in view.values() for status in node_view.values()):
                false_deaths.append(view)
        killed = run.kill("w2")
        run.detect_dead("w2", since=killed, timeout=3 * TIMEOUT)
        run.healed()

    asyncio.run(run.run(nemesis))
    verdict = judge(f"clock {skew:+g}s", run)
    assert not false_deaths, f"a node was declared dead while every node ran: {false_deaths[0]}"
    assert verdict.detection_s is not None and verdict.detection_s <= TIMEOUT + 2.0, \
        f"the skewed node, killed, was declared dead after {verdict.detection_s} s (None: never)"
