"""Task queues that run in virtual environments of their own: Dramatiq, saq, arq, taskiq(-redis) and Ray.

Runs with the Python of ``bench/peers/.venv-<peer>`` (``peers.ensure_venv`` makes it),
never the project's: these packages pin redis-py versions of their own (arq < 6,
saq and taskiq-redis newer), and Ray is large.

    python bench/peer_queues.py worker PEER [--threads N] [--poll-ms T]    # one worker process
    python bench/peer_queues.py client PEER --pids name=pid,... [...]      # the submitter: measures, prints JSON

Every peer runs a no-op task (returns its argument) on the bench's private
redis-server (``BENCH_REDIS_URL``), 2 worker processes started by the harness and
this script's client as the 1 submitter, except Ray: ``ray.init(num_cpus=2)`` in the
client starts Ray's own worker processes (its scheduler, not Redis, carries the
tasks). The client runs the loops of ``bench/window.py`` in both shapes (a window
collecting the oldest first, and N concurrent waiters), reads the CPU of its own
process, its children (Ray's processes) and the ``--pids`` (workers, redis-server)
per phase, and prints its figures as one JSON object on stdout; progress goes to
stderr. Each worker prints ``READY`` once it takes work.

Configurations (each peer's fastest we found; the harness passes them, ``peers.py`` says what was swept):

* ``dramatiq``: ``RedisBroker`` + ``Results(RedisBackend)``; ``Worker(worker_threads=N,
  worker_timeout=T)``: T is the most a consumer sleeps between fetches when its queue is empty
  (exponential back-off from 5 ms; 1,000 ms by default). The result get blocks on the result
  key (BRPOPLPUSH): a blocking client, so N waiters are N threads.
* ``saq``: ``Queue.from_url`` (Redis), ``Worker(concurrency=N)``; the worker blocks on the
  queue (BLMOVE), the client waits with ``job.refresh(until_complete=...)`` (pub/sub).
* ``arq``: ``Worker(max_jobs=N, poll_delay=T)``: the worker polls the queue every T;
  ``job.result(poll_delay=T)`` polls the result.
* ``taskiq``: ``ListQueueBroker`` (BRPOP) + ``RedisAsyncResultBackend``; the worker is
  ``taskiq worker`` with 1 process and ``--max-async-tasks N``; ``wait_result(check_interval=T)``
  polls the result.
* ``ray``: ``@ray.remote`` function, ``await ref`` per result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench import window  # noqa: E402

READY = "READY"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")  # never a default-port server
QUEUE = "bench"
BLOCKING = ("dramatiq",)  # the peers whose client API blocks; the others are coroutine APIs
RECHECK_S = 0.25  # saq: how long a waiter trusts the pub/sub notice before it reads the job again


def noop(x: Any) -> Any:
    return x


def _ready() -> None:
    print(READY, flush=True)


def _until_signal_blocking() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


# -- Dramatiq ------------------------------------------------------------------------------------------
def _dramatiq_actor(connections: int | None = None) -> Any:
    """The broker, its Results middleware and the noop actor; ``connections``: the client's pool size (each waiter
    thread holds a connection while its get blocks; redis-py's default pool stops at 100)."""
    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends.redis import RedisBackend

    def client() -> Any:
        return redis.Redis(connection_pool=redis.ConnectionPool.from_url(URL, max_connections=connections))

    broker = RedisBroker(client=client()) if connections else RedisBroker(url=URL)
    broker.add_middleware(Results(backend=RedisBackend(client=client()) if connections else RedisBackend(url=URL)))
    dramatiq.set_broker(broker)
    return dramatiq.actor(noop, actor_name="noop", queue_name=QUEUE, store_results=True, max_retries=0)


def dramatiq_worker(threads: int, poll_ms: int) -> None:
    import logging

    from dramatiq import Worker

    logging.basicConfig(level=logging.WARNING)
    actor = _dramatiq_actor()
    worker = Worker(actor.broker, worker_threads=threads, worker_timeout=poll_ms)
    worker.start()
    _ready()
    _until_signal_blocking()
    worker.stop()


def dramatiq_client(args: argparse.Namespace) -> tuple[Callable[[int], Any], Callable[[Any, float], Any], Any]:
    actor = _dramatiq_actor(max(int(x) for x in args.windows.split(",")) + 16)

    def get(message: Any, timeout: float) -> Any:
        return message.get_result(block=True, timeout=int(timeout * 1000))

    return actor.send, get, actor.broker.close


# -- saq -----------------------------------------------------------------------------------------------
async def _saq_noop(ctx: Any, *, x: Any) -> Any:
    return x


async def saq_worker(threads: int, poll_ms: int) -> None:
    from saq import Queue, Worker

    queue = Queue.from_url(URL, name=QUEUE)
    await queue.connect()
    worker = Worker(queue, functions=[("noop", _saq_noop)], concurrency=threads)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    task = asyncio.create_task(worker.start())
    _ready()
    await stopping.wait()
    try:
        async with asyncio.timeout(2):  # saq's stop can wait on its own timers: the harness would SIGKILL after 5 s
            await worker.stop()
    except TimeoutError:
        pass
    task.cancel()


async def saq_client(args: argparse.Namespace) -> tuple[window.Send, Any]:
    from saq import Queue

    queue = Queue.from_url(URL, name=QUEUE)
    await queue.connect()

    async def result(job: Any) -> Any:
        # refresh() reads the job, then subscribes to its channel: a job finishing in between is never announced
        # (seen at 64 waiters), so wait in short slices and read the job again after each.
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                await job.refresh(until_complete=RECHECK_S)
                return job.result
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    async def send(i: int) -> Any:
        job = await queue.enqueue("noop", x=i, timeout=int(args.timeout))
        return result(job)

    return send, queue.disconnect


# -- arq -----------------------------------------------------------------------------------------------
async def _arq_noop(ctx: Any, x: Any) -> Any:
    return x


def arq_worker(threads: int, poll_ms: int) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    worker = Worker(functions=[_arq_noop_function()], redis_settings=RedisSettings.from_dsn(URL), max_jobs=threads,
                    poll_delay=poll_ms / 1000.0, queue_name=QUEUE, keep_result=3600, max_tries=1,
                    handle_signals=True, log_results=False)
    _ready()
    worker.run()


def _arq_noop_function() -> Any:
    from arq.worker import func

    return func(_arq_noop, name="noop")


async def arq_client(args: argparse.Namespace) -> tuple[window.Send, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(URL), default_queue_name=QUEUE)
    poll = args.poll_ms / 1000.0

    async def send(i: int) -> Any:
        job = await pool.enqueue_job("noop", i)
        return job.result(timeout=args.timeout, poll_delay=poll)

    return send, pool.aclose


# -- taskiq --------------------------------------------------------------------------------------------
_TASKIQ: dict[str, Any] = {}


def _taskiq() -> tuple[Any, Any]:
    """The broker (ListQueueBroker + RedisAsyncResultBackend) and the noop task, built once per process."""
    if not _TASKIQ:
        from taskiq import TaskiqEvents
        from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

        broker = ListQueueBroker(URL, queue_name=QUEUE).with_result_backend(
            RedisAsyncResultBackend(URL, result_ex_time=3600))

        async def on_start(_: Any) -> None:
            _ready()

        broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, on_start)
        _TASKIQ["broker"] = broker
        _TASKIQ["noop"] = broker.task(task_name="noop")(noop)
    return _TASKIQ["broker"], _TASKIQ["noop"]


def __getattr__(name: str) -> Any:  # ``taskiq worker bench.peer_queues:taskiq_broker`` looks the broker up
    if name == "taskiq_broker":
        return _taskiq()[0]
    raise AttributeError(name)


async def taskiq_client(args: argparse.Namespace) -> tuple[window.Send, Any]:
    broker, task = _taskiq()
    await broker.startup()
    interval = args.poll_ms / 1000.0

    async def result(handle: Any) -> Any:
        res = await handle.wait_result(check_interval=interval, timeout=args.timeout)
        if res.is_err:
            raise RuntimeError(f"taskiq task failed: {res.error}")
        return res.return_value

    async def send(i: int) -> Any:
        return result(await task.kiq(i))

    return send, broker.shutdown


# -- Ray -----------------------------------------------------------------------------------------------
async def ray_client(args: argparse.Namespace) -> tuple[window.Send, Any]:
    import shutil
    import tempfile

    import ray

    # Ray's session folder (logs, sockets) in a folder of ours, removed after: not one more /tmp/ray/session_* a run
    folder = tempfile.mkdtemp(prefix="ray-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning", _temp_dir=folder)
    remote = ray.remote(noop)

    async def result(ref: Any) -> Any:
        return await ref

    async def send(i: int) -> Any:
        return result(remote.remote(i))

    async def close() -> None:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    return send, close


# -- the client: measures and prints JSON --------------------------------------------------------------
def _cpu_reader(pids: dict[str, int]) -> window.Cpu:
    me = psutil.Process()
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def tree(p: psutil.Process) -> float:
        total = 0.0
        try:
            for q in [p, *p.children(recursive=True)]:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def cpu() -> dict[str, float]:
        t = me.cpu_times()
        out = {"submitter": t.user + t.system}
        children = tree(me) - out["submitter"]
        if children > 0:
            out["submitter-children"] = children  # Ray's raylet, GCS and workers
        for name, p in procs.items():
            out[name] = tree(p)
        return out

    return cpu


def _versions(peer: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for dist in {"dramatiq": ("dramatiq", "redis"), "saq": ("saq", "redis"), "arq": ("arq", "redis"),
                 "taskiq": ("taskiq", "taskiq-redis", "redis"), "ray": ("ray",)}[peer]:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def client(args: argparse.Namespace) -> dict[str, Any]:
    pids = dict(pair.split("=", 1) for pair in args.pids.split(",")) if args.pids else {}
    cpu = _cpu_reader({k: int(v) for k, v in pids.items()})
    windows = tuple(int(x) for x in args.windows.split(","))
    shapes = tuple(args.shapes.split(","))
    common = {"latency_n": args.latency_n, "n": args.n, "windows": windows, "budget_s": args.budget,
              "timeout": args.timeout, "warmup": args.warmup, "shapes": shapes,
              "log": lambda text: print(text, file=sys.stderr, flush=True)}
    started = time.monotonic()
    if args.peer in BLOCKING:
        send, get, close = dramatiq_client(args)
        try:
            out = window.measure_blocking(args.label, send, get, cpu, **common)  # type: ignore[arg-type]
        finally:
            close()
    else:
        async def run() -> dict[str, Any]:
            make = {"saq": saq_client, "arq": arq_client, "taskiq": taskiq_client, "ray": ray_client}[args.peer]
            send, close = await make(args)
            try:
                return await window.measure(args.label, send, cpu, **common)  # type: ignore[arg-type]
            finally:
                await close()

        out = asyncio.run(run())
    out["versions"] = _versions(args.peer)
    out["client_seconds"] = round(time.monotonic() - started, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="peer_queues.py")
    p.add_argument("role", choices=("worker", "client"))
    p.add_argument("peer", choices=("dramatiq", "saq", "arq", "taskiq", "ray"))
    p.add_argument("--label", help="client: the name progress lines carry (default: the peer)")
    p.add_argument("--threads", type=int, default=8, help="worker: tasks it runs at once")
    p.add_argument("--poll-ms", type=float, default=0.0, help="the peer's poll interval, where it has one")
    p.add_argument("--pids", default="", help="client: name=pid,... of the workers and redis-server, for their CPU")
    p.add_argument("--latency-n", type=int, default=300)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--windows", default="64,256,1024")
    p.add_argument("--shapes", default=",".join(window.SHAPES))
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=50)
    args = p.parse_args()
    args.label = args.label or args.peer
    if args.role == "client":
        print(json.dumps(client(args)), flush=True)
    elif args.peer == "dramatiq":
        dramatiq_worker(args.threads, int(args.poll_ms))
    elif args.peer == "saq":
        asyncio.run(saq_worker(args.threads, int(args.poll_ms)))
    elif args.peer == "arq":
        arq_worker(args.threads, int(args.poll_ms))
    else:
        raise SystemExit(f"peer_queues.py: {args.peer} has no worker of ours (taskiq: `taskiq worker`; ray: none)")


if __name__ == "__main__":
    main()
