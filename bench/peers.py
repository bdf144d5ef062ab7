"""``peers``: Python task queues on the bench's own redis-server, next to the mesh on the same server.

Celery and Huey run from the project's ``bench`` extra: 2 worker processes started
here and this process as the 1 submitter. Dramatiq, saq, arq and taskiq(-redis) pin
redis-py versions of their own, so each runs in a virtual environment of its own,
``bench/peers/.venv-<name>``, made here on first use (``python -m venv`` and pip; the
network is needed once) and reused after: its 2 workers and its submitter
(``peer_queues.py client``, which prints its figures as JSON) run with that Python.
Ray (local, ``num_cpus=2``, its own scheduler and workers, no Redis) runs when its
virtual environment is there or ``--with-ray`` asks for it to be made (a 290 MB
install, about a minute here).

Every peer is measured in the two shapes of ``bench/window.py``: a ``window`` (one
submitter sends until that many are outstanding, collects the oldest result, sends
the next) and ``waiters`` (that many concurrent waiters, each sending one task and
waiting for its result in turn; threads for a blocking client). submit→result is
from the send call to the result being in hand. Idle latency is ``latency_n``
sequential send+get round trips.
"""

from __future__ import annotations

import contextlib
import functools
import json
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

from . import window
from .cluster import BenchError

ROOT = Path(__file__).resolve().parent.parent

# Chosen by a sweep on 2 cores (2 × 2,000 tasks at 64 and 256 in flight, twice): Celery threads×4, ×8, ×16,
# solo and prefork×2, ×4 all gave 400-700 tasks/s, bound by the submitter's ~1-2 ms apply_async; threads×4 was
# the steadiest and had the lowest idle p50. Huey with 2, 4, 8 or 16 threads per consumer gave 2,000-2,500/s.
CELERY_POOL = "threads"
CELERY_CONCURRENCY = 4
HUEY_WORKERS = 8
VENVS = ROOT / "bench" / "peers"


@dataclass(frozen=True)
class VenvPeer:
    """A peer that runs in ``bench/peers/.venv-<venv>``: what to install, what proves it installed, and the
    configuration its workers and submitter run with (``peer_queues.py``)."""

    name: str  # the row's name
    peer: str  # peer_queues.py's peer
    venv: str
    packages: tuple[str, ...]
    probe: str  # imports that must work in the venv
    threads: int = 0  # tasks each worker runs at once (0: the peer has no workers of ours)
    poll_ms: float = 0.0  # the peer's poll interval, where it has one
    config: tuple[tuple[str, Any], ...] = ()
    opt_in: bool = False  # made only when asked (--with-ray); run when its venv is there


# Each in the configuration fastest for it we found. Sweep on this machine (2 workers; 2,000 tasks at 64 and 256 in
# flight, both shapes; idle p50 over 100 round trips), run while other work kept the load average at ~20 on the
# 2 cores, so only differences well beyond 2× mean anything:
# - arq: poll_delay (the worker's queue poll, and job.result's poll) 500 ms (default: idle p50 502 ms, 114-302/s),
#   5 ms (idle 11 ms, 171-327/s), 1 ms (idle 4-5 ms; with max_jobs 64 30-100/s, with max_jobs 16 185-397/s): 1 ms
#   polls every waiter's result 1,000 times a second, which at 1,024 waiters is all the submitter does, so 5 ms and
#   max_jobs 16 are kept.
# - taskiq: ListQueueBroker (BRPOP: each task to one worker, no streams to ack); wait_result's check_interval 200 ms
#   (default: idle 206 ms, 252-450/s), 5 ms (idle 10 ms, 211-457/s), 1 ms (idle 3 ms, 194-358/s): throughput the same
#   within noise, 5 ms kept for the reason arq's is; --max-async-tasks 64; 1 worker process per `taskiq worker`.
# - Dramatiq: worker_threads 8 (its default); the consumer's idle back-off cap (worker_timeout) at its default,
#   1,000 ms, and at 5 ms (the "short poll" row: it only matters when the queue runs dry, so idle round trips).
#   Its result get blocks on the result key, no polling.
# - saq: concurrency 16 (default 10); the worker blocks on the queue and results come by pub/sub, no polling to tune.
VENV_PEERS: tuple[VenvPeer, ...] = (
    VenvPeer("dramatiq", "dramatiq", "dramatiq", ("dramatiq[redis]", "psutil"),
             "import dramatiq.brokers.redis, dramatiq.results, psutil", threads=8, poll_ms=1000,
             config=(("broker", "RedisBroker"), ("results", "Results(RedisBackend), blocking get (BRPOPLPUSH)"),
                     ("worker_threads", 8), ("worker_timeout_ms", "1000 (default)"))),
    VenvPeer("dramatiq-short", "dramatiq", "dramatiq", ("dramatiq[redis]", "psutil"),
             "import dramatiq.brokers.redis, dramatiq.results, psutil", threads=8, poll_ms=5,
             config=(("broker", "RedisBroker"), ("results", "Results(RedisBackend), blocking get (BRPOPLPUSH)"),
                     ("worker_threads", 8), ("worker_timeout_ms", "5 (short poll)"))),
    VenvPeer("saq", "saq", "saq", ("saq[redis]", "typing_extensions", "psutil"), "import saq, redis, psutil",
             threads=16, config=(("queue", "Queue.from_url (Redis)"), ("concurrency", 16),
                                 ("result", "job.refresh(until_complete) (pub/sub), re-read every 250 ms"))),
    VenvPeer("arq", "arq", "arq", ("arq", "psutil"), "import arq, psutil", threads=16, poll_ms=5,
             config=(("max_jobs", 16), ("poll_delay_ms", "5 (worker and result)"))),
    VenvPeer("taskiq", "taskiq", "taskiq", ("taskiq", "taskiq-redis", "psutil"), "import taskiq, taskiq_redis, psutil",
             threads=64, poll_ms=5,
             config=(("broker", "ListQueueBroker (BRPOP)"), ("result_backend", "RedisAsyncResultBackend"),
                     ("max_async_tasks", 64), ("check_interval_ms", 5))),
    VenvPeer("ray", "ray", "ray", ("ray", "psutil"), "import ray, psutil", opt_in=True,
             config=(("ray", "local, ray.init(num_cpus=2)"), ("result", "await ObjectRef"))),
)
PEER_NAMES = ("celery", "huey", *(p.name for p in VENV_PEERS))
DEFAULT_PEERS = tuple(n for n in PEER_NAMES if n != "ray")  # ray: when its venv is there, or --with-ray


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(name: str, packages: tuple[str, ...], probe: str, log: Any, venv: Path | None = None,
                prefix: str = "peers") -> Path:
    """The Python of ``bench/peers/.venv-<name>``, made (``python -m venv``, pip install: the network) on first use
    and reused while ``probe`` imports there; a BenchError says what failed."""
    venv = venv or VENVS / f".venv-{name}"
    python = venv_python(venv)
    check = [str(python), "-c", probe]
    if python.exists() and subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
        return python
    started = time.monotonic()
    if not python.exists():
        log(f"{prefix}: {name}: making its own virtual environment {venv} (first use; pip needs the network) ...")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    log(f"{prefix}: {name}: pip install {' '.join(packages)} into {venv} ...")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0 or subprocess.run(check, capture_output=True, timeout=120).returncode != 0:
        noise = "WARNING: Location"  # the machine's pip configuration lists local indexes that may be absent
        err = "\n".join(line for line in pip.stderr.splitlines() if not line.startswith(noise))
        raise BenchError(f"could not install {name} into {venv} (remove the folder to start over):\n{err[-2000:]}")
    log(f"{prefix}: {name}: virtual environment ready in {time.monotonic() - started:.0f} s")
    return python


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
    which: tuple[str, ...] = DEFAULT_PEERS
    with_ray: bool = False  # make Ray's virtual environment when it is not there
    opt_in_if_installed: bool = True  # run Ray when its venv is there (not when the peers were named: --only-peers)
    shapes: tuple[str, ...] = window.SHAPES
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


# -- Celery and Huey: this process submits, with window.py's loops over a blocking send and get ------------
Send = Callable[[int], Any]
Get = Callable[[Any, float], Any]


def _measure(name: str, procs: PeerProcs, send: Send, get: Get, opts: PeersOptions, log: Any,
             extra_cpu: Callable[[], dict[str, float]], stop: threading.Event) -> dict[str, Any]:
    me = psutil.Process()

    def cpu() -> dict[str, float]:
        t = me.cpu_times()
        return {"bench": t.user + t.system, "workers": procs.cpu_seconds(), **extra_cpu()}

    return window.measure_blocking(f"peers: {name}", send, get, cpu, latency_n=opts.latency_n, n=opts.n,
                                   windows=opts.windows, budget_s=opts.budget_s, timeout=opts.task_timeout,
                                   warmup=opts.warmup, log=log, check=procs.check_alive, stop=stop.is_set,
                                   shapes=opts.shapes)


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
    from redis import ConnectionPool

    from . import peer_huey

    # The module-level instance was built from the environment at first import: rebuild it for this server.
    # Each waiter thread holds a connection while its get blocks; redis-py's default pool stops at 100.
    pool = ConnectionPool.from_url(redis_url, max_connections=max(opts.windows) + 16)
    peer_huey.huey = RedisHuey("bench", connection_pool=pool, notify_result=True, results=True, store_none=True)
    noop = peer_huey.huey.task(name="bench.noop")(peer_huey.noop.func)
    cmds = [[sys.executable, "-c", "from bench.peer_huey import main; main()", str(opts.huey_workers)]
            for _ in (1, 2)]
    config = {"workers": 2, "worker_type": "thread", "threads_per_consumer": opts.huey_workers,
              "storage": "RedisStorage(notify_result=True, blocking dequeue)", "serializer": "pickle"}

    def get(handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)

    peer = Peer("huey", cmds, "Huey consumer started", noop, get, config, peer_huey.huey.storage.pool.disconnect)
    return _run_peer(peer, redis_url, opts, log, extra_cpu, stop)


# -- the peers in virtual environments of their own: peer_queues.py workers and client --------------------------
QUEUES_SCRIPT = ROOT / "bench" / "peer_queues.py"


def _venv_workers(spec: VenvPeer, python: Path) -> tuple[list[list[str]], str]:
    """The two worker commands of a venv peer and the line each prints once it takes work."""
    if spec.peer == "taskiq":
        taskiq = str(python.parent / "taskiq")
        cmd = [taskiq, "worker", "bench.peer_queues:taskiq_broker", "--workers", "1", "--max-async-tasks",
               str(spec.threads), "--no-configure-logging", "--log-level", "WARNING"]
    else:
        cmd = [str(python), str(QUEUES_SCRIPT), "worker", spec.peer, "--threads", str(spec.threads),
               "--poll-ms", f"{spec.poll_ms:g}"]
    return [cmd, cmd], "READY"


def venv_available(spec: VenvPeer) -> bool:
    """Whether the peer's virtual environment is there and imports it (what an opt-in peer needs to run)."""
    python = venv_python(VENVS / f".venv-{spec.venv}")
    return python.exists() and subprocess.run([str(python), "-c", spec.probe], capture_output=True,
                                              timeout=120).returncode == 0


def run_venv_peer(spec: VenvPeer, redis_url: str, redis_pid: int | None, opts: PeersOptions, log: Any,
                  stop: threading.Event) -> dict[str, Any]:
    """Make or reuse the peer's venv, start its 2 workers (none for Ray), run its client there and read its JSON."""
    python = ensure_venv(spec.venv, spec.packages, spec.probe, log)
    procs = PeerProcs(spec.name)
    env = _peer_env(redis_url)
    try:
        if spec.threads:
            cmds, ready = _venv_workers(spec, python)
            procs.start(cmds, env)
            procs.wait_logs(ready, 60)
        pids = {f"worker{i}": p.pid for i, (p, _, _) in enumerate(procs.procs, 1)}
        if redis_pid is not None and spec.peer != "ray":
            pids["redis-server"] = redis_pid
        cmd = [str(python), str(QUEUES_SCRIPT), "client", spec.peer, "--label", f"peers: {spec.name}",
               "--poll-ms", f"{spec.poll_ms:g}", "--pids", ",".join(f"{k}={v}" for k, v in pids.items()),
               "--latency-n", str(opts.latency_n), "--n", str(opts.n), "--windows", ",".join(map(str, opts.windows)),
               "--shapes", ",".join(opts.shapes), "--budget", str(opts.budget_s), "--timeout", str(opts.task_timeout),
               "--warmup", str(opts.warmup)]
        client = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  cwd=str(ROOT), env=env, start_new_session=True)
        tail: list[str] = []

        def relay() -> None:  # the client's progress lines, as ours
            assert client.stderr is not None
            for raw in client.stderr:
                line = raw.decode(errors="replace").rstrip()
                tail.append(line)
                del tail[:-40]
                log(line if line.startswith("peers: ") else f"peers: {spec.name} client: {line}")

        relay_thread = threading.Thread(target=relay, daemon=True)
        relay_thread.start()
        try:
            assert client.stdout is not None
            while client.poll() is None and not stop.is_set():
                time.sleep(0.1)
                procs.check_alive()
            stdout = client.stdout.read() if client.poll() is not None else b""
        finally:
            if client.poll() is None:  # stopped, or a worker died: the client goes too (its group: Ray's processes)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(client.pid, signal.SIGTERM)
                try:
                    client.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(client.pid, signal.SIGKILL)
                    client.wait(timeout=5)
            relay_thread.join(timeout=5)
        if client.returncode != 0:
            raise BenchError(f"{spec.name} client exited with code {client.returncode}:\n" + "\n".join(tail[-20:]))
        try:
            out: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise BenchError(f"{spec.name} client printed no JSON result: {stdout[-500:]!r}") from exc
        out["config"] = {**dict(spec.config), "workers": 2 if spec.threads else "Ray's own",
                         "venv": str(VENVS / f".venv-{spec.venv}"), **out.pop("versions", {})}
        return out
    finally:
        procs.stop()
        procs.cleanup(opts.keep_dir)


def run(redis_url: str, opts: PeersOptions, log: Any = print,
        extra_cpu: Callable[[], dict[str, float]] = dict, stop: threading.Event | None = None,
        redis_pid: int | None = None) -> dict[str, Any]:
    """Every peer in ``opts.which`` in turn; a failing peer is reported and the next one still runs. An opt-in peer
    (Ray) without its venv is left out with a line saying how to get it, unless ``opts.with_ray``."""
    stop = stop or threading.Event()
    out: dict[str, Any] = {"options": opts.__dict__.copy()}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "celery": lambda: run_celery(redis_url, opts, log, extra_cpu, stop),
        "huey": lambda: run_huey(redis_url, opts, log, extra_cpu, stop),
    }
    for vp in VENV_PEERS:
        runners[vp.name] = functools.partial(run_venv_peer, vp, redis_url, redis_pid, opts, log, stop)
    chosen = [n for n in PEER_NAMES if n in opts.which or (n == "ray" and opts.with_ray)]
    for spec in VENV_PEERS:
        name = spec.name
        if name not in chosen and spec.opt_in and opts.opt_in_if_installed and not stop.is_set():
            if venv_available(spec):
                chosen.append(name)  # installed: it runs
            else:
                log(f"peers: {name}: left out: its virtual environment bench/peers/.venv-{spec.venv} is not there "
                    f"(--with-ray makes it: pip install {' '.join(spec.packages)}, about 290 MB)")
                out[name] = {"skipped": "no virtual environment (--with-ray makes it)"}
    for name in [n for n in PEER_NAMES if n in chosen]:
        if stop.is_set():
            break
        started = time.monotonic()
        try:
            out[name] = runners[name]()
        except (BenchError, OSError, RuntimeError, ValueError, ImportError, subprocess.SubprocessError) as exc:
            log(f"peers: {name}: FAILED: {exc}")
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.monotonic() - started, 2)
    return out
