"""``tasks``: no-op ``echo`` tasks end to end on SQLite, Redis or grpc_mesh, 1 in-process submitter, 2 worker processes.

On grpc_mesh the submitter is an in-process client node (it owns nothing and hands each task to a
worker); ``python -m bench tasks --backend grpc`` runs the gRPC references (``grpc_refs``) in the
same invocation and prints mesh ÷ reference.

Workers run with ``--log-level warning`` (no line per task), like the Huey consumers at WARNING.

The submitter's config can set the load-balancing algorithm (``algorithm``); the
workers keep the engine defaults. On Redis the server's command statistics are
reset before each throughput level and read after it: calls per finished task
show where the round trips go.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mesh_core.errors import MeshError
from mesh_core.manager import AgentMeshManager
from mesh_core.model import TaskStatus
from mesh_testing import Cluster, RedisServer

from . import window
from .cluster import CpuMeter, task_times, worker_mesh
from .stats import summary_ms


@dataclass(frozen=True)
class TasksOptions:
    latency_n: int = 500
    throughput_n: int = 20_000
    inflight: tuple[int, ...] = (256, 1024)  # one throughput run per level
    workers: int = 2
    capacity: int = 100_000
    warmup: int = 50
    task_timeout: float = 30.0
    throughput_budget_s: float = 45.0  # per level: stop submitting after this long, report what finished
    worker_concurrency: int | None = None  # None: the engine default (config ``concurrency``)
    backend: str = "sqlite"  # "sqlite" or "redis"
    algorithm: str | None = None  # the submitter's task_distribution.load_balancing_algorithm; None: default
    tls: bool = False  # grpc: every node speaks mutual TLS (a mesh CA and certificates made in the temp folder)
    # ``waiters``: N concurrent submit+wait coroutines (this bench's shape); ``window`` too (``bench/window.py``: one
    # submitter, N outstanding, the oldest collected first) where the peers are measured in both shapes (Redis)
    shapes: tuple[str, ...] = ("waiters",)
    keep_dir: bool = False


@dataclass
class Trace:
    """Wall-clock marks of the tasks of one phase, joined later with the stored timestamps."""

    marks: dict[str, tuple[float, float]] = field(default_factory=dict)  # task id -> (submit start, wait end)


async def _round_trip(mesh: AgentMeshManager, payload: Any, timeout: float,
                      trace: Trace | None = None) -> tuple[float, TaskStatus]:
    """(submit→final seconds, final status) of one echo task, by ``run_task``: submit, then wait for the outcome
    (what AutoGen's ``send_message`` and each peer's submit-and-get do)."""
    wall0 = time.time()
    t0 = time.perf_counter()
    task = await mesh.run_task("echo", payload, timeout=timeout)
    t1 = time.perf_counter()
    if trace is not None:
        trace.marks[task.task_id] = (wall0, wall0 + (t1 - t0))
    return t1 - t0, task.status


def _breakdown(cluster: Cluster, trace: Trace) -> dict[str, Any]:
    """Where the time of a round trip goes, from the timestamps the engine stores on each task.

    submit→claimed: submit call start to ``started_at`` (enqueue commit, wake-up, claim);
    claimed→finished: ``started_at`` to ``finished_at`` (handler run and result write);
    finished→seen: ``finished_at`` to the submitter's ``wait_task`` returning (result notification).
    """
    rows = task_times(cluster, list(trace.marks))
    queue, run_, notify = [], [], []
    per_node: dict[str, int] = {}
    for task_id, started, finished, node in rows:
        mark = trace.marks.get(task_id)
        if mark is None or started is None or finished is None:
            continue
        name = node or "-"  # a task the store has no node for
        per_node[name] = per_node.get(name, 0) + 1
        queue.append(started - mark[0])
        run_.append(finished - started)
        notify.append(mark[1] - finished)
    return {"submit_to_claimed": summary_ms(queue), "claimed_to_finished": summary_ms(run_),
            "finished_to_seen": summary_ms(notify), "tasks_per_worker": per_node}


class RedisStats:
    """``INFO commandstats`` of the bench's redis-server around a section: calls and µs per finished task."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=10)

    def reset(self) -> None:
        self.client.config_resetstat()

    def read(self, tasks_done: int) -> dict[str, Any]:
        stats = self.client.info("commandstats")
        per: dict[str, Any] = {}
        total_calls = total_usec = 0
        for key, v in stats.items():
            name = key.removeprefix("cmdstat_")
            if name in ("config", "info"):
                continue
            calls, usec = int(v["calls"]), int(v["usec"])
            total_calls += calls
            total_usec += usec
            per[name] = {"calls": calls, "calls_per_task": round(calls / tasks_done, 2) if tasks_done else None,
                         "usec_per_call": float(v["usec_per_call"]),
                         "usec_per_task": round(usec / tasks_done, 1) if tasks_done else None}
        per = dict(sorted(per.items(), key=lambda kv: -kv[1]["calls"]))
        return {"calls_per_task": round(total_calls / tasks_done, 2) if tasks_done else None,
                "server_usec_per_task": round(total_usec / tasks_done, 1) if tasks_done else None,
                "commands": per}

    def close(self) -> None:
        self.client.close()


async def _latency(mesh: AgentMeshManager, n: int, timeout: float, trace: Trace) -> dict[str, Any]:
    total: list[float] = []
    failed = 0
    started = time.perf_counter()
    for i in range(n):
        t, status = await _round_trip(mesh, {"i": i}, timeout, trace)
        total.append(t)
        failed += status is not TaskStatus.SUCCEEDED
    wall = time.perf_counter() - started
    return {"round_trips": n, "failed": failed, "wall_seconds": round(wall, 3),
            "round_trip": summary_ms(total)}


async def _throughput(mesh: AgentMeshManager, n: int, inflight: int, timeout: float,
                      budget_s: float, trace: Trace) -> dict[str, Any]:
    total: list[float] = []
    failed = errors = 0
    next_i = 0
    last_done = 0.0
    first_submit = time.perf_counter()
    deadline = first_submit + budget_s
    error_samples: list[str] = []

    async def runner() -> None:
        nonlocal next_i, failed, errors, last_done
        while next_i < n and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            try:
                t, status = await _round_trip(mesh, {"i": i}, timeout, trace)
            except (MeshError, TimeoutError) as exc:
                errors += 1
                if len(error_samples) < 5:
                    error_samples.append(f"{type(exc).__name__}: {exc}")
                continue
            last_done = time.perf_counter()
            total.append(t)
            failed += status is not TaskStatus.SUCCEEDED

    await asyncio.gather(*(runner() for _ in range(min(inflight, n))))
    wall = (last_done or time.perf_counter()) - first_submit
    done = len(total)
    return {"tasks_requested": n, "tasks_finished": done, "failed": failed, "errors": errors,
            "error_samples": error_samples, "truncated_by_budget": done + errors < n, "inflight": inflight,
            "wall_seconds": round(wall, 3), "tasks_per_second": round(done / wall, 1) if wall > 0 else 0.0,
            "latency_under_load": summary_ms(total), "shape": "waiters"}


async def _window(mesh: AgentMeshManager, n: int, inflight: int, timeout: float, budget_s: float,
                  trace: Trace) -> dict[str, Any]:
    """``window.window_loop`` on the mesh: submit until ``inflight`` are outstanding, collect the oldest, submit the
    next (each task's wait runs from its submit on, so a task that finished early is seen when its turn comes)."""
    async def wait(task_id: str, wall0: float, t0: float) -> Any:
        task = await mesh.wait_task(task_id, timeout)
        trace.marks[task_id] = (wall0, wall0 + (time.perf_counter() - t0))
        if task.status is not TaskStatus.SUCCEEDED:
            raise MeshError(f"task {task_id} {task.status.value}")
        return (task.result or {}).get("i") if isinstance(task.result, dict) else task.result

    async def send(i: int) -> Any:
        wall0, t0 = time.time(), time.perf_counter()
        task_id = await mesh.submit_task("echo", {"i": i})
        return asyncio.ensure_future(wait(task_id, wall0, t0))

    return await window.run_async(window.window_loop(n, inflight, budget_s), send, timeout)


def _cpu_ms(block: dict[str, Any], done: int) -> float | None:
    """CPU milliseconds of every process (submitter, workers, redis-server) per finished task of a phase."""
    used = block.get("cpu_seconds") or {}
    return round(sum(used.values()) * 1000.0 / done, 3) if done and used else None


async def run(opts: TasksOptions, log: Any = print, redis: RedisServer | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"options": opts.__dict__.copy(), "backend": opts.backend}
    tag = f"tasks[{opts.backend}{'/' + opts.algorithm if opts.algorithm else ''}{'/mtls' if opts.tls else ''}]"
    worker_config = {"concurrency": opts.worker_concurrency} if opts.worker_concurrency else None
    overrides = {"task_distribution.load_balancing_algorithm": opts.algorithm} if opts.algorithm else None
    extra_cpu = {"redis-server": redis.cpu_seconds} if redis is not None and opts.backend == "redis" else {}
    stats = RedisStats(redis.url) if redis is not None and opts.backend == "redis" else None
    # Workers log at level warning, as the Huey consumers do: a line per task would measure the log file.
    async with worker_mesh(tag, log, workers=opts.workers, prefix="w", backend=opts.backend,
                           redis_url=redis.url if redis else None, capacity=opts.capacity, keep_dir=opts.keep_dir,
                           worker_config=worker_config, worker_args=("--log-format", "text", "--log-level", "warning"),
                           client_overrides=overrides, tls=opts.tls) as (cluster, mesh, ready):
        result["cluster_ready_seconds"] = ready
        result["load_balancing_algorithm"] = mesh.config.task_distribution.load_balancing_algorithm
        for i in range(opts.warmup):
            await _round_trip(mesh, {"warmup": i}, opts.task_timeout)
        meter = CpuMeter(cluster, extra_cpu)

        log(f"{tag}: idle latency, {opts.latency_n} sequential round trips ...")
        lat: dict[str, Any] = {}
        lat_trace = Trace()
        if stats is not None:
            stats.reset()
        with meter.measure(lat):
            lat.update(await _latency(mesh, opts.latency_n, opts.task_timeout, lat_trace))
        lat["cpu_ms_per_task"] = _cpu_ms(lat, lat["round_trips"])
        if stats is not None:  # where an idle round trip's server time goes, command by command
            lat["redis_commands"] = stats.read(lat["round_trips"])
        result["idle_latency"] = lat
        cluster.check_alive()
        log(f"{tag}: idle p50 {lat['round_trip'].get('p50_ms')} ms, p99 {lat['round_trip'].get('p99_ms')} ms")

        runs = []
        for inflight in opts.inflight:
            for shape in opts.shapes:
                log(f"{tag}: throughput, {opts.throughput_n} tasks, {shape}, {inflight} in flight ...")
                thr: dict[str, Any] = {}
                trace = Trace()
                if stats is not None:
                    stats.reset()
                with meter.measure(thr):
                    if shape == "window":
                        thr.update(await _window(mesh, opts.throughput_n, inflight, opts.task_timeout,
                                                 opts.throughput_budget_s, trace))
                    else:
                        thr.update(await _throughput(mesh, opts.throughput_n, inflight, opts.task_timeout,
                                                     opts.throughput_budget_s, trace))
                thr["cpu_ms_per_task"] = _cpu_ms(thr, thr["tasks_finished"])
                if stats is not None:
                    thr["redis_commands"] = stats.read(thr["tasks_finished"])
                runs.append((thr, trace))
                cluster.check_alive()
                log(f"{tag}: {thr['tasks_per_second']} tasks/s ({shape}), under load p50 "
                    f"{thr['latency_under_load'].get('p50_ms')} ms, p99 {thr['latency_under_load'].get('p99_ms')} ms")
        # ``throughput`` keeps this bench's shape (waiters) for every reader; ``shapes`` has both when both ran
        by_shape = {shape: [thr for thr, _ in runs if thr["shape"] == shape] for shape in opts.shapes}
        result["throughput"] = by_shape.get("waiters") or next(iter(by_shape.values()))
        result["best_tasks_per_second"] = max(thr["tasks_per_second"] for thr in result["throughput"])
        if len(opts.shapes) > 1:
            result["shapes"] = by_shape
        result["task_counts"] = await mesh.task_counts()
        result["client_counters"] = dict(mesh.counters)
        result["client_sqlite_lock_waits"] = mesh.backend_info().get("lock_waits")
        lat["breakdown"] = _breakdown(cluster, lat_trace)
        for thr, trace in runs:
            thr["breakdown"] = _breakdown(cluster, trace)
    if stats is not None:
        stats.close()
    return result
