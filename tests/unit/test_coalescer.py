"""``Coalescer``: calls made together run as one batch; with ``overlap``, a batch that waits does not hold up the
calls made after it, and an error reaches the callers of its own batch only."""

from __future__ import annotations

import asyncio

import pytest

from mesh_core.coalesce import Coalescer


class Gate:
    """A batch function that records each batch and waits for the test to let the batches it names go."""

    def __init__(self, hold: set[int]) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        if self.hold & set(items):
            await self.release.wait()
        if -1 in items:
            raise ValueError("a bad batch")
        return [i * 10 for i in items]


async def test_calls_of_one_loop_pass_run_as_one_batch_in_both_modes() -> None:
    for overlap in (False, True):
        gate = Gate(set())
        batch = Coalescer(gate, overlap=overlap)
        assert await asyncio.gather(batch([1, 2]), batch([3])) == [[10, 20], [30]]
        assert gate.batches == [[1, 2, 3]]


async def test_with_overlap_a_waiting_batch_does_not_hold_the_next() -> None:
    gate = Gate({1})
    batch = Coalescer(gate, overlap=True)
    first = asyncio.ensure_future(batch([1]))
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(batch([2]), 1) == [20]  # ran while the first waits
    assert not first.done()
    gate.release.set()
    assert await first == [10]
    assert gate.batches == [[1], [2]]


async def test_without_overlap_the_next_batch_waits_for_the_one_running() -> None:
    gate = Gate({1})
    batch = Coalescer(gate)
    first = asyncio.ensure_future(batch([1]))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(batch([2]))
    await asyncio.sleep(0.01)
    assert gate.batches == [[1]] and not second.done()
    gate.release.set()
    assert await first == [10] and await second == [20]


async def test_an_error_reaches_the_callers_of_its_batch_only() -> None:
    for overlap in (False, True):
        gate = Gate(set())
        batch = Coalescer(gate, overlap=overlap)
        bad = asyncio.gather(batch([-1]), batch([4]), return_exceptions=True)
        results = await bad
        assert all(isinstance(r, ValueError) for r in results)
        assert await batch([5]) == [50]  # the next batch runs
    with pytest.raises(ValueError, match="a bad batch"):
        await Coalescer(Gate(set()), overlap=True)([-1])


async def test_inline_a_lone_caller_runs_its_batch_in_its_own_task_and_a_burst_still_joins() -> None:
    gate = Gate(set())
    batching = Coalescer(gate, inline=True)
    task = asyncio.current_task()
    seen: list[asyncio.Task | None] = []

    async def run(items: list[int]) -> list[int]:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)  # a write waits on its store for a while
        return await gate(items)

    batching._run = run  # the batch function, noting which task runs it
    for i in range(3):  # one call after another: each one its own batch, run in the caller's task
        assert await batching([i]) == [i * 10]
    assert seen == [task] * 3 and gate.batches == [[0], [1], [2]]
    # a burst: the first call goes alone, the calls made meanwhile make one batch, and after a batch of many the
    # next burst joins as one batch again
    assert await asyncio.gather(*(batching([i]) for i in range(10, 15))) == [[i * 10] for i in range(10, 15)]
    assert gate.batches[3:] == [[10], [11, 12, 13, 14]]
    assert await asyncio.gather(*(batching([i]) for i in range(20, 24))) == [[i * 10] for i in range(20, 24)]
    assert gate.batches[5:] == [[20, 21, 22, 23]]
    assert await batching([30]) == [300]  # that batch was of many: this call joins the batching path, alone
    assert seen[-1] is not task
    assert await batching([31]) == [310]  # after a batch of one, inline again
    assert seen[-1] is task
