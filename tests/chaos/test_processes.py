"""Nemeses on the node processes: kill -9 with tasks in flight, SIGSTOP short and long."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from mesh_testing.chaos import ChaosRun

from .conftest import SCALE, SUSPECT, TIMEOUT, MakeRun, judge

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if SCALE.name == "long" else 180)]


def test_kill9_of_a_worker_with_tasks_in_flight(make_run: MakeRun, backend: str, mesh_url: str | None) -> None:
    run = make_run(backend, mesh_url)
    run.start_workers(3)
    seen: dict[str, float] = {}

    def nemesis(run: ChaosRun) -> None:
        seen["in_flight"] = run.wait_in_flight(SCALE.in_flight)
        killed = run.kill("w1")
        run.detect_dead("w1", since=killed)
        run.healed()

    asyncio.run(run.run(nemesis))
    assert seen["in_flight"] >= SCALE.in_flight
    verdict = judge("kill -9 worker", run)
    assert verdict.detection_s is not None and verdict.detection_s <= TIMEOUT + 2.0, verdict.detection_s


def test_sigstop_shorter_than_suspect_after_is_no_death(make_run: MakeRun, backend: str,
                                                         mesh_url: str | None) -> None:
    run = make_run(backend, mesh_url)
    run.start_workers(3)
    paused: list[float] = []

    def nemesis(run: ChaosRun) -> None:
        run.wait_in_flight(SCALE.in_flight // 2)
        stopped = run.kill("w1", signal.SIGSTOP)
        time.sleep(SUSPECT / 2)
        run.kill("w1", signal.SIGCONT)
        paused.append(time.monotonic() - stopped)
        run.healed()
        time.sleep(TIMEOUT)  # a false death would be declared within the timeout after the pause

    asyncio.run(run.run(nemesis))
    judge("SIGSTOP < suspect_after", run)
    assert paused[0] < SUSPECT, f"the pause took {paused[0]:.2f} s: the nemesis itself was too slow"
    deaths = run.deaths_seen("w1")  # the others' own event logs: a brief "dead" cannot slip between two polls
    assert not deaths, f"w1 was declared dead after a {paused[0]:.2f} s pause (suspect_after {SUSPECT} s): {deaths[:3]}"


def test_sigstop_longer_than_twice_the_timeout_is_death_and_the_late_result_is_refused(
        make_run: MakeRun, backend: str, mesh_url: str | None) -> None:
    run = make_run(backend, mesh_url)
    run.start_workers(3)

    held: set[str] = set()

    def nemesis(run: ChaosRun) -> None:
        run.wait_in_flight(SCALE.in_flight)
        stopped, holding = run.stop_holding_work("w1")  # so there is work to move (once it held none)
        held.update(holding)
        run.detect_dead("w1", since=stopped)
        while time.monotonic() - stopped < 2 * TIMEOUT + 1.0:
            time.sleep(0.1)
        run.kill("w1", signal.SIGCONT)  # it wakes holding results of attempts that were moved away
        run.healed()

    asyncio.run(run.run(nemesis))
    verdict = judge("SIGSTOP > 2 x timeout", run)
    assert verdict.detection_s is not None, "the stopped node was never declared dead"
    moved = held & {e.task_id for e in run.history.executions if e.node != "w1"}
    assert moved == held, f"tasks the stopped node held but nobody else ran: {sorted(held - moved)[:5]}"
