"""``peers``: Celery and Huey on the bench's own redis-server, next to the mesh on the same server.

Each peer runs 1 submitter (this process, one thread) and 2 worker processes started
here as subprocesses. The submitter keeps a bounded window of tasks in flight:
it sends until ``window`` are outstanding, then collects the oldest result with a
blocking get and sends the next (the loops of ``bench/window.py``, run with a
blocking client). submit→result is from the send call to the get returning. Idle
latency is ``latency_n`` sequential send+get round trips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from mesh_testing import clean_env

from .cluster import BenchError
from .window import idle_loop, run_blocking, window_loop

ROOT = Path(__file__).resolve().parent.parent

# Chosen by a sweep on 2 cores (2 × 2,000 tasks at 64 and 256 in flight, twice): Celery threads×4, ×8, ×16,
# solo and prefork×2, ×4 all gave 400-700 tasks/s, bound by the submitter's ~1-2 ms apply_async; threads×4 was
# the steadiest and had the lowest idle p50. Huey with 2, 4, 8 or 16 threads per consumer gave 2,000-2,500/s.
CELERY_POOL = "threads"
CELERY_CONCURRENCY = 4
HUEY_WORKERS = 8


@dataclass(frozen=True)
class PeersOptions:
    latency_n: int = 300
    n: int = 5000  # tasks per window level
    windows: tuple[int, ...] = (64, 256, 1024)  # tasks in flight; one throughput run per level
    budget_s: float = 20.0  # per level: stop sending after this long
    warmup: int = 50
    task_timeout: float = 30.0
    celery_pool: str = CELERY_POOL
    celery_concurrency: int = CELERY_CONCURRENCY
    huey_workers: int = HUEY_WORKERS
    which: tuple[str, ...] = ("celery", "huey")
    keep_dir: bool = False


@dataclass
class PeerProcs:
    """Worker subprocesses of one peer, each in its own session; stopped by pid (group) in ``stop``."""

    name: str
    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="mesh-bench-peer-"))
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes], str]] = field(default_factory=list)
    ps: list[psutil.Process] = field(default_factory=list)

    def start(self, cmds: list[list[str]], env: dict[str, str]) -> None:
        for i, cmd in enumerate(cmds, 1):
            log_path = os.path.join(self.dir, f"{self.name}{i}.log")
            log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    cwd=str(ROOT), env=env, start_new_session=True)
            self.procs.append((proc, log_file, log_path))
            with contextlib.suppress(psutil.Error):
                self.ps.append(psutil.Process(proc.pid))

    def logs(self) -> list[str]:
        out = []
        for _, _, path in self.procs:
            try:
                out.append(Path(path).read_text(errors="replace"))
            except OSError:
                out.append("")
        return out

    def wait_logs(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if all(marker in text for text in self.logs()):
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} workers not ready after {timeout:g} s; logs:\n"
                         + "\n---\n".join(t[-1500:] for t in self.logs()))

    def check_alive(self) -> None:
        for proc, _, path in self.procs:
            if proc.poll() is not None:
                tail = Path(path).read_text(errors="replace")[-1500:] if os.path.exists(path) else ""
                raise BenchError(f"{self.name} worker exited with code {proc.returncode}:\n{tail}")

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                for q in [p, *p.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = q.cpu_times()
                        total += t.user + t.system
        return total

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM each worker's process group (it is the group leader: we started it), then SIGKILL."""
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc, log_file, _ in self.procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # prefork children or a stuck consumer: the whole group goes
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            with contextlib.suppress(OSError):
                log_file.close()

    def cleanup(self, keep: bool = False) -> None:
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def _peer_env(redis_url: str) -> dict[str, str]:
    env = clean_env()
    env["BENCH_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


# -- one submitter for both peers: window.py's loops, driven by send and a blocking get ----------
Send = Callable[[int], Any]
Get = Callable[[Any, float], Any]


def _measure(name: str, procs: PeerProcs, send: Send, get: Get, opts: PeersOptions, log: Any,
             extra_cpu: Callable[[], dict[str, float]], stop: threading.Event) -> dict[str, Any]:
    me = psutil.Process()

    def cpu() -> dict[str, float]:
        t = me.cpu_times()
        return {"bench": t.user + t.system, "workers": procs.cpu_seconds(), **extra_cpu()}

    for i in range(opts.warmup):
        get(send(i), opts.task_timeout)
    out: dict[str, Any] = {}
    log(f"peers: {name}: idle latency, {opts.latency_n} sequential round trips ...")
    out["idle_latency"] = run_blocking(idle_loop(opts.latency_n, stop.is_set), send, get, opts.task_timeout)
    procs.check_alive()
    rt = out["idle_latency"]["round_trip"]
    log(f"peers: {name}: idle p50 {rt.get('p50_ms')} ms, p99 {rt.get('p99_ms')} ms")
    runs = []
    for window in opts.windows:
        log(f"peers: {name}: throughput, {opts.n} tasks with {window} in flight ...")
        before, wall = cpu(), time.perf_counter()
        thr = run_blocking(window_loop(opts.n, window, opts.budget_s, stop.is_set), send, get, opts.task_timeout)
        wall = time.perf_counter() - wall
        after = cpu()
        thr["cpu_utilisation"] = {k: round((after[k] - before[k]) / wall, 3) for k in after}
        runs.append(thr)
        procs.check_alive()
        log(f"peers: {name}: {thr['tasks_per_second']} tasks/s, under load p50 "
            f"{thr['latency_under_load'].get('p50_ms')} ms, p99 {thr['latency_under_load'].get('p99_ms')} ms")
    out["throughput"] = runs
    out["best_tasks_per_second"] = max((r["tasks_per_second"] for r in runs), default=0.0)
    return out


@dataclass
class Peer:
    """One peer set up for a run: how to start its workers, know they are ready, send, get, and let go."""

    name: str
    cmds: list[list[str]]
    ready: str  # a line every worker's log shows once it takes work
    send: Send
    get: Get
    config: dict[str, Any]
    close: Callable[[], Any]
    warm: Callable[[], Any] = lambda: None  # once the workers are ready, before anything is timed


def _run_peer(peer: Peer, redis_url: str, opts: PeersOptions, log: Any, extra_cpu: Callable[[], dict[str, float]],
              stop: threading.Event) -> dict[str, Any]:
    """Start the peer's workers, measure it, and always stop the workers and close its client."""
    procs = PeerProcs(peer.name)
    try:
        procs.start(peer.cmds, _peer_env(redis_url))
        procs.wait_logs(peer.ready, 60)
        peer.warm()
        out = _measure(peer.name, procs, peer.send, peer.get, opts, log, extra_cpu, stop)
        out["config"] = peer.config
        return out
    finally:
        procs.stop()
        procs.cleanup(opts.keep_dir)
        with contextlib.suppress(Exception):
            peer.close()


# -- Celery ------------------------------------------------------------------------------------------
def run_celery(redis_url: str, opts: PeersOptions, log: Any, extra_cpu: Callable[[], dict[str, float]],
               stop: threading.Event) -> dict[str, Any]:
    os.environ["BENCH_REDIS_URL"] = redis_url
    from . import peer_celery

    app = peer_celery.app
    app.conf.broker_url = redis_url
    app.conf.result_backend = redis_url
    cmds = [[_bin("celery"), "-A", "bench.peer_celery", "worker", "-Q", peer_celery.QUEUE,
             f"--pool={opts.celery_pool}", f"--concurrency={opts.celery_concurrency}", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench{i}@%h"]
            for i in (1, 2)]
    config = {"pool": opts.celery_pool, "concurrency": opts.celery_concurrency, "workers": 2,
              "broker": "redis", "result_backend": "redis", "prefetch_multiplier": 64, "serializer": "json"}

    def send(i: int) -> Any:
        return peer_celery.noop.apply_async((i,))

    def get(handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout, interval=0.005, propagate=True)

    def warm() -> None:
        # A fresh backend: the result consumer's pub/sub connection is made for this run's server.
        app.backend  # noqa: B018 - builds the backend now, not inside the timed loop

    peer = Peer("celery", cmds, " ready.", send, get, config, app.close, warm)
    return _run_peer(peer, redis_url, opts, log, extra_cpu, stop)


# -- Huey --------------------------------------------------------------------------------------------
def run_huey(redis_url: str, opts: PeersOptions, log: Any, extra_cpu: Callable[[], dict[str, float]],
             stop: threading.Event) -> dict[str, Any]:
    os.environ["BENCH_REDIS_URL"] = redis_url
    from huey import RedisHuey

    from . import peer_huey

    # The module-level instance was built from the environment at first import: rebuild it for this server.
    peer_huey.huey = RedisHuey("bench", url=redis_url, notify_result=True, results=True, store_none=True)
    noop = peer_huey.huey.task(name="bench.noop")(peer_huey.noop.func)
    cmds = [[sys.executable, "-c", "from bench.peer_huey import main; main()", str(opts.huey_workers)]
            for _ in (1, 2)]
    config = {"workers": 2, "worker_type": "thread", "threads_per_consumer": opts.huey_workers,
              "storage": "RedisStorage(notify_result=True, blocking dequeue)", "serializer": "pickle"}

    def get(handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)

    peer = Peer("huey", cmds, "Huey consumer started", noop, get, config, peer_huey.huey.storage.pool.disconnect)
    return _run_peer(peer, redis_url, opts, log, extra_cpu, stop)


def run(redis_url: str, opts: PeersOptions, log: Any = print,
        extra_cpu: Callable[[], dict[str, float]] = dict, stop: threading.Event | None = None) -> dict[str, Any]:
    """Every peer in ``opts.which`` in turn; a failing peer is reported and the next one still runs."""
    stop = stop or threading.Event()
    out: dict[str, Any] = {"options": opts.__dict__.copy()}
    for name, fn in (("celery", run_celery), ("huey", run_huey)):
        if name not in opts.which or stop.is_set():
            continue
        started = time.monotonic()
        try:
            out[name] = fn(redis_url, opts, log, extra_cpu, stop)
        except (BenchError, OSError, RuntimeError, ValueError, ImportError) as exc:
            log(f"peers: {name}: FAILED: {exc}")
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.monotonic() - started, 2)
    return out
