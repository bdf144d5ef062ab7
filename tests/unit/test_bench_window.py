"""The bench's submitter loops (``bench/window.py``): the same counts with a blocking client and a coroutine one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

from bench import window

KEYS = ("tasks_requested", "tasks_finished", "failed", "errors", "truncated_by_budget", "inflight")


def _echo(i: int) -> int:
    """Request ``i`` is lost when ``i % 7 == 3`` and answered wrongly when ``i % 5 == 0``."""
    return i if i % 5 else -1


def _blocking_get(handle: int, timeout: float) -> int:
    if handle % 7 == 3:
        raise TimeoutError(f"request {handle} lost")
    return _echo(handle)


async def _async_send(i: int) -> Awaitable[Any]:
    async def reply() -> int:
        if i % 7 == 3:
            await asyncio.sleep(5)  # lost: the collect times out
        return _echo(i)

    return asyncio.ensure_future(reply())


def test_blocking_and_async_clients_count_lost_and_wrong_replies_alike() -> None:
    blocking = window.run_blocking(window.window_loop(50, 4, budget_s=30.0), lambda i: i, _blocking_get, 1.0)
    coroutine = asyncio.run(window.window(_async_send, 50, 4, budget_s=30.0, timeout=0.05))
    expected = {"tasks_requested": 50, "tasks_finished": 43, "failed": 8, "errors": 7,
                "truncated_by_budget": False, "inflight": 4}
    assert {k: blocking[k] for k in KEYS} == expected
    assert {k: coroutine[k] for k in KEYS} == expected
    assert blocking["error_samples"][0] == "TimeoutError: request 3 lost" and len(blocking["error_samples"]) == 5
    assert blocking["latency_under_load"]["n"] == 43


def test_idle_counts_a_lost_reply_as_failed_and_a_set_stop_ends_the_loop() -> None:
    out = window.run_blocking(window.idle_loop(20), lambda i: i, _blocking_get, 1.0)
    assert (out["round_trips"], out["failed"]) == (20, 6)  # 0, 5, 10, 15 wrong; 3, 17 lost (10 is both)
    stop = threading.Event()
    stop.set()
    stopped = window.run_blocking(window.window_loop(20, 4, 30.0, stop.is_set), lambda i: i, _blocking_get, 1.0)
    assert stopped["tasks_finished"] == 0 and stopped["truncated_by_budget"]


def test_waiters_shape_counts_like_the_window_for_both_client_kinds() -> None:
    blocking = window.waiters_blocking(lambda i: i, _blocking_get, 50, 4, budget_s=30.0, timeout=1.0)
    coroutine = asyncio.run(window.waiters_async(_async_send, 50, 4, budget_s=30.0, timeout=0.05))
    expected = {"tasks_requested": 50, "tasks_finished": 43, "failed": 8, "errors": 7,
                "truncated_by_budget": False, "inflight": 4}
    assert {k: blocking[k] for k in KEYS} == expected
    assert {k: coroutine[k] for k in KEYS} == expected
    assert blocking["shape"] == coroutine["shape"] == "waiters"
    assert window.run_blocking(window.window_loop(5, 2, 30.0), lambda i: i, _blocking_get, 1.0)["shape"] == "window"


def test_waiters_keep_at_most_inflight_outstanding_and_stop_when_told() -> None:
    outstanding = peak = 0
    lock = threading.Lock()

    async def send(i: int) -> Awaitable[Any]:
        nonlocal outstanding, peak
        with lock:
            outstanding += 1
            peak = max(peak, outstanding)

        async def reply() -> int:
            nonlocal outstanding
            await asyncio.sleep(0.001)
            outstanding -= 1
            return i

        return reply()

    out = asyncio.run(window.waiters_async(send, 40, 3, budget_s=30.0, timeout=1.0))
    assert out["tasks_finished"] == 40 and peak == 3
    stop = threading.Event()
    stop.set()
    stopped = window.waiters_blocking(lambda i: i, _blocking_get, 20, 4, 30.0, 1.0, stop.is_set)
    assert stopped["tasks_finished"] == 0 and stopped["truncated_by_budget"]


def test_measure_blocking_runs_every_level_in_every_shape() -> None:
    out = window.measure_blocking("t", lambda i: i, lambda h, t: h, lambda: {"x": 0.0}, latency_n=3, n=10,
                                  windows=(2, 4), budget_s=30.0, timeout=1.0, warmup=1, log=lambda _: None,
                                  shapes=("window", "waiters"))
    assert [(r["shape"], r["inflight"]) for r in out["throughput"]] == [("window", 2), ("window", 4)]
    assert [r["inflight"] for r in out["shapes"]["waiters"]] == [2, 4]
    assert out["idle_latency"]["round_trips"] == 3
