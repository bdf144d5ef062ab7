"""The submitter loops of every reference: idle round trips and a bounded in-flight window.

One loop of each shape, for a blocking client (Celery and Huey in ``peers.py``)
and for a coroutine API (the gRPC references): send until ``window`` are
outstanding, then collect the oldest result, then send the next. Each loop is a
generator that yields what to do (``Submit`` a request, ``Collect`` a result,
which comes back ``Failed`` when the wait raised) and does its own timing and
counting; ``run_blocking`` and ``run_async`` carry the steps out. Standard
library and ``bench.stats`` only: the AutoGen client imports this module from
its own virtual environment.

A request's send returns a handle that resolves to the id the far side echoed
back; submit→result runs from the send call to the handle resolving. For a
coroutine API, ``send(i)`` is awaited for the handle and the handle awaited for
the id; for a blocking one, ``get(handle, timeout)`` returns the id.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from .stats import summary_ms

Send = Callable[[int], Awaitable[Awaitable[Any]]]
Cpu = Callable[[], Mapping[str, float]]  # CPU seconds used so far, per process (or group of processes)


@dataclass(frozen=True)
class Submit:
    """Send request ``i``; the loop is given back its handle."""

    i: int


@dataclass(frozen=True)
class Collect:
    """Wait up to the timeout for ``handle``; the loop is given back its result, or ``Failed``."""

    handle: Any


@dataclass(frozen=True)
class Failed:
    """What a ``Collect`` gives back when the wait raised (a timeout, a lost or failed request)."""

    error: Exception


Loop = Generator[Submit | Collect, Any, dict[str, Any]]


def run_blocking(loop: Loop, send: Callable[[int], Any], get: Callable[[Any, float], Any],
                 timeout: float) -> dict[str, Any]:
    """Run ``loop`` with a blocking client: ``send(i)`` returns a handle, ``get(handle, timeout)`` its result."""
    def collect(handle: Any) -> Any:
        try:
            return get(handle, timeout)
        except Exception as exc:
            return Failed(exc)

    try:
        step = next(loop)
        while True:
            step = loop.send(send(step.i) if isinstance(step, Submit) else collect(step.handle))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(loop: Loop, send: Send, timeout: float) -> dict[str, Any]:
    """Run ``loop`` with a coroutine API: ``await send(i)`` gives a handle, awaiting the handle its result."""
    async def collect(handle: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await handle
        except Exception as exc:
            return Failed(exc)

    try:
        step = next(loop)
        while True:
            step = loop.send(await send(step.i) if isinstance(step, Submit) else await collect(step.handle))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _stopped(stop: Callable[[], bool] | None) -> bool:
    return stop is not None and stop()


def idle_loop(n: int, stop: Callable[[], bool] | None = None) -> Loop:
    """``n`` sequential round trips: the latency of a lone request."""
    total, submit = [], []
    failed = 0
    started = time.perf_counter()
    for i in range(n):
        if _stopped(stop):
            break
        t0 = time.perf_counter()
        handle = yield Submit(i)
        t1 = time.perf_counter()
        result = yield Collect(handle)
        ok = not isinstance(result, Failed) and result == i
        total.append(time.perf_counter() - t0)
        submit.append(t1 - t0)
        failed += not ok
    return {"round_trips": len(total), "failed": failed, "wall_seconds": round(time.perf_counter() - started, 3),
            "round_trip": summary_ms(total), "submit_call": summary_ms(submit)}


def window_loop(n: int, inflight: int, budget_s: float, stop: Callable[[], bool] | None = None) -> Loop:
    """Up to ``n`` requests with at most ``inflight`` outstanding, the oldest collected first; sending stops
    after ``budget_s``."""
    outstanding: collections.deque[tuple[int, float, Any]] = collections.deque()
    total, submit = [], []
    failed = errors = 0
    samples: list[str] = []
    first = time.perf_counter()
    deadline = first + budget_s
    last_done = first
    sent = 0
    while sent < n or outstanding:
        while sent < n and len(outstanding) < inflight and time.perf_counter() < deadline and not _stopped(stop):
            t0 = time.perf_counter()
            outstanding.append((sent, t0, (yield Submit(sent))))
            submit.append(time.perf_counter() - t0)
            sent += 1
        if not outstanding:
            break
        i, t0, handle = outstanding.popleft()
        result = yield Collect(handle)
        if isinstance(result, Failed):  # a lost or failed request is counted and shown, the run goes on
            errors += 1
            if len(samples) < 5:
                samples.append(f"{type(result.error).__name__}: {result.error}")
            continue
        ok = result == i
        last_done = time.perf_counter()
        total.append(last_done - t0)
        failed += not ok
    wall = last_done - first
    done = len(total)
    return {"tasks_requested": n, "tasks_finished": done, "failed": failed, "errors": errors,
            "error_samples": samples, "truncated_by_budget": sent < n, "inflight": inflight,
            "wall_seconds": round(wall, 3), "tasks_per_second": round(done / wall, 1) if wall > 0 else 0.0,
            "latency_under_load": summary_ms(total), "submit_call_under_load": summary_ms(submit)}


async def idle(send: Send, n: int, timeout: float, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """``idle_loop`` over a coroutine API."""
    return await run_async(idle_loop(n, stop), send, timeout)


async def window(send: Send, n: int, inflight: int, budget_s: float, timeout: float,
                 stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """``window_loop`` over a coroutine API."""
    return await run_async(window_loop(n, inflight, budget_s, stop), send, timeout)


def cpu_fields(before: Mapping[str, float], after: Mapping[str, float], wall: float, done: int) -> dict[str, Any]:
    """CPU seconds and cores per process group over a phase, and CPU milliseconds per finished request (all)."""
    used = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
    all_s = sum(after[k] - before.get(k, 0.0) for k in after)
    return {"cpu_seconds": used,
            "cpu_utilisation": {k: round(v / wall, 3) if wall > 0 else 0.0 for k, v in used.items()},
            "cpu_ms_per_task": round(all_s * 1000.0 / done, 3) if done else None}


async def measure(name: str, send: Send, cpu: Cpu, *, latency_n: int, n: int, windows: tuple[int, ...],
                  budget_s: float, timeout: float, warmup: int, log: Callable[[str], Any],
                  check: Callable[[], Any] = lambda: None,
                  stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Warm up, then idle latency, then one throughput run per window level; CPU of every process per phase."""
    for i in range(warmup):
        handle = await send(i)
        async with asyncio.timeout(timeout):
            await handle
    out: dict[str, Any] = {}
    log(f"{name}: idle latency, {latency_n} sequential round trips ...")
    before, wall = dict(cpu()), time.perf_counter()
    lat = await idle(send, latency_n, timeout, stop)
    lat.update(cpu_fields(before, cpu(), time.perf_counter() - wall, lat["round_trips"]))
    out["idle_latency"] = lat
    check()
    log(f"{name}: idle p50 {lat['round_trip'].get('p50_ms')} ms, p99 {lat['round_trip'].get('p99_ms')} ms")
    runs = []
    for inflight in windows:
        if _stopped(stop):
            break
        log(f"{name}: throughput, {n} requests with {inflight} in flight ...")
        before, wall = dict(cpu()), time.perf_counter()
        thr = await window(send, n, inflight, budget_s, timeout, stop)
        thr.update(cpu_fields(before, cpu(), time.perf_counter() - wall, thr["tasks_finished"]))
        runs.append(thr)
        check()
        log(f"{name}: {thr['tasks_per_second']} requests/s, under load p50 "
            f"{thr['latency_under_load'].get('p50_ms')} ms, p99 {thr['latency_under_load'].get('p99_ms')} ms, "
            f"CPU {thr['cpu_ms_per_task']} ms/request")
    out["throughput"] = runs
    out["best_tasks_per_second"] = max((r["tasks_per_second"] for r in runs), default=0.0)
    return out
