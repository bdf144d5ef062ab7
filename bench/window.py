"""The submitter loops of every reference: idle round trips, and two shapes of a throughput run.

Two shapes, each for a blocking client (Celery, Huey, Dramatiq) and for a coroutine
API (the gRPC references, saq, arq, taskiq, Ray):

* ``window``: one submitter sends until ``inflight`` are outstanding, then collects
  the oldest result, then sends the next (a result that finished early waits behind
  an older one). A generator (``window_loop``) yields what to do (``Submit`` a
  request, ``Collect`` a result, which comes back ``Failed`` when the wait raised)
  and does its own timing and counting; ``run_blocking`` and ``run_async`` carry
  the steps out.
* ``waiters``: ``inflight`` concurrent waiters, each sending one request, waiting
  for its own result, then sending the next (what the mesh's ``bench tasks`` has
  always measured): ``waiters_async`` (coroutines) and ``waiters_blocking`` (one
  thread per waiter: what a blocking client needs to keep N waiting at once).

Both count alike (``_Tally``) and return the same keys, with ``shape`` naming the
shape. Standard library and ``bench.stats`` only: the AutoGen client and the peers
in their own virtual environments (``peer_queues.py``) import this module.

A request's send returns a handle that resolves to the id the far side echoed
back; submit→result runs from the send call to the handle resolving. For a
coroutine API, ``send(i)`` is awaited for the handle and the handle awaited for
the id; for a blocking one, ``get(handle, timeout)`` returns the id.
"""

from __future__ import annotations

import asyncio
import collections
import threading
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
SHAPES = ("window", "waiters")


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
    return _throughput_fields("window", n, inflight, sent < n, wall, total, submit, failed, errors, samples)


def _throughput_fields(shape: str, n: int, inflight: int, truncated: bool, wall: float, total: list[float],
                       submit: list[float], failed: int, errors: int, samples: list[str]) -> dict[str, Any]:
    done = len(total)
    return {"shape": shape, "tasks_requested": n, "tasks_finished": done, "failed": failed, "errors": errors,
            "error_samples": samples, "truncated_by_budget": truncated, "inflight": inflight,
            "wall_seconds": round(wall, 3), "tasks_per_second": round(done / wall, 1) if wall > 0 else 0.0,
            "latency_under_load": summary_ms(total), "submit_call_under_load": summary_ms(submit)}


class _Tally:
    """The counts of a ``waiters`` run, shared by its waiters (threads or coroutines): the next request to send,
    and each one's outcome."""

    def __init__(self, n: int, inflight: int, budget_s: float, stop: Callable[[], bool] | None) -> None:
        self.n, self.inflight, self.stop = n, inflight, stop
        self.lock = threading.Lock()
        self.sent = self.failed = self.errors = 0
        self.total: list[float] = []
        self.submit: list[float] = []
        self.samples: list[str] = []
        self.first = time.perf_counter()
        self.deadline = self.first + budget_s
        self.last_done = self.first

    def take(self) -> int | None:
        """The next request to send, or None once ``n`` are sent, the budget is spent or the run is stopped."""
        with self.lock:
            if self.sent >= self.n or time.perf_counter() >= self.deadline or _stopped(self.stop):
                return None
            self.sent += 1
            return self.sent - 1

    def record(self, i: int, t0: float, t_sent: float, result: Any) -> None:
        now = time.perf_counter()
        with self.lock:
            if isinstance(result, Failed):  # a lost or failed request is counted and shown, the run goes on
                self.errors += 1
                if len(self.samples) < 5:
                    self.samples.append(f"{type(result.error).__name__}: {result.error}")
                return
            self.last_done = now
            self.total.append(now - t0)
            self.submit.append(t_sent - t0)
            self.failed += result != i

    def result(self) -> dict[str, Any]:
        return _throughput_fields("waiters", self.n, self.inflight, self.sent < self.n, self.last_done - self.first,
                                  self.total, self.submit, self.failed, self.errors, self.samples)


def waiters_blocking(send: Callable[[int], Any], get: Callable[[Any, float], Any], n: int, inflight: int,
                     budget_s: float, timeout: float, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Up to ``n`` requests from ``inflight`` threads, each sending one and waiting for its result in turn."""
    tally = _Tally(n, inflight, budget_s, stop)

    def waiter() -> None:
        while (i := tally.take()) is not None:
            t0 = time.perf_counter()
            try:
                handle = send(i)
                t_sent = time.perf_counter()
                result = get(handle, timeout)
            except Exception as exc:
                t_sent, result = time.perf_counter(), Failed(exc)
            tally.record(i, t0, t_sent, result)

    threads = [threading.Thread(target=waiter, name=f"waiter-{k}", daemon=True) for k in range(min(inflight, n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally.result()


async def waiters_async(send: Send, n: int, inflight: int, budget_s: float, timeout: float,
                        stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Up to ``n`` requests from ``inflight`` coroutines, each sending one and awaiting its result in turn."""
    tally = _Tally(n, inflight, budget_s, stop)

    async def waiter() -> None:
        while (i := tally.take()) is not None:
            t0 = time.perf_counter()
            try:
                handle = await send(i)
                t_sent = time.perf_counter()
                async with asyncio.timeout(timeout):
                    result = await handle
            except Exception as exc:
                t_sent, result = time.perf_counter(), Failed(exc)
            tally.record(i, t0, t_sent, result)

    await asyncio.gather(*(waiter() for _ in range(min(inflight, n))))
    return tally.result()


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


def _by_shape(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``throughput`` (the window runs, or the only shape's), ``shapes`` (every shape's runs) and the best rate."""
    primary = runs.get("window") or next(iter(runs.values()), [])
    every = [r for rs in runs.values() for r in rs]
    return {"throughput": primary, "shapes": runs,
            "best_tasks_per_second": max((r["tasks_per_second"] for r in primary), default=0.0),
            "best_tasks_per_second_any_shape": max((r["tasks_per_second"] for r in every), default=0.0)}


def _log_run(log: Callable[[str], Any], name: str, thr: dict[str, Any]) -> None:
    log(f"{name}: {thr['tasks_per_second']} requests/s ({thr['shape']}, {thr['inflight']} in flight), under load p50 "
        f"{thr['latency_under_load'].get('p50_ms')} ms, p99 {thr['latency_under_load'].get('p99_ms')} ms, "
        f"CPU {thr['cpu_ms_per_task']} ms/request"
        + (f", {thr['errors']} ERRORS ({thr['error_samples'][0][:80]})" if thr.get("errors") else ""))


async def measure(name: str, send: Send, cpu: Cpu, *, latency_n: int, n: int, windows: tuple[int, ...],
                  budget_s: float, timeout: float, warmup: int, log: Callable[[str], Any],
                  check: Callable[[], Any] = lambda: None,
                  stop: Callable[[], bool] | None = None, shapes: tuple[str, ...] = ("window",)) -> dict[str, Any]:
    """Warm up, then idle latency, then one throughput run per level and shape; CPU of every process per phase."""
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
    runs: dict[str, list[dict[str, Any]]] = {shape: [] for shape in shapes}
    for inflight in windows:
        for shape in shapes:
            if _stopped(stop):
                break
            log(f"{name}: throughput, {n} requests, {shape}, {inflight} in flight ...")
            before, wall = dict(cpu()), time.perf_counter()
            if shape == "window":
                thr = await window(send, n, inflight, budget_s, timeout, stop)
            else:
                thr = await waiters_async(send, n, inflight, budget_s, timeout, stop)
            thr.update(cpu_fields(before, cpu(), time.perf_counter() - wall, thr["tasks_finished"]))
            runs[shape].append(thr)
            check()
            _log_run(log, name, thr)
    out.update(_by_shape(runs))
    return out


def measure_blocking(name: str, send: Callable[[int], Any], get: Callable[[Any, float], Any], cpu: Cpu, *,
                     latency_n: int, n: int, windows: tuple[int, ...], budget_s: float, timeout: float, warmup: int,
                     log: Callable[[str], Any], check: Callable[[], Any] = lambda: None,
                     stop: Callable[[], bool] | None = None, shapes: tuple[str, ...] = ("window",)) -> dict[str, Any]:
    """``measure`` for a blocking client: ``send(i)`` returns a handle, ``get(handle, timeout)`` its result; the
    ``waiters`` shape runs one thread per waiter."""
    for i in range(warmup):
        get(send(i), timeout)
    out: dict[str, Any] = {}
    log(f"{name}: idle latency, {latency_n} sequential round trips ...")
    before, wall = dict(cpu()), time.perf_counter()
    lat = run_blocking(idle_loop(latency_n, stop), send, get, timeout)
    lat.update(cpu_fields(before, cpu(), time.perf_counter() - wall, lat["round_trips"]))
    out["idle_latency"] = lat
    check()
    log(f"{name}: idle p50 {lat['round_trip'].get('p50_ms')} ms, p99 {lat['round_trip'].get('p99_ms')} ms")
    runs: dict[str, list[dict[str, Any]]] = {shape: [] for shape in shapes}
    for inflight in windows:
        for shape in shapes:
            if _stopped(stop):
                break
            log(f"{name}: throughput, {n} requests, {shape}, {inflight} in flight ...")
            before, wall = dict(cpu()), time.perf_counter()
            if shape == "window":
                thr = run_blocking(window_loop(n, inflight, budget_s, stop), send, get, timeout)
            else:
                thr = waiters_blocking(send, get, n, inflight, budget_s, timeout, stop)
            thr.update(cpu_fields(before, cpu(), time.perf_counter() - wall, thr["tasks_finished"]))
            runs[shape].append(thr)
            check()
            _log_run(log, name, thr)
    out.update(_by_shape(runs))
    return out
