"""Loop supervision: the pure restart policy and health record (mesh_core/supervision.py), and the supervisor
in NodeContext restarting a real loop."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core.config import MeshConfig
from mesh_core.events import Problem
from mesh_core.model import NodeRole
from mesh_core.node.context import NodeContext
from mesh_core.supervision import LoopHealth, LoopState, RestartPolicy, one_line
from mesh_testing import eventually

POLICY = RestartPolicy(base_s=0.1, cap_s=4.0, settle_s=10.0, dead_after=5)


# --- the restart policy (pure) ----------------------------------------------------------

def test_delay_doubles_from_the_base_up_to_the_cap() -> None:
    ceilings = [POLICY.delay(n, random.Random(1)) for n in range(1, 10)]
    for n, delay in enumerate(ceilings, start=1):
        ceiling = min(4.0, 0.1 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(ceilings) <= 4.0 and ceilings[-1] >= 2.0  # capped, and stays near the cap


@given(failures=st.integers(min_value=0, max_value=200), seed=st.integers(0, 2**32))
def test_delay_is_never_zero_and_never_past_the_cap(failures: int, seed: int) -> None:
    delay = POLICY.delay(failures, random.Random(seed))
    assert POLICY.base_s / 2 <= delay <= POLICY.cap_s


def test_delay_is_jittered() -> None:
    rng = random.Random(7)
    assert len({round(POLICY.delay(4, rng), 6) for _ in range(20)}) > 10


def test_a_loop_that_ran_a_while_starts_again_from_the_base() -> None:
    assert POLICY.failures_in_row(0, 0.01) == 1
    assert POLICY.failures_in_row(3, 0.01) == 4
    assert POLICY.failures_in_row(3, 9.99) == 4
    assert POLICY.failures_in_row(7, 10.0) == 1


def test_a_loop_failing_again_and_again_is_shown_dead() -> None:
    assert [POLICY.state_after(n) for n in range(1, 7)] == [LoopState.RESTARTING] * 4 + [LoopState.DEAD] * 2


# --- the health record (pure) -------------------------------------------------------------

def test_health_counts_restarts_and_logs_each_distinct_error_once() -> None:
    health = LoopHealth("claim", since=100.0)
    assert health.state is LoopState.RUNNING and not health.down
    assert health.failed("ValueError: x", 1, LoopState.RESTARTING, now=101.0) is True
    assert health.down and health.since == 101.0 and health.restarts == 1
    health.running(now=102.0)
    assert not health.down and health.since == 102.0
    assert health.failed("ValueError: x", 2, LoopState.RESTARTING, now=103.0) is False  # same error: no traceback
    assert health.failed("TypeError: y", 3, LoopState.RESTARTING, now=104.0) is True
    assert health.since == 103.0  # still restarting: since is when it went down
    assert health.as_dict() == {"name": "claim", "state": "restarting", "restarts": 3,
                                "last_error": "TypeError: y", "since": 103.0}


def test_one_line_keeps_an_error_on_one_short_line() -> None:
    assert one_line(ValueError("bad\nvalue  here")) == "ValueError: bad value here"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(None) == "the loop returned"
    assert len(one_line(RuntimeError("x" * 1000))) == 200


# --- the supervisor in NodeContext (a real context, real asyncio) ----------------------------

@pytest.fixture
async def ctx():
    context = NodeContext(MeshConfig(), NodeRole.WORKER, None)
    context.restart_policy = RestartPolicy(base_s=0.02, cap_s=0.1, settle_s=5.0)
    yield context
    await context.stop_loops()


async def test_a_loop_that_raises_is_restarted_counted_and_the_node_degraded_until_it_runs(ctx) -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise ValueError("bad value in a queue entry")
        await asyncio.Event().wait()

    seen: list[object] = []

    async def collect() -> None:
        async for event in ctx.events.subscribe():
            seen.append(event)

    collector = asyncio.get_running_loop().create_task(collect())
    await asyncio.sleep(0)  # subscribed before the loop starts
    ctx.spawn(("claim", flaky))
    await eventually(lambda: len(runs) == 3)
    (health,) = ctx.loop_health()
    assert health.state is LoopState.RUNNING and health.restarts == 2
    assert health.last_error == "ValueError: bad value in a queue entry"
    assert ctx.loops_ok
    assert ctx.counters["loop_restarts"] == 2 and ctx.counters["loop_restarts_claim"] == 2
    await eventually(lambda: len(seen) == 2)
    collector.cancel()
    assert all(isinstance(e, Problem) and e.counter == "loop_restarts" and "claim" in e.detail for e in seen)


async def test_the_node_is_degraded_while_a_loop_waits_to_restart(ctx) -> None:
    ctx.restart_policy = RestartPolicy(base_s=30.0, cap_s=30.0)

    async def broken() -> None:
        raise TypeError("unsupported operand")

    ctx.spawn(("memory", broken))
    await eventually(lambda: not ctx.loops_ok)
    (health,) = ctx.loop_health()
    assert health.state is LoopState.RESTARTING and ctx.loop_metrics() == {"loops_down": ["memory"]}


async def test_a_loop_that_returns_while_the_node_runs_is_restarted(ctx) -> None:
    runs: list[int] = []

    async def quits() -> None:
        runs.append(1)
        if len(runs) > 1:
            await asyncio.Event().wait()

    ctx.spawn(("view", quits))
    await eventually(lambda: len(runs) == 2)
    assert ctx.loop_health()[0].last_error == "the loop returned"


async def test_stopping_the_node_is_not_a_failure(ctx) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    ctx.spawn(("heartbeat", forever), ("results", forever))
    await asyncio.sleep(0.05)
    await ctx.stop_loops()
    assert [h.state for h in ctx.loop_health()] == [LoopState.STOPPED, LoopState.STOPPED]
    assert ctx.counters["loop_restarts"] == 0 and ctx.loops_ok
